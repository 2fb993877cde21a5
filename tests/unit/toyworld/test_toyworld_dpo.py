"""Diffusion-DPO on the SD1 checkpoint's own pictures: `own_samples` collects, per prompt in one of the WebUI's
prompt forms, a picture the judge finds wrong and one it finds right; `train_ldm --dpo-pairs` trains on them."""

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
from lib_ext.toyworld.ldm_model import ClipTextModel, LdmConfig, LdmUNet
from lib_ext.toyworld.ldm_weights import export_checkpoint_file
from lib_ext.toyworld.own_samples import OwnPairs, prompt_in_form
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
        assert len(set(weights)) == 1 and weights[0] in train_ldm.EMPHASIS_WEIGHTS  # one word, one weight
        synonyms = prompt_in_form(rng, CAPTION, "synonyms").split()
        assert all(w in SYNONYMS for w in (synonyms[1], synonyms[2], synonyms[5]))  # red, circle, blue replaced
        assert [SYNONYMS.get(w, w) for w in synonyms] == CAPTION.split()
        assert prompt_in_form(rng, CAPTION, "plain") == CAPTION
    with pytest.raises(ValueError, match="unknown prompt form"):
        prompt_in_form(rng, CAPTION, "sideways")


def _checkpoint(path: Path, seed: int = 5) -> Path:
    torch.manual_seed(seed)
    export_checkpoint_file(path, ClipTextModel(CFG), LdmUNet(CFG), CFG, {"steps": 30, "minutes": 1.0})
    return path


def test_own_samples_pairs_a_miss_with_a_right_picture_of_its_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A miss is kept with a picture of the same prompt that the judge finds right; a miss never drawn right in the
    retries is counted, not kept; `--resume` carries on with the next batch."""
    weights, out = _checkpoint(tmp_path / "w.safetensors"), tmp_path / "pairs.npz"
    # the judge stand-in: a picture is right when its mean is above the median of all pictures seen so far
    seen: list[float] = []

    def judged_right(latent: torch.Tensor, caption: str) -> bool:
        seen.append(float(latent[:3].mean()))
        return seen[-1] > float(np.median(seen))

    monkeypatch.setattr(own_samples, "is_right", judged_right)
    common = ["--weights", str(weights), "--out", str(out), "--batch", "4", "--threads", "1"]
    own_samples.main([*common, "--max-batches", "1"])
    first = OwnPairs.load(out)
    assert (first.batches, first.drawn) == (1, 4) and len(first.captions) + first.unpaired >= 1
    assert first.losers.shape == first.winners.shape == (len(first.captions), 4, 32, 32)
    assert all(s in own_samples.SAMPLERS for s in first.samplers)
    for loser, winner in zip(first.losers, first.winners, strict=True):
        assert not np.array_equal(loser, winner) and np.all(loser[3] == 0) and np.abs(winner).max() <= 1.0
    own_samples.main([*common, "--max-batches", "2", "--resume"])
    both = OwnPairs.load(out)
    assert (both.batches, both.drawn) == (2, 8) and both.captions[: len(first.captions)] == first.captions
    np.savez(out, losers=np.zeros((2, 3, 32, 32)), winners=np.zeros((2, 3, 32, 32)), captions=np.array(["a"]),
             prompts=np.array(["a"]), samplers=np.array(["Heun"]), counts=[1, 2, 0])  # fmt: skip
    with pytest.raises(ValueError, match="expected"):
        OwnPairs.load(out)


def test_the_real_judge_decides_what_is_right() -> None:
    from lib_ext.toyworld.scenes import render

    scene = render([("circle", "red", 10.0, 10.0, 9.0), ("square", "blue", 24.0, 24.0, 9.0)])
    latent = torch.cat([torch.from_numpy(scene.image).permute(2, 0, 1).float() / 127.5 - 1.0, torch.zeros(1, 32, 32)])
    assert own_samples.is_right(latent, CAPTION) and not own_samples.is_right(latent, "a red circle")
    # the host's truncating 8-bit conversion: within one level of the rendered picture
    assert np.abs(own_samples.picture(latent).astype(int) - scene.image).max() <= 1


def _pairs(path: Path, prompts: list[str]) -> Path:
    rng = np.random.default_rng(1)
    latents = rng.uniform(-1, 1, (2, len(prompts), 4, 32, 32)).astype(np.float16)
    latents[:, :, 3] = 0
    OwnPairs(latents[0], latents[1], ["a red circle"] * len(prompts), prompts, ["Heun"] * len(prompts), 1, 8).save(path)
    return path


def test_pairs_batch_prompts_of_one_chunk_count_with_the_hosts_emphasis(tmp_path: Path) -> None:
    long = " ".join(["image"] * 80)
    path = _pairs(tmp_path / "m.npz", [CAPTION, f"{long} a green triangle", "a (vermilion:1.3) square", "a 赤 roundel"])
    pairs = train_ldm.PreferencePairs.load(path, ClipTokenizer())
    saved = OwnPairs.load(path)
    assert pairs.ids[1].shape == (154,) and pairs.ids[0].shape == (77,)
    rng = np.random.default_rng(0)
    for _ in range(10):
        winners, losers, ids, mults = pairs.draw(rng, 3)
        assert winners.shape == losers.shape == (3, 4, 32, 32) and ids.shape[0] == mults.shape[0] == 3
        for w, lose, row in zip(winners, losers, ids, strict=True):
            i = next(k for k, x in enumerate(pairs.ids) if torch.equal(x, row))  # each row's own pair
            assert torch.equal(w, torch.from_numpy(saved.winners[i].astype(np.float32)))
            assert torch.equal(lose, torch.from_numpy(saved.losers[i].astype(np.float32)))
    # the emphasised pair keeps its weight on the synonym's tokens, as the host's conditioner puts it
    weighted = pairs.multipliers[2][pairs.multipliers[2] != 1.0]
    assert len(weighted) == len(ClipTokenizer().encode("vermilion")) > 1
    assert weighted.tolist() == pytest.approx([1.3] * len(weighted))
    assert torch.equal(pairs.multipliers[0], torch.ones(77))
    OwnPairs.empty().save(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="no pairs"):
        train_ldm.PreferencePairs.load(tmp_path / "none.npz", ClipTokenizer())


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
    pairs = _pairs(tmp_path / "m.npz", [CAPTION, "a green triangle"])
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
    OwnPairs.empty().save(tmp_path / "none.npz")
    with pytest.raises(SystemExit, match="no pairs"):
        train_ldm.main(
            [*common, "--init-from", str(src), "--max-steps", "31", "--dpo-pairs", str(tmp_path / "none.npz")]
        )
