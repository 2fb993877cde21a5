"""The attention-maps bench's parts: map memory does not grow with steps, the per-step baseline does, the
SD1.5-shaped timing model has SD1.5's layer shapes, and the word truth follows the judge's objects."""

from __future__ import annotations

import numpy as np
import torch

from bench import attention_maps as A
from bench import sd15_unet
from lib_ext.toyworld.judge import DetectedObject


def test_map_bytes_are_the_same_for_20_and_50_steps_and_far_below_the_per_step_baseline(one_thread):
    out = A.map_bytes(latent=8)
    assert out["map_bytes_per_image_20_steps"] == out["map_bytes_per_image_50_steps"] > 0
    # 77 tokens × 8×8 fp32 = one running sum; the baseline keeps 15 upsampled maps per step for 50 steps
    assert out["map_bytes_per_image_20_steps"] == 77 * 8 * 8 * 4
    assert out["per_step_baseline_bytes"] == 50 * 16 * 77 * 8 * 8 * 4


def test_sd15_shaped_unet_has_sd15s_parameter_count_and_attention_sites():
    with torch.device("meta"):
        unet = sd15_unet.SD15UNet()
    n = sum(p.numel() for p in unet.parameters())
    assert 855e6 < n < 865e6  # SD1.5's UNet: 859.5M
    attn2 = [m for name, m in unet.named_modules() if name.endswith("attn2")]
    assert [m.to_q.in_features for m in attn2] == [dim for dim, _factor in A.SD15_ATTN2]
    assert all(m.to_k.in_features == 768 for m in attn2)


def _obj(color: str, shape: str, mask: np.ndarray) -> DetectedObject:
    return DetectedObject(shape=shape, color=color, mask=mask, area=int(mask.sum()))


def test_word_truth_is_the_named_objects_mask_and_none_when_it_was_not_drawn():
    red = np.zeros((8, 8), bool)
    red[1:3, 1:3] = True
    blue = np.zeros((8, 8), bool)
    blue[5:7, 5:7] = True
    truth = A._word_truth([_obj("red", "circle", red), _obj("blue", "square", blue)], "a red circle and a blue square")
    assert np.array_equal(truth["red"], red) and np.array_equal(truth["circle"], red)
    assert np.array_equal(truth["blue"], blue) and np.array_equal(truth["square"], blue)
    missing = A._word_truth([_obj("red", "circle", red)], "a red circle and a blue square")
    assert missing["blue"] is None and missing["square"] is None
    # a word naming two drawn objects: the union of their masks
    both = A._word_truth([_obj("red", "circle", red), _obj("red", "square", blue)], "a red circle and a red square")
    assert np.array_equal(both["red"], red | blue)


def test_refinement_bench_sums_the_cond_rows_self_attention_at_16x16_and_restores_the_model(one_thread):
    from bench import attention_refinement as R
    from lib_ext.toyworld.model import ToyConfig, ToyUNet

    torch.manual_seed(0)
    cfg = ToyConfig(channels=(8, 16, 16), attn_heads=(1, 2, 2), time_dim=32, groups=4)
    unet = ToyUNet(cfg).eval()
    context = torch.randn(4, 77, cfg.text_dim)
    selfs = R.SelfAttentionSum(unet, n_cond=2)
    with torch.no_grad(), selfs:
        for _ in range(2):
            unet(torch.randn(4, 3, 32, 32), torch.full((4,), 10), context)
            selfs.collect()
    s = selfs.row_normalised()
    assert s.shape == (2, 256, 256)  # cond rows only, 16×16 queries × keys
    assert torch.allclose(s.sum(-1), torch.ones(2, 256))
    assert all(not m.store_probs and m.last_probs is None for m in selfs.modules)
