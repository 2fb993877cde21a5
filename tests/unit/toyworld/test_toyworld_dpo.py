"""Diffusion-DPO on the SD1 checkpoint's own misses: `own_samples` collects pictures the judge finds wrong, in the
WebUI's prompt forms; `train_ldm --dpo-pairs` pairs each with the world's rendering of its caption."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lib_ext.toyworld import own_samples, train_ldm
from lib_ext.toyworld.clip_bpe import ClipTokenizer
from lib_ext.toyworld.clip_conditioning import ClipConditioner
from lib_ext.toyworld.judge import caption_matches, judge, parse_caption
from lib_ext.toyworld.ldm_model import ClipTextModel, LdmConfig, LdmUNet
from lib_ext.toyworld.ldm_weights import export_checkpoint_file
from lib_ext.toyworld.own_samples import Misses, prompt_in_form
from lib_ext.toyworld.scenes import random_specs, render, specs_for
from lib_ext.toyworld.vocab import SYNONYMS

CFG = LdmConfig()
CAPTION = "a red circle and a blue square"


def _chunks(prompt: str) -> list:
    return list(ClipConditioner(None, ClipTokenizer()).tokenize_line(prompt).chunks)


def test_prompt_forms_are_the_webuis_cases_and_keep_the_caption() -> None:
    rng = np.random.default_rng(0)
    tok = ClipTokenizer()
    caption_ids = [t for w in CAPTION.split() for t in tok.encode(w)]
    for _ in range(20):
        past = prompt_in_form(rng, CAPTION, "past_75")
        chunks = _chunks(past)
        assert len(chunks) == 2
        second = [t for t in chunks[1].tokens[1:-1] if t != tok.eos_id]
        assert second[-len(caption_ids) :] == caption_ids  # the caption whole, in the second chunk
        assert len(_chunks(prompt_in_form(rng, CAPTION, "break"))) == 2
        emphasised = prompt_in_form(rng, CAPTION, "emphasis")
        weights = [m for c in _chunks(emphasised) for m in c.multipliers if m != 1.0]
        assert len(set(weights)) == 1 and weights[0] in own_samples.EMPHASIS  # one word, one weight
        synonyms = prompt_in_form(rng, CAPTION, "synonyms").split()
        assert all(w in SYNONYMS for w in (synonyms[1], synonyms[2], synonyms[5]))  # red, circle, blue replaced
        assert [SYNONYMS.get(w, w) for w in synonyms] == CAPTION.split()
        assert prompt_in_form(rng, CAPTION, "plain") == CAPTION
    with pytest.raises(ValueError, match="unknown prompt form"):
        prompt_in_form(rng, CAPTION, "sideways")


def test_specs_for_places_the_given_objects_and_random_specs_keeps_its_stream() -> None:
    objects = [("triangle", "green"), ("circle", "yellow")]
    scene = render(specs_for(np.random.default_rng(3), objects))
    assert caption_matches(judge(scene.image), "a green triangle and a yellow circle")
    # the benches' captions come from random_specs' stream: pinned here, drawn before specs_for existed
    specs = random_specs(np.random.default_rng(4), (2, 3))
    assert [(s, c, round(x, 3), round(y, 3), round(z, 3)) for s, c, x, y, z in specs] == [
        ("triangle", "green", 18.426, 13.209, 9.404),
        ("triangle", "blue", 9.819, 23.058, 13.01),
        ("square", "blue", 25.919, 25.074, 10.849),
    ]
    with pytest.raises(ValueError, match="gap"):
        specs_for(np.random.default_rng(0), objects, gap=0)


def _checkpoint(path: Path, seed: int = 5) -> Path:
    torch.manual_seed(seed)
    export_checkpoint_file(path, ClipTextModel(CFG), LdmUNet(CFG), CFG, {"steps": 30, "minutes": 1.0})
    return path


def test_own_samples_keeps_what_the_judge_finds_wrong_and_resumes(tmp_path: Path) -> None:
    weights, out = _checkpoint(tmp_path / "w.safetensors"), tmp_path / "misses.npz"
    common = ["--weights", str(weights), "--out", str(out), "--batch", "2", "--threads", "1"]
    own_samples.main([*common, "--max-batches", "1"])
    first = Misses.load(out)
    assert (first.batches, first.drawn) == (1, 2)
    # an untrained model draws noise: the judge finds both wrong, and each miss is the picture that was judged
    assert len(first.captions) == 2 and first.latents.shape == (2, 4, 32, 32)
    for latent, caption in zip(first.latents, first.captions, strict=True):
        assert not caption_matches(judge(own_samples.picture(torch.from_numpy(latent))), caption)
    assert np.all(first.latents[:, 3] == 0) and np.abs(first.latents).max() <= 1.0
    own_samples.main([*common, "--max-batches", "2", "--resume"])
    both = Misses.load(out)
    assert (both.batches, both.drawn) == (2, 4) and both.captions[:2] == first.captions
    assert both.prompts[2:] != first.prompts  # batch 1 drew its own captions, not batch 0's again
    np.savez(out, latents=np.zeros((2, 3, 32, 32)), captions=np.array(["a"]), prompts=np.array(["a"]), counts=[1, 2])
    with pytest.raises(ValueError, match="expected"):
        Misses.load(out)


def _misses(path: Path, prompts: list[str], captions: list[str]) -> Path:
    rng = np.random.default_rng(1)
    latents = rng.uniform(-1, 1, (len(prompts), 4, 32, 32)).astype(np.float16)
    latents[:, 3] = 0
    Misses(latents, captions, prompts, 1, 8).save(path)
    return path


def test_pairs_render_the_caption_and_batch_prompts_of_one_chunk_count(tmp_path: Path) -> None:
    long = " ".join(["image"] * 80)
    path = _misses(
        tmp_path / "m.npz",
        [CAPTION, f"{long} a green triangle", "a (vermilion:1.3) square", "a 赤 roundel"],
        [CAPTION, "a green triangle", "a red square", "a red circle"],
    )
    pairs = train_ldm.PreferencePairs.load(path, ClipTokenizer())
    assert pairs.objects[2] == [("square", "red")] and pairs.multipliers[0] is None
    assert pairs.ids[1].shape == (154,) and pairs.ids[0].shape == (77,)
    rng = np.random.default_rng(0)
    for _ in range(10):
        winners, losers, ids, mults = pairs.draw(rng, 3)
        assert winners.shape == losers.shape == (3, 4, 32, 32) and ids.shape[0] == mults.shape[0] == 3
        assert ids.shape[1] in (77, 154)
        for w, row in zip(winners, ids, strict=True):
            i = next(k for k, x in enumerate(pairs.ids) if torch.equal(x, row))
            picture = own_samples.picture(w)
            wanted = " and ".join(f"a {c} {s}" for s, c in pairs.objects[i])
            assert caption_matches(judge(picture), wanted)  # the world's own rendering, judged right
            assert any(torch.equal(losers[0], pairs.losers[k]) for k in range(4))
    # the emphasised miss keeps its weight on the synonym's tokens
    weighted = pairs.multipliers[2][pairs.multipliers[2] != 1.0]
    assert len(weighted) == len(ClipTokenizer().encode("vermilion")) > 1 and weighted.tolist() == pytest.approx(
        [1.3] * 3
    )
    bad = _misses(tmp_path / "bad.npz", ["a circle"], ["a circle"])
    with pytest.raises(ValueError, match="colour and shape"):
        train_ldm.PreferencePairs.load(bad, ClipTokenizer())
    Misses.empty().save(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="no misses"):
        train_ldm.PreferencePairs.load(tmp_path / "none.npz", ClipTokenizer())
    assert parse_caption(CAPTION) == [("red", "circle"), ("blue", "square")]


def test_dpo_loss_is_log_2_at_the_reference_and_falls_when_the_policy_prefers_the_winner() -> None:
    torch.manual_seed(0)
    te, unet = ClipTextModel(CFG), LdmUNet(CFG)
    ac = train_ldm.alphas_cumprod()
    tok = ClipTokenizer()
    ids = torch.tensor([train_ldm.context_ids(tok, [tok.encode("a red circle")])] * 2)
    winners, losers = torch.rand(2, 4, 32, 32) * 2 - 1, torch.rand(2, 4, 32, 32) * 2 - 1
    mults = torch.ones(2, 77)
    loss, order = train_ldm.dpo_loss(te, unet, te, unet, winners, losers, ids, mults, 2000.0, ac)
    assert float(loss) == pytest.approx(math.log(2), abs=1e-5) and float(order) == 0.0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in unet.parameters())

    # a policy whose error is lower on winners than the reference's (and higher on losers) is charged less
    class Shifted(torch.nn.Module):
        def __init__(self, sign: float) -> None:
            super().__init__()
            self.sign = sign

        def forward(self, x, t, context):
            return torch.zeros_like(x) + self.sign

    # winners all 1, losers all −1, one noise: a constant output c changes (e_w − e_l) by 4·c·√(1−ᾱ) against c = 0,
    # so c < 0 prefers the winner (loss below log 2, every pair ordered) and c > 0 the loser
    ones = torch.ones(2, 4, 32, 32)
    for c, below in ((-0.5, True), (0.5, False)):
        torch.manual_seed(1)
        loss, order = train_ldm.dpo_loss(te, Shifted(c), te, Shifted(0.0), ones, -ones, ids, mults, 10.0, ac)
        assert (float(loss) < math.log(2)) == below and float(order) == (1.0 if below else 0.0)


def test_train_ldm_dpo_reaches_the_loss_the_log_and_the_metadata(tmp_path: Path) -> None:
    from safetensors import safe_open

    src = _checkpoint(tmp_path / "src.safetensors")
    pairs = _misses(tmp_path / "m.npz", [CAPTION, "a green triangle"], [CAPTION, "a green triangle"])
    out, ckpt = tmp_path / "o.safetensors", tmp_path / "c.pt"
    common = ["--batch", "2", "--threads", "1", "--attn-weight", "0", "--out", str(out), "--ckpt", str(ckpt)]
    args = [*common, "--init-from", str(src), "--max-steps", "55", "--dpo-pairs", str(pairs), "--dpo-batch", "2"]
    train_ldm.main(args)
    with safe_open(str(out), "pt") as f:
        info = json.loads(f.metadata()["train"])
    assert info["dpo_pairs"] == "m.npz" and info["dpo_reference"] == "src.safetensors" and info["dpo_beta"] == 2000.0
    rows = ckpt.with_suffix(".csv").read_text().splitlines()
    assert rows[0].endswith(",dpo,dpo_order") and len(rows) == 2  # steps 30..55: one row, at step 50
    dpo, order = (float(v) for v in rows[1].split(",")[-2:])
    assert 0 < dpo < 5 and 0 <= order <= 1
    for bad in (
        ["--dpo-pairs", str(pairs)],  # no reference: neither --init-from nor --dpo-reference
        ["--dpo-pairs", str(pairs), "--dpo-reference", str(src), "--dpo-beta", "nan"],
        ["--dpo-pairs", str(pairs), "--dpo-reference", str(src), "--dpo-weight", "0"],
        ["--dpo-pairs", str(pairs), "--dpo-reference", str(src), "--dpo-batch", "0"],
    ):
        with pytest.raises(SystemExit):
            train_ldm.main([*bad, "--export-only", "--out", str(tmp_path / "x.safetensors"), "--ckpt", str(ckpt)])
    Misses.empty().save(tmp_path / "none.npz")
    with pytest.raises(SystemExit, match="no misses"):
        train_ldm.main(
            [*common, "--init-from", str(src), "--max-steps", "31", "--dpo-pairs", str(tmp_path / "none.npz")]
        )
