"""The toy world's SD1 checkpoint pieces: the constructed autoencoder is the 8×8 block map (checked by running
ldm's Encoder/Decoder maths on its tensors), the CLIP text model is causal and honours clip skip, the WebUI yaml
and the Hugging Face entry of tools/prepare_webui.py agree with the config, the toy host tokenizes as A1111's SD1
wrapper (chunks, BREAK, comma back-tracking, multi-token words) and runs A1111's Latent hires pass. Live-tier tests
compare the same tensors with the WebUI's own ldm and transformers classes."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lib_ext.toyworld.clip_bpe import ClipTokenizer
from lib_ext.toyworld.clip_conditioning import ClipConditioner
from lib_ext.toyworld.ldm_model import (
    VAE_LEVELS,
    ClipTextModel,
    LdmConfig,
    LdmUNet,
    latent_from_pixels,
    pixels_from_latent,
    vae_state_dict,
)
from lib_ext.toyworld.ldm_weights import checkpoint_state, hf_text_config, webui_yaml

CFG = LdmConfig()
REPO = Path(__file__).resolve().parents[3]


# ---- ldm's autoencoder maths (ldm/modules/diffusionmodules/model.py), run on the constructed tensors ----------------
def _norm(sd: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.group_norm(x, 32, sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)


def _conv(sd: dict, name: str, x: torch.Tensor, **kw) -> torch.Tensor:
    w = sd[f"{name}.weight"]
    return F.conv2d(x, w, sd[f"{name}.bias"], padding=kw.get("padding", w.shape[-1] // 2), stride=kw.get("stride", 1))


def _resblock(sd: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    h = _conv(sd, f"{name}.conv1", F.silu(_norm(sd, f"{name}.norm1", x)))
    h = _conv(sd, f"{name}.conv2", F.silu(_norm(sd, f"{name}.norm2", h)))
    return x + h


def _attn(sd: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    h = _norm(sd, f"{name}.norm", x)
    q, k, v = (_conv(sd, f"{name}.{p}", h) for p in "qkv")
    b, c, hh, ww = q.shape
    w = torch.softmax(q.reshape(b, c, -1).transpose(1, 2) @ k.reshape(b, c, -1) * c**-0.5, dim=-1)
    out = (v.reshape(b, c, -1) @ w.transpose(1, 2)).reshape(b, c, hh, ww)
    return x + _conv(sd, f"{name}.proj_out", out)


def _mid(sd: dict, prefix: str, h: torch.Tensor) -> torch.Tensor:
    h = _resblock(sd, f"{prefix}.mid.block_1", h)
    h = _attn(sd, f"{prefix}.mid.attn_1", h)
    return _resblock(sd, f"{prefix}.mid.block_2", h)


def ldm_encode(sd: dict, x: torch.Tensor) -> torch.Tensor:
    h = _conv(sd, "encoder.conv_in", x)
    for level in range(VAE_LEVELS - 1):
        h = _conv(sd, f"encoder.down.{level}.downsample.conv", F.pad(h, (0, 1, 0, 1)), stride=2, padding=0)
    h = _mid(sd, "encoder", h)
    h = _conv(sd, "encoder.conv_out", F.silu(_norm(sd, "encoder.norm_out", h)))
    moments = _conv(sd, "quant_conv", h)
    mean, logvar = moments.chunk(2, dim=1)
    return mean, logvar.clamp(-30.0, 20.0)


def ldm_decode(sd: dict, z: torch.Tensor) -> torch.Tensor:
    h = _conv(sd, "decoder.conv_in", _conv(sd, "post_quant_conv", z))
    h = _mid(sd, "decoder", h)
    for level in reversed(range(VAE_LEVELS)):
        h = _resblock(sd, f"decoder.up.{level}.block.0", h)
        if level:
            h = _conv(sd, f"decoder.up.{level}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return _conv(sd, "decoder.conv_out", F.silu(_norm(sd, "decoder.norm_out", h)))


def test_constructed_autoencoder_is_the_block_map() -> None:
    sd = vae_state_dict(CFG)
    g = torch.Generator().manual_seed(0)
    picture = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    pixels = pixels_from_latent(picture, 8)  # block-constant, like every toy image
    mean, logvar = ldm_encode(sd, pixels)
    assert torch.allclose(mean, latent_from_pixels(pixels), atol=1e-4)
    assert torch.all(logvar == -30.0)
    z = torch.randn(2, 4, 4, 4, generator=g)
    assert torch.allclose(ldm_decode(sd, z), pixels_from_latent(z), atol=1e-3)
    # a non-constant image: the encoder still averages each 8x8 block
    noisy = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    assert torch.allclose(ldm_encode(sd, noisy)[0], latent_from_pixels(noisy), atol=1e-4)


def test_checkpoint_names_and_yaml() -> None:
    torch.manual_seed(0)
    state = checkpoint_state(ClipTextModel(CFG), LdmUNet(CFG), CFG)
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {"model", "cond_stage_model", "first_stage_model"}
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in state
    assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight" in state
    yaml = webui_yaml(CFG)
    assert "target: ldm.modules.encoders.modules.FrozenCLIPEmbedder" in yaml
    assert "version: promptscope/toyworld-clip" in yaml
    assert "scale_factor: 1.0" in yaml
    shipped = REPO / "lib_ext" / "toyworld" / "weights" / "toyworld-sd1.yaml"
    if shipped.exists():
        assert shipped.read_text(encoding="utf8") == yaml


def test_prepare_webui_knows_the_text_config() -> None:
    spec = importlib.util.spec_from_file_location("prepare_webui_sd1", REPO / "tools" / "prepare_webui.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        entry = module.HF_MODELS["promptscope/toyworld-clip"]["text"]
    finally:
        sys.modules.pop(spec.name, None)
    want = hf_text_config(CFG)
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "hidden_act"):
        assert entry[key] == want[key], key


def test_text_model_is_causal_and_clip_skip_reads_an_earlier_layer() -> None:
    torch.manual_seed(0)
    te = ClipTextModel(CFG).eval()
    a = torch.randint(0, 49408, (1, 77))
    b = a.clone()
    b[0, 40:] = 7
    with torch.no_grad():
        za, zb = te(a), te(b)
        assert torch.allclose(za[0, :40], zb[0, :40], atol=1e-6)
        assert not torch.allclose(za[0, 40:], zb[0, 40:])
        assert not torch.allclose(te(a, clip_skip=2), za)


def test_unet_shapes_at_the_first_and_hires_sizes() -> None:
    torch.manual_seed(0)
    unet = LdmUNet(CFG).eval()
    with torch.no_grad():
        for size in (32, 48):
            x = torch.randn(2, 4, size, size)
            out = unet(x, torch.tensor([10.0, 900.0]), torch.randn(2, 154, CFG.text_dim))
            assert out.shape == x.shape


# ---- tokenization as A1111's SD1 wrapper -------------------------------------------------------------------------
class _Ids(torch.nn.Module):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return ids.float()[..., None].repeat(1, 1, 4)


def _conditioner() -> ClipConditioner:
    return ClipConditioner(_Ids(), ClipTokenizer())


def test_chunks_break_and_words() -> None:
    c = _conditioner()
    line = c.tokenize_line("a vermilion roundel BREAK a 赤 (triangle:1.3)")
    assert len(line.chunks) == 2
    assert all(len(ch.tokens) == 77 for ch in line.chunks)
    assert line.chunks[0].tokens[:7] == [49406, 320, 624, 1469, 3668, 5602, 2003]
    assert line.chunks[0].tokens[7:] == [49407] * 70
    assert line.chunks[1].multipliers[5] == pytest.approx(1.3)  # start, a, 3 pieces of 赤, triangle
    tokens = c.prompt_tokens("a vermilion roundel BREAK a 赤 (triangle:1.3)")
    assert tokens.words == ("a", "vermilion", "roundel", "a", "赤", "triangle")
    pieces = [p for p in tokens.chunks[1] if p.word_index == 4]
    assert len(pieces) == 3


def test_long_prompts_fill_chunks_and_backtrack_to_a_comma() -> None:
    c = _conditioner()
    plain = c.tokenize_line(" ".join(["red"] * 80))
    assert len(plain.chunks) == 2 and plain.token_count == 80
    assert plain.chunks[1].tokens[1:6] == [736] * 5
    # a comma 10 tokens before the chunk fills: what follows it moves to the next chunk (A1111's back-tracking)
    text = " ".join(["red"] * 64) + " , " + " ".join(["blue"] * 20)
    line = c.tokenize_line(text)
    first = line.chunks[0].tokens
    assert first[65] == c.comma_token and first[66:76] == [49407] * 10
    assert line.chunks[1].tokens[1:21] == [1746] * 20


def test_hires_pass_in_the_toy_host() -> None:
    from lib_ext.heatmaps.feature import HeatmapFeature, HeatmapSettings
    from lib_ext.toyworld.host import Hires, ToyHost

    torch.manual_seed(0)
    host = ToyHost(ClipTextModel(CFG), LdmUNet(CFG), ClipTokenizer(), latent_channels=4, pixel_scale=8)
    feature = HeatmapFeature(HeatmapSettings())
    p = host.txt2img("a red circle", seed=3, steps=2, cfg_scale=3, sampler_name="Euler a", features=[feature],
                     hires=Hires(scale=1.5, denoising_strength=0.5))  # fmt: skip
    assert p.images[0].size == (384, 384)
    assert "Hires upscale: 1.5" in p.info and "Size: 384x384" in p.info
    passes = {(r.pass_name, tuple(r.words[0].raw.shape)) for r in feature.take_results()}
    assert passes == {("first", (32, 32)), ("hires", (48, 48))}
    with pytest.raises(ValueError, match="hires"):
        ToyHost.random().txt2img("a red circle", steps=1, hires=Hires())


def test_v_denoisers_recover_x0_from_an_exact_v_model() -> None:
    from lib_ext.toyworld import sampling as S
    from lib_ext.toyworld.schedule import alphas_cumprod

    ac = alphas_cumprod()
    x0 = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    eps = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    k = S.DiscreteVDenoiser(lambda x, t: None, ac)

    def v_model(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # x_in = x_t·c_in: the DDPM-scaled sample
        a = torch.exp(torch.lerp(ac[t.floor().long()].log(), ac[t.ceil().long()].log(), t.frac()))
        a = a.reshape(-1, 1, 1, 1)
        return a.sqrt() * eps - (1 - a).sqrt() * x0

    k.model_fn = v_model
    for sigma in (0.1, 1.0, 14.0):
        s = torch.tensor([sigma])
        x = x0 + s.reshape(1, 1, 1, 1) * eps
        assert torch.allclose(k(x, s), x0, atol=2e-3), sigma
    ddim = S.TimestepsEpsDenoiser(lambda x, t: None, ac, prediction="v")
    t = torch.tensor([500])
    a = ac[500]
    ddim.model_fn = lambda x, tt: a.sqrt() * eps - (1 - a).sqrt() * x0
    assert torch.allclose(ddim(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps, atol=1e-5)


# ---- training's emphasis augmentation is the context the host builds for `(word:w)` -------------------------------
def test_training_emphasis_is_the_hosts_emphasis() -> None:
    from lib_ext.toyworld.train_ldm import context_ids, encode_context

    torch.manual_seed(0)
    te, tok = ClipTextModel(CFG).eval(), ClipTokenizer()
    words = ["a", "vermilion", "circle", "and", "a", "blue", "square"]
    word_ids = [tok.encode(w) for w in words]
    assert len(word_ids[1]) > 1  # a multi-token word carries the weight on every piece
    ids = torch.tensor([context_ids(tok, [[t for w in word_ids for t in w]])])
    mult = torch.ones(ids.shape, dtype=torch.float32)
    start = 1 + len(word_ids[0])
    mult[0, start : start + len(word_ids[1])] = 1.3
    with torch.no_grad():
        trained = encode_context(te, ids, mult)[0]
        plain = encode_context(te, ids)[0]
    host = ClipConditioner(te, tok).encode("a (vermilion:1.3) circle and a blue square")
    torch.testing.assert_close(trained, host)
    assert not torch.allclose(trained, plain)


def test_make_batch_emphasises_one_word_only_when_asked() -> None:
    import numpy as np

    from lib_ext.toyworld.train_ldm import EMPHASIS_WEIGHTS, make_batch

    tok = ClipTokenizer()
    plain = make_batch(np.random.default_rng(3), 16, tok, 32, two_chunks=False)
    assert plain.multipliers is None
    again = make_batch(np.random.default_rng(3), 16, tok, 32, two_chunks=False, emphasis_prob=0.0)
    assert torch.equal(plain.ids, again.ids)  # no extra random draws without emphasis
    batch = make_batch(np.random.default_rng(3), 16, tok, 32, two_chunks=True, emphasis_prob=1.0)
    assert batch.multipliers is not None
    rows_weighted = 0
    for row_mult in batch.multipliers:
        weighted = (row_mult != 1).nonzero().flatten()
        if weighted.numel() == 0:
            continue  # an empty caption has no word to weight
        rows_weighted += 1
        values = row_mult[weighted]
        assert bool((values == values[0]).all())  # one word, one weight (on each of its pieces)
        assert min(abs(values[0].item() - w) for w in EMPHASIS_WEIGHTS) < 1e-6
        assert bool((weighted >= 77).all())  # in the caption's chunk, not the filler's
        assert int(weighted.max() - weighted.min()) < 4  # one word's pieces are adjacent
    assert rows_weighted >= 12


def test_similar_pairs_draws_scenes_whose_objects_share_a_colour_or_shape() -> None:
    import numpy as np

    from lib_ext.toyworld.scenes import random_scene
    from lib_ext.toyworld.train_ldm import caption_words, shares_a_word

    rng = np.random.default_rng(0)
    scenes = [random_scene(rng, 2, 32) for _ in range(60)]
    shared = [s for s in scenes if shares_a_word(s)]
    assert 0 < len(shared) < len(scenes)
    for scene in shared:
        words = scene.caption.split()
        assert len(set(words)) == len(words) - 2  # "a" twice, and a colour or a shape twice

    def two_object_share(p: float) -> float:
        rng = np.random.default_rng(1)
        hits = total = 0
        for _ in range(300):
            words, _, pairs = caption_words(rng, 32, p)
            if "and" in words and words.count("and") == 1 and len(pairs) == 4:
                total += 1
                first, second = words[1:3], words[5:7]
                hits += first[0] == second[0] or first[1] == second[1]
        return hits / total

    assert two_object_share(1.0) > two_object_share(0.0) + 0.3


def test_long_prompt_steps_are_the_webuis_layout_of_a_prompt_past_token_75() -> None:
    import numpy as np

    from lib_ext.toyworld.train_ldm import make_batch
    from lib_ext.toyworld.vocab import COLORS, SHAPES, SYNONYMS

    tok = ClipTokenizer()
    conditioner = ClipConditioner(ClipTextModel(CFG), tok)
    batch = make_batch(np.random.default_rng(5), 8, tok, 32, two_chunks=True, long_prompts=1.0)
    for row, spans, sup in zip(batch.ids.tolist(), batch.spans, batch.supervised, strict=True):
        body = [t for t in row[1:76] + row[78:153] if t != tok.eos_id]
        line = conditioner.tokenize_line(tok.token_text(body))
        assert [t for chunk in line.chunks for t in chunk.tokens] == row  # the host cuts the prompt where training did
        assert tok.eos_id not in row[1:76]  # a full first chunk
        for span in spans[sup]:
            at = span.nonzero().flatten().tolist()
            assert min(at) >= 78  # the supervised words are in the second chunk, where their tokens are
            assert tok.token_text([row[i] for i in at]).strip() in {*COLORS, *SHAPES, *SYNONYMS}


def test_synonyms_sets_how_often_a_word_takes_its_synonym() -> None:
    import numpy as np

    from lib_ext.toyworld.train_ldm import _SYNONYMS_OF, caption_words

    synonyms = {s for group in _SYNONYMS_OF.values() for s in group}

    def share(p: float) -> float:
        rng = np.random.default_rng(2)
        taken = could = 0
        for _ in range(400):
            words, _, _ = caption_words(rng, 32, 0.0, p)
            taken += sum(w in synonyms for w in words)
            could += sum(w in synonyms or w in _SYNONYMS_OF for w in words)
        return taken / could

    assert share(0.0) == 0.0
    assert share(1.0) == 1.0
    assert abs(share(0.4) - 0.4) < 0.08


def test_two_chunks_sets_the_share_of_two_chunk_steps(tmp_path: Path) -> None:
    from lib_ext.toyworld.train_ldm import main, two_chunk_step

    # the default keeps the schedule every earlier cycle trained on
    assert [two_chunk_step(s, 0.125) for s in range(800)] == [s % 8 == 7 for s in range(800)]
    assert sum(two_chunk_step(s, 0.3) for s in range(1000)) == 300
    assert not any(two_chunk_step(s, 0.0) for s in range(100))
    assert all(two_chunk_step(s, 1.0) for s in range(100))
    with pytest.raises(SystemExit):
        # paths in tmp_path, so a check that stopped refusing could not overwrite the shipped weights
        main(
            [
                "--two-chunks",
                "1.5",
                "--export-only",
                "--out",
                str(tmp_path / "o.safetensors"),
                "--ckpt",
                str(tmp_path / "c.pt"),
            ]
        )


def test_gap_reaches_the_training_scenes_and_keeps_the_default_stream() -> None:
    import numpy as np

    from lib_ext.toyworld.train_ldm import caption_words
    from tests.unit.toyworld.geometry import least_gap

    for size in (32, 48):  # the default stays one pixel at the hires size too (what every earlier run drew)
        a = caption_words(np.random.default_rng(4), size, 0.7, 0.35)
        b = caption_words(np.random.default_rng(4), size, 0.7, 0.35, gap=1)
        assert a[0] == b[0] and np.array_equal(a[1], b[1])

    rng = np.random.default_rng(6)
    seen = []
    for _ in range(200):
        words, _, pairs = caption_words(rng, 32, 1.0, 0.0, gap=2)
        masks = list({id(m): m for _, m in pairs}.values())
        if len(masks) > 1:
            seen.append(least_gap(masks))
    assert seen and min(seen) >= 2


def test_init_from_fine_tunes_an_exported_checkpoint(tmp_path: Path) -> None:
    from safetensors import safe_open

    from lib_ext.toyworld.ldm_weights import export_checkpoint_file, load_ldm_toyworld
    from lib_ext.toyworld.train_ldm import main

    torch.manual_seed(11)
    te, unet = ClipTextModel(CFG), LdmUNet(CFG)
    src = tmp_path / "src.safetensors"
    export_checkpoint_file(src, te, unet, CFG, {"steps": 40, "minutes": 3.5})
    out, ckpt = tmp_path / "out.safetensors", tmp_path / "c.pt"
    # zero steps: the export is the source's weights, with its steps and minutes carried on
    main(["--init-from", str(src), "--max-steps", "40", "--out", str(out), "--ckpt", str(ckpt), "--threads", "1"])
    _, unet_out, _, info = load_ldm_toyworld(out)
    _, unet_src, _, _ = load_ldm_toyworld(src)
    assert info["steps"] == 40 and info["init_from"] == "src.safetensors" and info["gap"] == 1
    assert 3.5 <= info["minutes"] < 4.5
    for (k, v), w in zip(unet_out.state_dict().items(), unet_src.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    # two steps on from there: the weights move, and the step count goes on from the source's
    more = ["--max-steps", "42", "--batch", "2", "--warmup", "1", "--ema", "0.5", "--threads", "1", "--gap", "2"]
    main(["--init-from", str(src), *more, "--out", str(out), "--ckpt", str(ckpt)])
    with safe_open(str(out), "pt") as f:
        info = json.loads(f.metadata()["train"])
    assert info["steps"] == 42 and info["gap"] == 2
    _, unet_out, _, _ = load_ldm_toyworld(out)
    assert any(not torch.equal(v, w) for v, w in zip(unet_out.state_dict().values(), unet_src.state_dict().values()))
    for bad in (
        ["--gap", "0"],
        ["--same-colour", "1.5"],
        ["--high-noise", "-0.1"],
        ["--high-noise-from", "1000"],
        ["--input-perturbation", "-0.1"],
        ["--input-perturbation", "nan"],
        ["--init-from", str(src), "--resume"],
    ):
        with pytest.raises(SystemExit):
            main([*bad, "--export-only", "--out", str(tmp_path / "x.safetensors"), "--ckpt", str(tmp_path / "x.pt")])


def test_the_training_loop_draws_its_scenes_with_the_gap_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--gap` must reach every batch the loop draws, not only the exported metadata (a run once recorded gap 2 while
    drawing gap-1 scenes)."""
    from lib_ext.toyworld import train_ldm

    seen: list[tuple[int, float]] = []
    real = train_ldm.make_batch

    def spy(*args, **kwargs):
        seen.append((kwargs.get("gap", 1), kwargs.get("same_colour", 0.0)))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_ldm, "make_batch", spy)
    more = ["--max-steps", "2", "--batch", "2", "--threads", "1", "--attn-weight", "0", "--same-colour", "0.5"]
    train_ldm.main([*more, "--gap", "3", "--out", str(tmp_path / "o.safetensors"), "--ckpt", str(tmp_path / "c.pt")])
    assert seen == [(3, 0.5), (3, 0.5)]


def test_high_noise_draws_that_share_of_timesteps_from_its_first_step_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lib_ext.toyworld import train_ldm

    torch.manual_seed(5)
    plain = train_ldm.draw_timesteps(20_000, 1000)
    torch.manual_seed(5)
    assert torch.equal(train_ldm.draw_timesteps(20_000, 1000, 0.0, 600), plain)  # no share: the old draw, exactly
    torch.manual_seed(5)
    t = train_ldm.draw_timesteps(20_000, 1000, 0.75, 600)
    assert int(t.min()) >= 0 and int(t.max()) <= 999
    # uniform: 40% at or above 600; with the share: 0.75 + 0.25 × 0.4 = 85%
    assert float((plain >= 600).float().mean()) == pytest.approx(0.4, abs=0.015)
    assert float((t >= 600).float().mean()) == pytest.approx(0.85, abs=0.015)
    # and the loop passes its options on
    seen: list[tuple[float, int]] = []
    real = train_ldm.draw_timesteps

    def spy(n: int, total: int, share: float = 0.0, first: int = 600) -> torch.Tensor:
        seen.append((share, first))
        return real(n, total, share, first)

    monkeypatch.setattr(train_ldm, "draw_timesteps", spy)
    more = ["--max-steps", "2", "--batch", "2", "--threads", "1", "--attn-weight", "0", "--high-noise", "0.5"]
    paths = ["--out", str(tmp_path / "o.safetensors"), "--ckpt", str(tmp_path / "c.pt")]
    train_ldm.main([*more, "--high-noise-from", "700", *paths])
    assert seen == [(0.5, 700), (0.5, 700)]


def test_input_perturbation_adds_noise_to_the_input_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lib_ext.toyworld import train_ldm

    noise = torch.randn(4000, 4, 2, 2)
    assert train_ldm.perturbed(noise, 0.0) is noise
    out = train_ldm.perturbed(noise, 0.5)
    assert float((out - noise).std()) == pytest.approx(0.5, rel=0.03)  # γ·ξ with ξ ~ N(0, 1)
    # the loop hands its γ over on every step, and the target keeps the unperturbed ε
    seen: list[float] = []
    targets: list[torch.Tensor] = []
    real_perturbed, real_mse = train_ldm.perturbed, train_ldm.F.mse_loss

    def spy(noise: torch.Tensor, gamma: float) -> torch.Tensor:
        seen.append(gamma)
        return real_perturbed(noise, gamma) + 1000.0  # an input far off: the target must not follow it

    def mse_spy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        targets.append(target.detach())
        return real_mse(out, target)

    monkeypatch.setattr(train_ldm, "perturbed", spy)
    monkeypatch.setattr(train_ldm.F, "mse_loss", mse_spy)
    more = ["--max-steps", "2", "--batch", "2", "--threads", "1", "--attn-weight", "0", "--input-perturbation", "0.1"]
    train_ldm.main([*more, "--out", str(tmp_path / "o.safetensors"), "--ckpt", str(tmp_path / "c.pt")])
    assert seen == [0.1, 0.1]
    assert len(targets) == 2 and all(float(t.abs().max()) < 10 for t in targets)


def test_same_colour_redraws_scenes_until_two_objects_share_a_colour() -> None:
    import numpy as np

    from lib_ext.toyworld.train_ldm import caption_words

    def colour_share(same_colour: float) -> float:
        rng = np.random.default_rng(2)
        hits = total = 0
        for _ in range(300):
            words, _, pairs = caption_words(rng, 32, 1.0, synonyms=0.0, same_colour=same_colour)
            if words.count("and") == 1 and len(pairs) == 4:
                total += 1
                hits += words[1] == words[5]
        return hits / total

    assert colour_share(1.0) == 1.0  # every redrawn pair shares its colour
    assert colour_share(0.0) < 0.9  # colour or shape, as before


def test_a_fine_tuning_warms_its_fresh_optimiser_up_from_its_first_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--init-from` starts Adam afresh at step N > warm-up; counted from step 0 it would take full-size steps at once
    (the earlier fine-tunings restarted at 1e-4 to 2e-4 without one). A resume keeps the run's warm-up start."""
    from lib_ext.toyworld import train_ldm
    from lib_ext.toyworld.ldm_weights import export_checkpoint_file

    torch.manual_seed(12)
    src = tmp_path / "src.safetensors"
    export_checkpoint_file(src, ClipTextModel(CFG), LdmUNet(CFG), CFG, {"steps": 50, "minutes": 1.0})
    rates: list[float] = []
    real = train_ldm.learning_rate

    def spy(*args, **kwargs):
        rates.append(real(*args, **kwargs))
        return rates[-1]

    monkeypatch.setattr(train_ldm, "learning_rate", spy)
    common = ["--batch", "2", "--threads", "1", "--attn-weight", "0", "--lr", "1e-3", "--warmup", "4"]
    paths = ["--out", str(tmp_path / "o.safetensors"), "--ckpt", str(tmp_path / "c.pt")]
    train_ldm.main(["--init-from", str(src), "--max-steps", "52", *common, *paths])
    train_ldm.main(["--resume", "--max-steps", "54", *common, *paths])
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])


def _unet_with_maps(probs: torch.Tensor):
    """A UNet stand-in whose one attn2 layer holds the given attention probabilities (B, heads, HW, T)."""

    class Layer:
        last_probs = probs

    class FakeUNet:
        def cross_attention_modules(self):
            return [("x.attn2", Layer())]

    return FakeUNet()


def test_reverse_attention_loss_charges_a_second_place_that_the_forward_loss_lets_pass() -> None:
    """A word's attention half on its object and half on a second, equal place (an object drawn twice) costs the
    forward KL only log 2; the reverse KL charges it many times that, and next to nothing for attention on the mask."""
    from lib_ext.toyworld.train_ldm import Batch, attention_loss, reverse_attention_loss

    size, n_ctx = 32, 77
    masks = torch.zeros(1, 1, size, size)
    masks[0, 0, 4:12, 4:12] = 1.0  # 64 pixels
    second = torch.zeros(size, size)
    second[20:28, 20:28] = 1.0
    spans = torch.zeros(1, 1, n_ctx)
    spans[0, 0, 2:4] = 1.0  # a word of two tokens: its attention is the sum of both
    batch = Batch(
        torch.zeros(1, 4, size, size),
        torch.zeros(1, n_ctx, dtype=torch.long),
        masks,
        spans,
        torch.ones(1, 1, dtype=torch.bool),
    )

    def probs(where: torch.Tensor) -> torch.Tensor:
        p = torch.full((1, 2, size * size, n_ctx), 1e-9)
        p[0, :, :, 2] = 0.5 * where.flatten() / where.sum()
        p[0, :, :, 3] = 0.5 * where.flatten() / where.sum()
        return p

    exact = _unet_with_maps(probs(masks[0, 0]))
    twice = _unet_with_maps(probs(masks[0, 0] + second))
    assert float(attention_loss(exact, batch)) < 1e-3
    assert float(reverse_attention_loss(exact, batch)) < 0.02  # −log(1 − 0.01 + 0.01 × 64/1024)
    forward, reverse = float(attention_loss(twice, batch)), float(reverse_attention_loss(twice, batch))
    assert forward == pytest.approx(math.log(2), abs=1e-3)
    # half the attention at log((1/128) / (0.01/1024)) = log 800 per unit, half at log((1/128) / (0.99/64 + ...))
    assert reverse == pytest.approx(
        0.5 * math.log(800) + 0.5 * math.log((1 / 128) / (0.99 / 64 + 0.01 / 1024)), rel=1e-3
    )
    assert reverse > 4 * forward
    # no supervised word: no loss, as the forward term
    none = Batch(batch.latents, batch.ids, masks, spans, torch.zeros(1, 1, dtype=torch.bool))
    assert float(reverse_attention_loss(twice, none)) == 0.0


def test_reverse_attn_reaches_the_loss_and_the_metadata_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors import safe_open

    from lib_ext.toyworld import train_ldm

    calls: list[int] = []
    real = train_ldm.reverse_attention_loss

    def spy(unet, batch):
        calls.append(1)
        return real(unet, batch)

    monkeypatch.setattr(train_ldm, "reverse_attention_loss", spy)
    common = ["--max-steps", "2", "--batch", "2", "--threads", "1", "--attn-weight", "0"]
    out, ckpt = tmp_path / "o.safetensors", tmp_path / "c.pt"
    train_ldm.main([*common, "--out", str(out), "--ckpt", str(ckpt)])
    with safe_open(str(out), "pt") as f:
        assert "reverse_attn" not in json.loads(f.metadata()["train"])
    assert calls == []  # off by default: earlier recipes replay
    train_ldm.main([*common, "--reverse-attn", "0.05", "--out", str(out), "--ckpt", str(ckpt)])
    assert len(calls) == 2
    with safe_open(str(out), "pt") as f:
        assert json.loads(f.metadata()["train"])["reverse_attn"] == 0.05
    rows = ckpt.with_suffix(".csv").read_text().splitlines()
    assert ",attn_rkl," in rows[0] and len(rows) == 1  # 2 steps: no row yet (one every 25)
    for bad in ("-0.1", "nan", "inf"):
        with pytest.raises(SystemExit):
            train_ldm.main(["--reverse-attn", bad, "--export-only", "--out", str(out), "--ckpt", str(ckpt)])
