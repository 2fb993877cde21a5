from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from heatmap_blocks import (
    CONTEXT_DIM,
    DiffusersAttention,
    FakeUNet,
    LdmCrossAttention,
    grid_at,
    naive_maps,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    split_attention_forward,
)

from lib_ext.attention_sites import find_cross_attention
from lib_ext.heatmaps.capture import Capture, CaptureOptions, query_grid
from lib_ext.seam import RowRole


def cfg_rows(n_images: int) -> list[RowRole]:
    """A1111's CFG batch: the cond row of each image, then one uncond row per image."""
    return [RowRole(i, 0, False) for i in range(n_images)] + [RowRole(i, -1, True) for i in range(n_images)]


def run_layer(attn, latent=(8, 8), batch=4, keys=77, context_dim=768, dim=None, seed=1):
    torch.manual_seed(seed)
    dim = dim or attn.to_q.in_features
    hidden = torch.randn(batch, latent[0] * latent[1], dim)
    context = torch.randn(batch, keys, context_dim)
    return hidden, context


def strict(**kw) -> CaptureOptions:
    return CaptureOptions(strict=True, **kw)


@pytest.mark.parametrize(
    ("dim", "heads", "dim_head", "ctx"),
    [(320, 8, 40, 768), (640, 8, 80, 768), (1280, 8, 160, 768), (320, 5, 64, 1024), (640, 10, 64, 2048)],
    ids=["sd15-320", "sd15-640", "sd15-1280", "sd2-320", "sdxl-640"],
)
def test_captured_map_equals_naive_softmax(dim, heads, dim_head, ctx):
    torch.manual_seed(0)
    attn = LdmCrossAttention(dim, ctx, heads, dim_head)
    hidden, context = run_layer(attn, latent=(8, 8), batch=4, context_dim=ctx)
    cap = Capture(lambda: cfg_rows(2), strict(capture_negative=True, max_map_side=8))
    cap.set_latent_size(8, 8)
    cap.attach([attn])
    with torch.no_grad():
        attn(hidden, context=context)
    cap.detach()
    ref = naive_maps(attn, hidden, context).reshape(4, 77, 8, 8).float()
    maps = {m.image: m for m in cap.collect()}
    torch.testing.assert_close(maps[0].positive[0], ref[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps[1].positive[0], ref[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps[0].negative, ref[2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps[1].negative, ref[3], rtol=1e-4, atol=1e-5)
    # Summed over heads: each query's probabilities over keys add up to the number of heads.
    torch.testing.assert_close(maps[0].positive[0].sum(0), torch.full((8, 8), float(heads)), rtol=1e-4, atol=1e-4)


def test_lower_resolution_layer_is_upsampled_in_one_call():
    torch.manual_seed(0)
    attn = LdmCrossAttention(640, 768, 8, 80)
    hidden, context = run_layer(attn, latent=(4, 4), batch=2)
    cap = Capture(lambda: cfg_rows(1), strict(max_map_side=8))
    cap.set_latent_size(8, 8)  # a 4×4 layer is the factor-2 level of an 8×8 latent
    cap.attach([attn])
    with torch.no_grad():
        attn(hidden, context=context)
    ref = naive_maps(attn, hidden, context).reshape(2, 77, 4, 4).float()[:1]
    expected = F.interpolate(ref, size=(8, 8), mode="bicubic", align_corners=False).clamp_min(0)[0]
    (maps,) = cap.collect()
    assert maps.size == (8, 8)
    torch.testing.assert_close(maps.positive[0], expected, rtol=1e-4, atol=1e-5)


def test_non_square_latent_is_not_transposed():
    torch.manual_seed(0)
    attn = LdmCrossAttention(320, 768, 8, 40)
    hidden, context = run_layer(attn, latent=(6, 10), batch=2)
    cap = Capture(lambda: cfg_rows(1), strict(max_map_side=64))
    cap.set_latent_size(6, 10)
    cap.attach([attn])
    with torch.no_grad():
        attn(hidden, context=context)
    (maps,) = cap.collect()
    assert maps.positive[0].shape == (77, 6, 10)
    ref = naive_maps(attn, hidden, context)[0].reshape(77, 6, 10).float()  # queries are row-major h·w
    torch.testing.assert_close(maps.positive[0], ref, rtol=1e-4, atol=1e-5)


def test_outputs_identical_with_and_without_capture_and_after_detach():
    unet = FakeUNet("sd15")
    torch.manual_seed(3)
    x, t, ctx = torch.randn(4, 4, 16, 16), torch.zeros(4), torch.randn(4, 77, 768)
    with torch.no_grad():
        before = unet(x, t, ctx)
        cap = Capture(lambda: cfg_rows(2), strict(capture_negative=True))
        handles = cap.attach(unet.attn2_modules(), unet=unet)
        assert len(handles) == 4 * len(unet.attn2_modules()) + 1
        during = unet(x, t, ctx)
        cap.detach()
        after = unet(x, t, ctx)
    assert torch.equal(before, during)
    assert torch.equal(before, after)
    assert cap.latent_size == (16, 16)
    assert cap.map_bytes() > 0
    for m in [unet, *unet.modules()]:
        assert not m._forward_hooks and not m._forward_pre_hooks, m


def test_only_cond_rows_summed_into_their_image():
    torch.manual_seed(0)
    attn = LdmCrossAttention(320, 768, 8, 40)
    hidden, context = run_layer(attn, latent=(4, 4), batch=5)
    # A shuffled batch: uncond 1, cond 2, cond 0, uncond 0, cond 1.
    rows = [RowRole(1, -1, True), RowRole(2, 0, False), RowRole(0, 0, False)]
    rows += [RowRole(0, -1, True), RowRole(1, 0, False)]
    cap = Capture(lambda: rows, strict(max_map_side=4))
    cap.set_latent_size(4, 4)
    cap.attach([attn])
    with torch.no_grad():
        attn(hidden, context=context)
    ref = naive_maps(attn, hidden, context).reshape(5, 77, 4, 4).float()
    maps = {m.image: m for m in cap.collect()}
    assert sorted(maps) == [0, 1, 2]
    for image, row in [(0, 2), (1, 4), (2, 1)]:
        torch.testing.assert_close(maps[image].positive[0], ref[row], rtol=1e-4, atol=1e-5)
        assert maps[image].negative is None  # negative capture is off
        assert list(maps[image].positive) == [0]


def test_subprompt_rows_are_attributed():
    torch.manual_seed(0)
    attn = LdmCrossAttention(320, 768, 8, 40)
    hidden, context = run_layer(attn, latent=(4, 4), batch=5)
    rows = [RowRole(0, 0, False), RowRole(0, 1, False), RowRole(1, 0, False)]
    rows += [RowRole(0, -1, True), RowRole(1, -1, True)]
    cap = Capture(lambda: rows, strict(max_map_side=4, capture_negative=True))
    cap.set_latent_size(4, 4)
    cap.attach([attn])
    with torch.no_grad():
        attn(hidden, context=context)
        attn(hidden, context=context)  # two steps: sums
    ref = naive_maps(attn, hidden, context).reshape(5, 77, 4, 4).float()
    maps = {m.image: m for m in cap.collect()}
    assert sorted(maps[0].positive) == [0, 1] and sorted(maps[1].positive) == [0]
    torch.testing.assert_close(maps[0].positive[1], 2 * ref[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps[1].positive[0], 2 * ref[2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps[1].negative, 2 * ref[4], rtol=1e-4, atol=1e-5)
    assert maps[0].calls == {0: 2, 1: 2}


def generate(unet, cap, steps, images=1, keys=77, latent=(16, 16), ctx_dim=768, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(2 * images, 4, *latent)
    ctx = torch.randn(2 * images, keys, ctx_dim)
    t = torch.zeros(2 * images)
    with torch.no_grad():
        for step in range(steps):
            cap.set_step(step)
            x = x - 0.01 * unet(x, t, ctx)
    return x


@pytest.mark.slow
def test_map_bytes_do_not_grow_with_steps():
    unet = FakeUNet("sd15")
    measured = {}
    for steps in (20, 50):
        cap = Capture(lambda: cfg_rows(1), strict())
        cap.attach(unet.attn2_modules(), unet=unet)
        generate(unet, cap, steps, latent=(8, 8))
        cap.detach()
        measured[steps] = (cap.map_bytes(), cap.peak_map_bytes())
        (maps,) = cap.collect()
        assert maps.calls[0] == steps * 5  # 6 layers, the 8× one skipped as DAAM does
    assert measured[20] == measured[50]
    assert measured[20][0] == 77 * 8 * 8 * 4  # one fp32 [77, H, W] sum for the single image


def test_maps_stay_on_device_until_the_image_is_finished(monkeypatch):
    from lib_ext.heatmaps import capture as capture_module

    moves = []
    original = capture_module._RunningSum.to_cpu

    def counting(self):
        moves.append(self.device_sum is not None)
        original(self)

    monkeypatch.setattr(capture_module._RunningSum, "to_cpu", counting)
    unet = FakeUNet("sd15")
    cap = Capture(lambda: cfg_rows(2), strict())
    cap.attach(unet.attn2_modules(), unet=unet)
    generate(unet, cap, 6, images=2)
    assert moves == []
    cap.finish_image(0)
    assert moves == [True]
    (m1,) = (m for m in cap.collect() if m.image == 1)
    assert moves == [True, False, True]  # image 0 had nothing left on the device
    assert m1.positive[0].device.type == "cpu"


def test_step_range_limits_the_sum():
    unet = FakeUNet("sd15")
    cap = Capture(lambda: cfg_rows(1), strict(step_range=(3, 7)))
    cap.attach(unet.attn2_modules(), unet=unet)
    generate(unet, cap, 10)
    (maps,) = cap.collect()
    assert maps.calls[0] == 4 * 5


def test_long_prompt_key_length_and_growth():
    torch.manual_seed(0)
    attn = LdmCrossAttention(320, 768, 8, 40)
    cap = Capture(lambda: cfg_rows(1), strict(max_map_side=4))
    cap.set_latent_size(4, 4)
    cap.attach([attn])
    h1, c1 = run_layer(attn, latent=(4, 4), batch=2, keys=154)
    h2, c2 = run_layer(attn, latent=(4, 4), batch=2, keys=231, seed=2)
    with torch.no_grad():
        attn(h1, context=c1)
        attn(h2, context=c2)  # a prompt schedule switching to a longer prompt
    (maps,) = cap.collect()
    assert maps.positive[0].shape == (231, 4, 4)
    r1 = naive_maps(attn, h1, c1)[0].reshape(154, 4, 4).float()
    r2 = naive_maps(attn, h2, c2)[0].reshape(231, 4, 4).float()
    torch.testing.assert_close(maps.positive[0][:154], r1 + r2[:154], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps.positive[0][154:], r2[154:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["sd15", "sd2", "sdxl"])
@pytest.mark.parametrize("diffusers", [False, True], ids=["ldm", "diffusers"])
def test_models_capture_every_layer(kind, diffusers):
    unet = FakeUNet(kind, diffusers=diffusers)
    cap = Capture(lambda: cfg_rows(2), strict(capture_negative=True, group_by="layer"))
    cap.attach(find_cross_attention(unet), unet=unet)
    generate(unet, cap, 2, images=2, latent=(16, 12), ctx_dim=CONTEXT_DIM[kind])
    maps = {m.image: m for m in cap.collect()}
    assert cap.notes == [] and cap.errors == []
    expected_layers = {f"blocks.{i}.attn2" for i, b in enumerate(unet.blocks) if b.factor != 8}
    assert set(maps[0].groups) == expected_layers
    assert maps[0].positive[0].shape == (77, 16, 12)
    assert maps[0].negative.shape == (77, 16, 12)
    # The per-layer sums add up to the total (up to bicubic clamping, which is exact here: the maps are ≥ 0).
    total = sum(maps[0].group_map(g) for g in maps[0].groups)
    torch.testing.assert_close(total, maps[0].positive[0], rtol=1e-3, atol=1e-3)
    for name in expected_layers:
        factor = unet.get_submodule(name.rsplit(".", 1)[0]).factor
        assert maps[0].groups[name][0].shape[-2:] == grid_at((16, 12), factor)


def test_group_by_resolution():
    unet = FakeUNet("sd15")
    cap = Capture(lambda: cfg_rows(1), strict(group_by="resolution"))
    cap.attach(unet.attn2_modules(), unet=unet)
    generate(unet, cap, 2)
    (maps,) = cap.collect()
    assert set(maps.groups) == {"16x16", "8x8", "4x4"}


def test_token_merging_layer_is_skipped_and_noted_once():
    torch.manual_seed(0)
    attn = LdmCrossAttention(320, 768, 8, 40)
    other = LdmCrossAttention(320, 768, 8, 40)
    cap = Capture(lambda: cfg_rows(1), CaptureOptions(max_map_side=8))
    cap.set_latent_size(8, 8)
    cap.attach({"merged": attn, "plain": other})
    merged, ctx = run_layer(attn, latent=(5, 7), batch=2)  # 35 queries: ToMe merged 64 → 35
    plain, _ = run_layer(other, latent=(8, 8), batch=2)
    with torch.no_grad():
        for _ in range(3):
            attn(merged, context=ctx)
            other(plain, context=ctx)
    assert len(cap.notes) == 1 and "merged" in cap.notes[0] and "35 queries" in cap.notes[0]
    (maps,) = cap.collect()
    assert maps.calls[0] == 3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_projections_softmax_in_fp32(dtype):
    torch.manual_seed(0)
    attn = LdmCrossAttention(320, 768, 8, 40)
    hidden, context = run_layer(attn, latent=(4, 4), batch=2)
    reference = naive_maps(attn, hidden, context).reshape(2, 77, 4, 4).float()[0]
    attn = attn.to(dtype)
    seen = {}
    attn.to_q.register_forward_hook(lambda m, a, o: seen.setdefault("q", o))
    cap = Capture(lambda: cfg_rows(1), strict(max_map_side=4))
    cap.set_latent_size(4, 4)
    cap.attach([attn])
    try:
        with torch.no_grad():
            attn(hidden.to(dtype), context=context.to(dtype))
    except RuntimeError as exc:  # no half SDP kernel on this CPU build
        pytest.skip(f"{dtype} attention not available on CPU: {exc}")
    assert seen["q"].dtype == dtype
    (maps,) = cap.collect()
    assert maps.positive[0].dtype == torch.float32
    torch.testing.assert_close(maps.positive[0], reference, rtol=0.05, atol=0.05)


def test_class_level_forward_swap_after_attach_keeps_capturing(monkeypatch):
    """The WebUI replaces CrossAttention.forward for the whole class when the optimisation setting changes."""
    torch.manual_seed(0)
    attn = LdmCrossAttention(320, 768, 8, 40)
    hidden, context = run_layer(attn, latent=(4, 4), batch=2)
    cap = Capture(lambda: cfg_rows(1), strict(max_map_side=4))
    cap.set_latent_size(4, 4)
    cap.attach([attn])
    monkeypatch.setattr(LdmCrossAttention, "forward", split_attention_forward)
    with torch.no_grad():
        out = attn(hidden, context=context)
        cap.detach()
        plain = attn(hidden, context=context)
    assert torch.equal(out, plain)
    ref = naive_maps(attn, hidden, context).reshape(2, 77, 4, 4).float()[0]
    (maps,) = cap.collect()
    torch.testing.assert_close(maps.positive[0], ref, rtol=1e-4, atol=1e-5)


def test_diffusers_processor_module():
    torch.manual_seed(0)
    attn = DiffusersAttention(640, 2048, 10, 64)
    hidden, context = run_layer(attn, latent=(4, 4), batch=2, context_dim=2048)
    cap = Capture(lambda: cfg_rows(1), strict(max_map_side=4))
    cap.set_latent_size(4, 4)
    cap.attach([attn])
    with torch.no_grad():
        attn(hidden, encoder_hidden_states=context)
    ref = naive_maps(attn, hidden, context).reshape(2, 77, 4, 4).float()[0]
    (maps,) = cap.collect()
    torch.testing.assert_close(maps.positive[0], ref, rtol=1e-4, atol=1e-5)


def test_not_capturing_mismatched_rows_and_provider_errors():
    torch.manual_seed(0)
    attn = LdmCrossAttention(320, 768, 8, 40)
    hidden, context = run_layer(attn, latent=(4, 4), batch=2)
    answers = iter([None, [RowRole(0, 0, False)], "boom"])

    def provider():
        answer = next(answers)
        if answer == "boom":
            raise RuntimeError("host state lost")
        return answer

    cap = Capture(provider, CaptureOptions(max_map_side=4))
    cap.set_latent_size(4, 4)
    cap.attach([attn])
    with torch.no_grad():
        for _ in range(3):
            attn(hidden, context=context)  # the host's generation never breaks
    assert cap.collect() == []
    assert any("does not match the 1 rows" in n for n in cap.notes)
    assert cap.errors == ["attention heatmap capture failed in rows_provider: RuntimeError: host state lost"]

    strict_cap = Capture(lambda: 1 / 0, strict())
    strict_cap.attach([attn])
    with pytest.raises(ZeroDivisionError), torch.no_grad():
        attn(hidden, context=context)
    strict_cap.detach()


def test_not_a_cross_attention_module():
    with pytest.raises(TypeError, match="lacks"):
        Capture(lambda: None).attach([torch.nn.Linear(3, 3)])


def test_attach_twice_keeps_one_set_of_hooks():
    attn = LdmCrossAttention(320, 768, 8, 40)
    cap = Capture(lambda: None)
    cap.attach([attn, attn])
    cap.attach([attn])
    assert len(attn._forward_hooks) == 1 and len(attn._forward_pre_hooks) == 1
    assert len(attn.to_q._forward_hooks) == 1
    cap.remove()
    assert not attn._forward_hooks and not attn.to_q._forward_hooks and not cap.attached


def test_hires_pass_kept_apart():
    unet = FakeUNet("sd15")
    cap = Capture(lambda: cfg_rows(1), strict())
    cap.attach(unet.attn2_modules(), unet=unet)
    cap.begin_pass("first")
    generate(unet, cap, 3, latent=(8, 8))
    cap.begin_pass("hires")
    generate(unet, cap, 2, latent=(16, 16))
    first, hires = cap.take(0, "first"), cap.take(0, "hires")
    assert first.size == (8, 8) and hires.size == (16, 16)
    assert first.calls[0] == 3 * 5 and hires.calls[0] == 2 * 5
    assert cap.images() == [] and cap.map_bytes() == 0


def test_maps_from_inference_mode_are_plain_tensors():
    unet = FakeUNet("sd15")
    cap = Capture(lambda: cfg_rows(1), strict())
    cap.attach(unet.attn2_modules(), unet=unet)
    with torch.inference_mode():
        x = torch.randn(2, 4, 8, 8)
        unet(x, torch.zeros(2), torch.randn(2, 77, 768))
    (maps,) = cap.collect()
    maps.positive[0].div_(2)  # would raise for an inference tensor


def test_query_grid():
    assert query_grid(64 * 96, (64, 96)) == (64, 96, 1)
    assert query_grid(32 * 48, (64, 96)) == (32, 48, 2)
    assert query_grid(4 * 3, (25, 17)) == (4, 3, 8)  # ceil halving: 25→13→7→4, 17→9→5→3
    assert query_grid(1000, (64, 96)) is None
    assert query_grid(256, None) == (16, 16, 0)


def test_head_count_from_num_heads_or_missing():
    attn = LdmCrossAttention(320, 768, 8, 40)
    del attn.heads
    with pytest.raises(TypeError, match="heads"):
        Capture(lambda: None).attach([attn])
    attn.num_heads = 8
    hidden, context = run_layer(attn, latent=(4, 4), batch=2)
    attn.heads = 8  # the module's own forward needs it; the capture read num_heads at attach time
    cap = Capture(lambda: cfg_rows(1), strict(max_map_side=4))
    cap.set_latent_size(4, 4)
    del attn.heads
    cap.attach([("layer", attn)])
    attn.heads = 8
    with torch.no_grad():
        attn(hidden, context=context)
    ref = naive_maps(attn, hidden, context).reshape(2, 77, 4, 4).float()[0]
    torch.testing.assert_close(cap.collect()[0].positive[0], ref, rtol=1e-4, atol=1e-5)


def test_projection_changed_in_place_is_skipped_and_noted(monkeypatch):
    def scaling_in_place(self, x, context=None, mask=None):
        q = self.to_q(x)
        k = self.to_k(x if context is None else context)
        k.mul_(self.scale)  # an implementation pre-scaling keys in place
        v = self.to_v(x if context is None else context)
        b, n, _ = q.shape
        q, k, v = (t.reshape(b, -1, self.heads, t.shape[-1] // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))

    torch.manual_seed(0)
    attn = LdmCrossAttention(320, 768, 8, 40)
    hidden, context = run_layer(attn, latent=(4, 4), batch=2)
    monkeypatch.setattr(LdmCrossAttention, "forward", scaling_in_place)
    cap = Capture(lambda: cfg_rows(1), strict(max_map_side=4))
    cap.set_latent_size(4, 4)
    cap.attach([("in-place", attn)])
    with torch.no_grad():
        attn(hidden, context=context)
    assert cap.collect() == []
    assert cap.notes == ["in-place: the attention changed q/k in place; layer skipped"]


class HalfOutLinear(torch.nn.Linear):
    """A projection whose output is fp16, as on a GPU running the model in half precision."""

    def forward(self, x):
        return super().forward(x.float()).half()


def upcast_forward(self, x, context=None, mask=None):
    """The WebUI's upcast_attn path: fp16 projections, attention computed in fp32."""
    q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
    b, n, _ = q.shape
    q, k, v = (t.float().reshape(b, -1, self.heads, t.shape[-1] // self.heads).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


def test_fp16_projections_are_cast_to_fp32_before_the_softmax(monkeypatch):
    torch.manual_seed(0)
    attn = LdmCrossAttention(320, 768, 8, 40)
    for name in ("to_q", "to_k", "to_v"):
        old = getattr(attn, name)
        new = HalfOutLinear(old.in_features, old.out_features, bias=False)
        new.weight = old.weight
        setattr(attn, name, new)
    monkeypatch.setattr(LdmCrossAttention, "forward", upcast_forward)
    hidden, context = run_layer(attn, latent=(4, 4), batch=2)
    cap = Capture(lambda: cfg_rows(1), strict(max_map_side=4))
    cap.set_latent_size(4, 4)
    cap.attach([attn])
    with torch.no_grad():
        attn(hidden, context=context)
        q = attn.to_q(hidden)[:1].double().reshape(1, 16, 8, 40).transpose(1, 2)  # the fp16 values the host had
        k = attn.to_k(context)[:1].double().reshape(1, 77, 8, 40).transpose(1, 2)
    exact = torch.softmax(q @ k.transpose(-1, -2) / 40**0.5, dim=-1).sum(1)[0].T.reshape(77, 4, 4)
    (maps,) = cap.collect()
    assert maps.positive[0].dtype == torch.float32
    torch.testing.assert_close(maps.positive[0].double(), exact, rtol=1e-5, atol=1e-6)  # an fp16 softmax is ~1e-3 off


def test_layers_finer_than_the_common_size_are_area_averaged():
    """A hires latent above max_map_side: its full-resolution layers are averaged down, not sampled."""
    torch.manual_seed(0)
    attn = LdmCrossAttention(320, 768, 8, 40)
    hidden, context = run_layer(attn, latent=(16, 12), batch=2)
    cap = Capture(lambda: cfg_rows(1), strict(max_map_side=8))
    cap.set_latent_size(16, 12)
    cap.attach([attn])
    with torch.no_grad():
        attn(hidden, context=context)
    (maps,) = cap.collect()
    assert maps.size == (8, 6)
    ref = naive_maps(attn, hidden, context)[0].reshape(77, 16, 12).float()
    torch.testing.assert_close(maps.positive[0], F.avg_pool2d(ref, 2), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("group_by", [None, "layer"])
def test_excluded_layers_stay_out_of_the_word_maps_exactly(group_by):
    """`sum_exclude` (the UNet middle block, which DAAM never hooks): the sums are those of a capture that never
    hooked the layer; per-layer groups still hold it."""
    unet = FakeUNet("sdxl")
    named = [(f"L{i}", m) for i, m in enumerate(unet.attn2_modules())]  # SDXL: 2×, 4×, 4× (the "mid"), 2×
    excluded = strict(sum_exclude=frozenset({"L2"}), group_by=group_by)
    cap = Capture(lambda: cfg_rows(1), excluded)
    cap.attach(named, unet=unet)
    generate(unet, cap, 2, ctx_dim=2048)
    cap.detach()
    ref = Capture(lambda: cfg_rows(1), strict(group_by=group_by))
    ref.attach([n for n in named if n[0] != "L2"], unet=unet)
    generate(unet, ref, 2, ctx_dim=2048)
    ref.detach()
    (got,), (want,) = cap.collect(), ref.collect()
    assert got.calls[0] == want.calls[0] == 2 * 3
    assert torch.equal(got.positive[0], want.positive[0])
    if group_by == "layer":
        assert set(got.groups) == {"L0", "L1", "L2", "L3"} and set(want.groups) == {"L0", "L1", "L3"}
    full = Capture(lambda: cfg_rows(1), strict())
    full.attach(named, unet=unet)
    generate(unet, full, 2, ctx_dim=2048)
    full.detach()
    (everything,) = full.collect()
    assert not torch.allclose(everything.positive[0], got.positive[0])  # the 4× middle layer does count otherwise
