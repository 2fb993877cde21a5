"""The toy world's palette must let an edit recolour an object in place (checked with the Bayes-optimal denoiser,
independent of any trained model); the first palette did not."""

from __future__ import annotations

import pytest
import torch

from bench import palette_ideal as pi


@pytest.fixture(scope="module")
def worlds() -> dict[str, pi.World]:
    return {"v1": pi.World(pi.V1_PALETTE), "shipped": pi.World(pi.SHIPPED_PALETTE)}


def test_ideal_denoiser_at_low_noise_returns_the_nearest_scene(worlds):
    w = worlds["shipped"]
    x = w.scenes[[5, 77]] + 0.01 * torch.randn(2, w.scenes.shape[1], generator=torch.Generator().manual_seed(0))
    out = w.denoise(x, torch.tensor([0.05, 0.05]), w.select())
    assert torch.allclose(out, w.scenes[[5, 77]], atol=1e-4)
    # restricted to the red scenes, any input maps to red scenes only
    only_red = w.denoise(x, torch.tensor([0.05, 0.05]), w.select(color="red"))
    assert all(m[3] == "red" for m in w.nearest(only_red))


def _edit(world: pi.World, warmup: float) -> tuple[float, float]:
    return pi.edit_scores(world, world.nearest(pi.sample(world, None, None, 0.0)), warmup, 1.0)


def test_shipped_palette_lets_a_late_edit_recolour_in_place(worlds):
    success, same = _edit(worlds["shipped"], 0.5)
    assert success >= 0.9 and same >= 0.9


def test_first_palette_moved_the_object_whatever_the_warmup(worlds):
    success, same = _edit(worlds["v1"], 0.5)
    assert success >= 0.9 and same <= 0.3
