"""The heatmap feature end to end in the standalone toy-world host (random weights: plumbing, not accuracy)."""

from __future__ import annotations

import json

import pytest
import torch
from heatmap_blocks import one_torch_thread  # noqa: F401 (autouse fixture)

from lib_ext.heatmaps.aggregate import word_map
from lib_ext.heatmaps.feature import HeatmapFeature, HeatmapSettings
from lib_ext.heatmaps.render import load_safetensors
from lib_ext.heatmaps.tokens import find_word
from lib_ext.seam import JobInfo
from lib_ext.toyworld.host import ToyHost


@pytest.fixture(scope="module")
def host() -> ToyHost:
    return ToyHost.random(seed=0)


def hooks_left(unet: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in unet.modules())


def test_feature_in_the_toy_host_matches_the_models_own_probabilities(host):
    sites = host.unet.cross_attention_modules()
    # Reference through another path: the toy model's own stored probabilities, cond rows of the batch
    # [img0 sub0, img0 sub1, uncond0], summed over heads and every call.
    reference: dict[tuple[int, int], torch.Tensor] = {}

    def keep(module, _args, _out):
        probs = module.last_probs.sum(1)  # (rows, n, m)
        side = int(probs.shape[1] ** 0.5)
        maps = probs.transpose(1, 2).reshape(probs.shape[0], -1, side, side).float()
        maps = torch.nn.functional.interpolate(maps, size=(32, 32), mode="bicubic", align_corners=False)
        for row, key in enumerate([(0, 0), (0, 1)]):
            reference[key] = reference.get(key, 0) + maps[row].clamp_min(0)

    from lib_ext.attention_sites import find_cross_attention

    middle = {id(site.module) for site in find_cross_attention(host.unet) if site.block == "mid"}
    assert middle  # left out of the word maps, as DAAM hooks the down and up blocks only
    handles = []
    for _name, module in sites:
        module.store_probs = True
        if id(module) not in middle:
            handles.append(module.register_forward_hook(keep))
    feature = HeatmapFeature(HeatmapSettings(words=("red", "square", "giraffe", "a")))
    try:
        processed = host.txt2img(
            "a red circle AND a blue square", negative_prompt="green", seed=1, steps=2, batch_size=1,
            sampler_name="Euler", features=[feature],
        )  # fmt: skip
    finally:
        for module_handle in handles:
            module_handle.remove()
        for _name, module in sites:
            module.store_probs = False
    assert hooks_left(host.unet) == 0
    results = feature.take_results()
    assert [r.image for r in results] == [0] and results[0].pass_name == "first"
    first = results[0]
    by_word = {w.word: w for w in first.words}
    assert by_word["giraffe"].heat is None and "'giraffe' is not in the prompt" in by_word["giraffe"].message
    red = by_word["red"]
    assert red.heat.shape == (32, 32) and float(red.heat.max()) == 1.0
    # "red" lives in sub-prompt 0 only: its map is from image 0's sub-prompt-0 rows.
    positions = find_word(host.tokenize(" a red circle "), "red")
    expected = word_map(reference[(0, 0)], positions, normalize=False)
    torch.testing.assert_close(red.raw, expected, rtol=1e-3, atol=1e-4)
    square = word_map(reference[(0, 1)], find_word(host.tokenize(" a blue square"), "square"), normalize=False)
    torch.testing.assert_close(by_word["square"].raw, square, rtol=1e-3, atol=1e-4)
    # "a" is in both sub-prompts: the mean of both sub-prompts' maps.
    a0 = word_map(reference[(0, 0)], find_word(host.tokenize("a red circle"), "a"), normalize=False)
    a1 = word_map(reference[(0, 1)], find_word(host.tokenize("a blue square"), "a"), normalize=False)
    torch.testing.assert_close(by_word["a"].raw, (a0 + a1) / 2, rtol=1e-3, atol=1e-4)
    kept = len(sites) - len(middle)
    assert first.maps.calls == {0: 2 * kept, 1: 2 * kept}
    grid = feature.render(first, processed.images[0])
    assert grid is not None and grid.width == 2 * 32  # 4 tiles: giraffe's shows its message
    only_missing = HeatmapFeature(HeatmapSettings(words=("giraffe",)))
    missing = only_missing.word_maps(first.maps, JobInfo(prompts=["a red circle"], negative_prompts=[""], seeds=[1]),
                                     host.tokenize)  # fmt: skip
    assert only_missing.render(missing, processed.images[0]) is None


def test_each_image_uses_its_own_prompt_and_negative_modes(host, tmp_path):
    feature = HeatmapFeature(HeatmapSettings(mode="delta"))
    host.txt2img(
        ["a red circle", "a blue square"], negative_prompt=["red", "square"], seed=3, steps=1, features=[feature]
    )
    r0, r1 = feature.take_results()
    assert [w.word for w in r0.words] == ["a", "red", "circle"]
    assert [w.word for w in r1.words] == ["a", "blue", "square"]
    assert r0.maps.negative is not None and r0.maps.negative.shape == (77, 32, 32)
    assert all(float(w.heat.min()) >= 0 for w in r0.words)
    feature.export(r1, tmp_path / "r1.safetensors", {"seed": 4})
    maps, meta = load_safetensors(tmp_path / "r1.safetensors")
    assert list(maps) == ["a", "blue", "square"] and json.loads(meta["shapes"]) == [[32, 32]] * 3
    assert meta["prompt"] == "a blue square" and meta["seed"] == "4" and meta["mode"] == "delta"

    negative = HeatmapFeature(HeatmapSettings(mode="negative"))
    host.txt2img("a red circle", negative_prompt="blue square", seed=3, steps=1, features=[negative])
    (r,) = negative.take_results()
    assert [w.word for w in r.words] == ["blue", "square"]  # default words: the negative prompt's
    assert all(w.heat is not None for w in r.words)


def test_time_focus_and_per_layer(host):
    feature = HeatmapFeature(HeatmapSettings(time_focus=(0.5, 1.0), per_layer=True, words=("circle",)))
    host.txt2img("a red circle", seed=5, steps=4, features=[feature])
    (r,) = feature.take_results()
    from lib_ext.attention_sites import find_cross_attention

    sites = find_cross_attention(host.unet)
    n_mid = sum(site.block == "mid" for site in sites)
    assert n_mid >= 1 and len(sites) == len(host.unet.cross_attention_modules())
    assert r.maps.calls[0] == 2 * (len(sites) - n_mid)  # steps 2 and 3 of 4; the middle block is left out (DAAM)
    (circle,) = r.words
    labels = {site.short_name for site in sites}
    assert set(circle.layers) == labels and {"MID", "IN01", "OUT05"} <= labels  # per-layer maps still show MID
    assert all(m.shape == (32, 32) for m in circle.layers.values())


def test_time_focus_counts_sampler_steps_with_heun(host):
    """Heun calls the model twice per step (once for the last): the second half of 4 steps is 3 model calls."""
    from lib_ext.attention_sites import find_cross_attention

    kept = sum(site.block != "mid" for site in find_cross_attention(host.unet))
    feature = HeatmapFeature(HeatmapSettings(time_focus=(0.5, 1.0), words=("circle",)))
    host.txt2img("a red circle", seed=5, steps=4, sampler_name="Heun", features=[feature])
    (r,) = feature.take_results()
    assert r.maps.calls[0] == 3 * kept


def test_settings_are_validated():
    with pytest.raises(ValueError, match="time focus"):
        HeatmapFeature(HeatmapSettings(time_focus=(0.6, 0.2)))
    with pytest.raises(ValueError, match="colormap"):
        HeatmapFeature(HeatmapSettings(colormap="rainbowish"))
    assert HeatmapSettings(time_focus=(0.0, 1 / 3)).step_range(30) == (0, 10)
    assert HeatmapSettings(time_focus=(0.9, 1.0)).step_range(5) == (4, 5)


def test_tokenizer_failure_is_a_message_not_a_crash():
    feature = HeatmapFeature()
    from lib_ext.heatmaps.capture import ImageMaps

    maps = ImageMaps(image=0, pass_name="first", size=(4, 4), positive={0: torch.rand(77, 4, 4)})

    def broken(_text):
        raise RuntimeError("no tokenize_line")

    out = feature.word_maps(maps, JobInfo(prompts=["a cat"], negative_prompts=[""], seeds=[1]), broken)
    assert [w.heat for w in out.words] == [None, None]
    assert "could not tokenize the prompt: no tokenize_line" in out.words[0].message


def test_non_finite_maps_are_a_message():
    from lib_ext.heatmaps.capture import ImageMaps

    maps = ImageMaps(image=0, pass_name="first", size=(4, 4), positive={0: torch.full((77, 4, 4), float("nan"))})
    tokens = ToyHost.random(seed=0).tokenize
    out = HeatmapFeature().word_maps(maps, JobInfo(prompts=["a red circle"], negative_prompts=[""], seeds=[1]), tokens)
    assert all(w.heat is None and "not finite" in w.message for w in out.words)


def test_unknown_attention_modules_give_a_message_and_the_image(host, monkeypatch):
    from lib_ext.attention_sites import AttentionSite
    from lib_ext.heatmaps import feature as feature_module

    odd = AttentionSite("odd.attn2", torch.nn.Linear(4, 4), 8, "down")
    monkeypatch.setattr(feature_module, "find_cross_attention", lambda unet: [odd])
    feature = HeatmapFeature()
    processed = host.txt2img("a red circle", seed=1, steps=1, features=[feature])
    assert len(processed.images) == 1 and feature.take_results() == []
    assert any("odd.attn2 (Linear) is no cross-attention module: lacks ['to_q'" in m for m in feature.messages)
    assert set(feature.messages) <= set(processed.messages)
    assert hooks_left(host.unet) == 0
