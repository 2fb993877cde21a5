"""Toy model: SD-shaped attention, text-encoder masking, determinism, schedule, export/load, resumable training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from lib_ext.toyworld import train as train_mod
from lib_ext.toyworld.model import CrossAttention, ToyConfig, ToyTextEncoder, ToyUNet
from lib_ext.toyworld.schedule import alphas_cumprod, sigmas
from lib_ext.toyworld.tokenizer import ToyTokenizer
from lib_ext.toyworld.weights import DEFAULT_WEIGHTS, load_toyworld, read_metadata

TOK = ToyTokenizer()


def small_config() -> ToyConfig:
    return ToyConfig(
        vocab_size=TOK.vocab_size, bos_id=TOK.bos_id, eos_id=TOK.eos_id, text_dim=32, channels=(16, 32, 32)
    )


def make_models(seed: int = 0, cfg: ToyConfig | None = None) -> tuple[ToyTextEncoder, ToyUNet]:
    torch.manual_seed(seed)
    cfg = cfg or small_config()
    return ToyTextEncoder(cfg).eval(), ToyUNet(cfg).eval()


def ids_for(*prompts: str) -> torch.Tensor:
    return torch.tensor([TOK(p) for p in prompts])


def test_attn2_modules_look_like_sd_and_cover_three_resolutions():
    te, unet = make_models()
    found = unet.cross_attention_modules()
    assert len(found) == 10  # 3 down levels, middle, 6 up blocks
    for name, m in found:
        assert name.endswith("transformer_blocks.0.attn2")
        assert isinstance(m.heads, int) and m.heads >= 1
        for proj in (m.to_q, m.to_k, m.to_v):
            assert isinstance(proj, nn.Linear) and proj.bias is None
        assert isinstance(m.to_out, nn.ModuleList)
        assert isinstance(m.to_out[0], nn.Linear) and isinstance(m.to_out[1], nn.Dropout)
        assert m.to_k.in_features == te.cfg.text_dim
    # Record query lengths through forward hooks on attn2 (how a DAAM hook sees them).
    seen: dict[str, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, kw, out, n=n: seen.__setitem__(n, a[0].shape[1]), with_kwargs=True)
        for n, m in found
    ]
    with torch.no_grad():
        ctx = te(ids_for("a red circle"))
        unet(torch.zeros(1, 3, 32, 32), torch.tensor([10]), ctx)
    for h in hooks:
        h.remove()
    assert sorted(set(seen.values())) == [64, 256, 1024]
    assert sum(v == 1024 for v in seen.values()) == 3 and sum(v == 256 for v in seen.values()) == 3
    # Self-attention exists where configured (16×16 and 8×8).
    blocks = [m for n, m in unet.named_modules() if n.endswith("transformer_blocks.0")]
    assert any(b.attn1 is not None for b in blocks) and any(b.attn1 is None for b in blocks)


def test_external_softmax_matches_module_probabilities():
    torch.manual_seed(1)
    attn = CrossAttention(32, 24, heads=4, dim_head=8).eval()
    x, ctx = torch.randn(2, 50, 32), torch.randn(2, 77, 24)
    attn.store_probs = True
    out = attn(x, context=ctx)
    q, k = attn.to_q(x), attn.to_k(ctx)
    h = attn.heads
    q = q.view(2, 50, h, -1).permute(0, 2, 1, 3)
    k = k.view(2, 77, h, -1).permute(0, 2, 1, 3)
    probs = (q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)).softmax(-1)
    torch.testing.assert_close(probs, attn.last_probs, rtol=1e-5, atol=1e-6)
    v = attn.to_v(ctx).view(2, 77, h, -1).permute(0, 2, 1, 3)
    manual = attn.to_out[0]((probs @ v).permute(0, 2, 1, 3).reshape(2, 50, -1))
    torch.testing.assert_close(out, manual, rtol=1e-5, atol=1e-5)
    attn.store_probs = False
    attn(x, context=ctx)
    assert attn.last_probs is None


def test_text_encoder_word_tokens_keep_identity_and_specials_are_caption_free():
    te, _ = make_models()
    with torch.no_grad():
        a = te(ids_for("a red circle", "a blue square and a green triangle", ""))
    assert a.shape == (3, 77, te.cfg.text_dim)
    # Start token and padding do not see the caption: identical across prompts.
    torch.testing.assert_close(a[0, 0], a[1, 0])
    torch.testing.assert_close(a[0, 40:], a[1, 40:])
    torch.testing.assert_close(a[0, 40:], a[2, 40:])
    # Words do see each other (non-causal): "red" changes when a later word changes.
    with torch.no_grad():
        b = te(ids_for("a red square"))
    assert not torch.allclose(a[0, 2], b[0, 2])
    allow = te.attention_allow(ids_for("a red circle"))[0]
    assert allow[2, :5].all() and not allow[2, 5:].any()  # a word sees start, words, first end token
    assert allow[0].sum() == 1 and allow[4].sum() == 1 and allow[30].sum() == 1


def test_unet_forward_shapes_context_chunks_and_determinism():
    te, unet = make_models(seed=3)
    te2, unet2 = make_models(seed=3)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([999.0, 0.5])
    with torch.no_grad():
        ctx = te(ids_for("a red circle", "yellow"))
        eps = unet(x, t, ctx)
        assert eps.shape == x.shape and torch.isfinite(eps).all()
        torch.testing.assert_close(unet(x, t, ctx), eps, rtol=0, atol=0)
        torch.testing.assert_close(unet2(x, t, te2(ids_for("a red circle", "yellow"))), eps, rtol=0, atol=0)
        long_ctx = torch.cat([ctx, ctx], dim=1)  # 2×77 tokens, as A1111 concatenates chunks
        assert unet(x, t.long(), long_ctx).shape == x.shape
        assert unet(x[:1], torch.tensor(5), ctx[:1]).shape == (1, 3, 32, 32)


def test_schedule():
    ac = alphas_cumprod()
    assert ac.shape == (1000,) and ac.dtype == torch.float32
    assert (ac[1:] < ac[:-1]).all()
    torch.testing.assert_close(ac[0], torch.tensor(1 - 0.00085), rtol=0, atol=1e-6)
    s = sigmas()
    torch.testing.assert_close(s, ((1 - ac) / ac).sqrt(), rtol=1e-4, atol=1e-6)
    # SD v1's well-known k-diffusion range: sigma_min 0.0292, sigma_max 14.6146.
    assert abs(s[0].item() - 0.0292) < 1e-4 and abs(s[-1].item() - 14.6146) < 1e-3


def test_make_batch_supervises_colour_and_shape_words():
    rng = np.random.default_rng(0)
    batch = train_mod.make_batch(rng, 64, TOK)
    assert batch.images.shape == (64, 3, 32, 32) and batch.ids.shape == (64, 77)
    assert batch.images.min() >= -1 and batch.images.max() <= 1
    n_empty = 0
    for b in range(64):
        ids = batch.ids[b].tolist()
        words = TOK.decode(ids)
        if ids[1] == TOK.eos_id:
            n_empty += 1
        for j in range(77):
            is_concept = words[j] in ("red", "green", "blue", "yellow", "circle", "square", "triangle")
            assert bool(batch.supervised[b, j]) == is_concept
            if is_concept:
                m = batch.masks[b, j] > 0
                assert m.sum() >= 35
                # The mask covers pixels of the named colour (for colour words).
                if words[j] in ("red", "blue"):
                    px = batch.images[b][:, m]
                    assert (px.std(dim=1) < 1e-6).all()
    assert 0 < n_empty < 20


def test_attention_loss_is_lower_for_matching_maps():
    rng = np.random.default_rng(1)
    batch = train_mod.make_batch(rng, 4, TOK)

    class FakeUNet:
        def __init__(self, probs):
            self.m = CrossAttention(8, 8, 2, 4)
            self.m.last_probs = probs

        def cross_attention_modules(self):
            return [("x.attn2", self.m)]

    uniform = torch.full((4, 2, 1024, 77), 1 / 77)
    matched = batch.masks.flatten(2).transpose(1, 2)[:, None].expand(4, 2, 1024, 77) + 1e-6
    loss_u = train_mod.attention_loss(FakeUNet(uniform), batch)
    loss_m = train_mod.attention_loss(FakeUNet(matched), batch)
    assert loss_m < 1e-3 < loss_u


def test_export_and_load_roundtrip(tmp_path):
    cfg = small_config()
    te, unet = make_models(seed=5, cfg=cfg)
    path = tmp_path / "w.safetensors"
    train_mod.export_safetensors(path, train_mod.joint_state(te, unet), cfg, {"steps": 1})
    meta = read_metadata(path)
    assert json.loads(meta["config"])["channels"] == [16, 32, 32]
    te2, unet2, tok, cfg2 = load_toyworld(path)
    assert cfg2 == cfg and tok.vocab_size == cfg.vocab_size
    assert not te2.training and not unet2.training
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = unet(x, torch.tensor([100]), te(ids_for("blue")))
        got = unet2(x, torch.tensor([100]), te2(ids_for("blue")))
    torch.testing.assert_close(got, ref, rtol=1e-2, atol=1e-2)  # stored as fp16


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped weights yet")
def test_shipped_weights_load_and_fit_the_budget():
    assert DEFAULT_WEIGHTS.stat().st_size <= 20 * 1024 * 1024
    te, unet, tok, cfg = load_toyworld()
    meta = read_metadata()
    assert json.loads(meta["train"])["steps"] > 0
    with torch.no_grad():
        eps = unet(torch.zeros(1, 3, 32, 32), torch.tensor([500]), te(torch.tensor([tok("a red circle")])))
    assert torch.isfinite(eps).all()


@pytest.mark.slow
def test_training_is_resumable_and_deterministic(tmp_path):
    def run(name: str, *extra: str) -> dict:
        out = tmp_path / f"{name}.safetensors"
        args = ["--max-steps", "2", "--batch", "2", "--ckpt", str(tmp_path / f"{name}.pt"), "--out", str(out)]
        train_mod.main([*args, "--threads", "1", *extra])
        return out

    from safetensors.torch import load_file

    straight = load_file(str(run("a", "--max-steps", "3")))
    run("b", "--max-steps", "1")
    resumed = load_file(str(run("b", "--max-steps", "3", "--resume")))
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    assert (tmp_path / "a.csv").exists()


def test_learning_rate_warms_up_then_anneals_to_five_percent():
    lr = train_mod.learning_rate
    assert lr(1e-3, 0, warmup=100) == pytest.approx(1e-5)
    assert lr(1e-3, 99, warmup=100) == pytest.approx(1e-3)
    assert lr(1e-3, 5000, warmup=100) == pytest.approx(1e-3)  # constant without annealing
    assert lr(1e-3, 3349, 100, anneal_from=3350, max_steps=7600) == pytest.approx(1e-3)
    mid = lr(1e-3, (3350 + 7600) // 2, 100, anneal_from=3350, max_steps=7600)
    assert mid == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5), rel=1e-3)
    assert lr(1e-3, 7600, 100, anneal_from=3350, max_steps=7600) == pytest.approx(5e-5)
    steps = [lr(1e-3, s, 100, 3350, 7600) for s in range(3350, 7601, 50)]
    assert steps == sorted(steps, reverse=True)
    # a fine-tuning's fresh optimiser warms up from its own first step
    assert lr(1e-3, 14000, 200, warmup_from=14000) == pytest.approx(5e-6)
    assert lr(1e-3, 14199, 200, warmup_from=14000) == pytest.approx(1e-3)
    assert lr(1e-3, 14000, 200) == pytest.approx(1e-3)  # from step 0, long past
