import torch

from lib_ext.seam import BatchLayout, DenoiseStep, RowRole
from lib_ext.unet_calls import UNetCallTracker


def test_layout_numbers_rows_like_reconstruct_multicond_batch():
    layout = BatchLayout.from_weights([[1.0, 0.4], [1.0]])
    assert layout.conds == (((0, 1.0), (1, 0.4)), ((2, 1.0),))
    assert layout.n_cond_rows == 3 and layout.n_rows == 5
    assert layout.uncond_row(1) == 4
    assert layout.roles() == [
        RowRole(0, 0, False),
        RowRole(0, 1, False),
        RowRole(1, 0, False),
        RowRole(0, -1, True),
        RowRole(1, -1, True),
    ]


def test_default_combine_matches_host_formula():
    torch.manual_seed(0)
    layout = BatchLayout.from_weights([[1.0, 0.5], [0.7]])
    x_out = torch.randn(5, 4, 8, 8)
    step = DenoiseStep(
        x_in=torch.randn(5, 4, 8, 8),
        x_out=x_out,
        sigma=torch.tensor([2.0, 3.0]),
        layout=layout,
        cond_scale=7.0,
        step=0,
        total_steps=10,
        prediction="x0",
    )
    u = x_out[3:]
    expected0 = u[0] + (x_out[0] - u[0]) * 7.0 + (x_out[1] - u[0]) * 3.5
    expected1 = u[1] + (x_out[2] - u[1]) * 4.9
    out = step.default_combine()
    torch.testing.assert_close(out[0], expected0)
    torch.testing.assert_close(out[1], expected1)


def test_eps_round_trip_for_x0_predictions_uses_each_rows_image_sigma():
    layout = BatchLayout.from_weights([[1.0], [1.0, 1.0]])
    x_in = torch.randn(5, 3, 4, 4)
    eps = torch.randn(5, 3, 4, 4)
    sigma = torch.tensor([2.0, 5.0])
    per_row = torch.tensor([2.0, 5.0, 5.0, 2.0, 5.0]).view(-1, 1, 1, 1)
    x0 = x_in - per_row * eps
    step = DenoiseStep(x_in, x0, sigma, layout, 1.0, 0, 1, "x0")
    torch.testing.assert_close(step.to_eps(x0), eps)
    torch.testing.assert_close(step.from_eps(eps[[1, 4]], rows=[1, 4]), x0[[1, 4]])
    eps_step = DenoiseStep(x_in, eps, sigma, layout, 1.0, 0, 1, "eps")
    assert eps_step.to_eps(eps) is eps


def test_tracker_follows_sliced_calls_and_skipped_uncond():
    layout = BatchLayout.from_weights([[1.0, 1.0], [1.0]])
    tr = UNetCallTracker()
    tr.begin_step(layout, 0)
    assert tr.begin_call(2) == [RowRole(0, 0, False), RowRole(0, 1, False)]
    tr.end_call()
    assert tr.current() is None
    assert tr.begin_call(3) == [RowRole(1, 0, False), RowRole(0, -1, True), RowRole(1, -1, True)]
    assert tr.begin_call(1) is None  # more rows than the layout names: not ours to attribute
    tr.begin_step(layout, 1)
    assert tr.begin_call(3) == [RowRole(0, 0, False), RowRole(0, 1, False), RowRole(1, 0, False)]
