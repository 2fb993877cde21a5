"""Trains the toy world's LDM checkpoint (`ldm_model.py`): a CLIP text model and ldm UNet on the constructed latents.

    python -m lib_ext.toyworld.train_ldm --minutes 75 --max-steps 6000 --anneal-from 2000 \
        --ckpt work/ldm/ckpt.pt --out lib_ext/toyworld/weights/toyworld-sd1.safetensors [--resume]

Same recipe as the word-level model (`train.py`) on SD's schedule, with the attention loss that pulls each colour and
shape word's cross-attention map towards its object's mask; EMA weights exported. What differs: the target is v
(`LdmConfig.prediction`; ε left the pictures on random tints, see the model card);
the prompt goes through CLIP's BPE tokenizer and a causal CLIP text model, as in the WebUI, so a word may be several
tokens and its attention is the sum over its tokens (as the heatmaps read it); synonyms split into several tokens
(vermilion, cerulean, roundel, 赤) stand in for their word a fifth of the time (`--synonyms`); one step in eight
conditions on two 77-token chunks, filler words first (a prompt past token 75, or with BREAK, in the WebUI); one step
in ten draws 48×48 latents (the hires pass at 1.5×); with `--emphasis-prob`, a caption's word is emphasised as the WebUI
does it (`(word:w)`: the word's token outputs × w, then the chunk's mean restored), so `(red:1.3)` is not a context
the model never saw; with `--similar-pairs`, more scenes have two objects sharing a colour or a shape; with
`--long-prompts`, that share of the two-chunk steps is one long prompt cut at token 75 (a full first chunk, filler
words before the caption in the second), the WebUI's layout of a prompt past token 75; with `--gap`, objects keep more
than the one background pixel every bench's scenes keep (two same-coloured objects drawn as one blob was the commonest
miss; `--same-colour` makes that share of the `--similar-pairs` redraws share a colour); `--reverse-attn` adds
KL(word attention ‖ mask), which charges a word's attention on a second place (an object drawn twice); `--dpo-pairs`
adds Diffusion-DPO on the model's own pictures (`own_samples`: per prompt, one drawn right and one wrong); `--init-from`
fine-tunes an exported checkpoint (the only file that outlives a machine), its fresh optimiser warmed up from its first
step. The latent is the picture itself (channels 0–2 = RGB, 3 = 0): the autoencoder is constructed to read and write
exactly that (`ldm_model.vae_state_dict`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F

from .clip_bpe import ClipTokenizer
from .conditioning import emphasise
from .ldm_model import ClipTextModel, LdmConfig, LdmUNet
from .ldm_weights import export_checkpoint_file
from .scenes import Scene, random_scene
from .schedule import NUM_TIMESTEPS, alphas_cumprod
from .train import learning_rate, set_store_probs
from .vocab import FILLER_WORDS, SYNONYMS

REPO_ROOT = Path(__file__).resolve().parents[2]
CHUNK = 75
_SYNONYMS_OF: dict[str, list[str]] = {}
for _syn, _word in SYNONYMS.items():
    _SYNONYMS_OF.setdefault(_word, []).append(_syn)


@dataclass
class Batch:
    latents: torch.Tensor  # (B, 4, H, W): RGB in [-1, 1] and a zero channel
    ids: torch.Tensor  # (B, 77 × chunks)
    masks: torch.Tensor  # (B, W, H, W) float: object mask of supervised word w
    spans: torch.Tensor  # (B, W, 77 × chunks) float: 1 at the tokens of word w
    supervised: torch.Tensor  # (B, W) bool
    multipliers: torch.Tensor | None = None  # (B, 77 × chunks): emphasis weight per token, or None (all 1)


def shares_a_word(scene: Scene, colour_only: bool = False) -> bool:
    """Two of the scene's objects have one colour or one shape ("a green triangle and a green square").

    With `colour_only`, only a shared colour counts: two same-coloured objects merged into one blob is the miss
    that costs the most captions.
    """
    colors = [o.color for o in scene.objects]
    shapes = [o.shape for o in scene.objects]
    if colour_only:
        return len(set(colors)) < len(colors)
    return len(set(colors)) < len(colors) or len(set(shapes)) < len(shapes)


def caption_words(
    rng: np.random.Generator,
    size: int,
    similar_pairs: float = 0.0,
    synonyms: float = 0.2,
    gap: int = 1,
    same_colour: float = 0.0,
) -> tuple[list[str], np.ndarray, list[tuple[int, np.ndarray]]]:
    """(words, image, [(word index, mask)]) of one training example (the word-level model's mix, plus synonyms).

    With `similar_pairs`, that share of the scenes of several objects is drawn again until two objects share a
    colour or a shape: the captions the model most often drew wrong (two objects merged, or one drawn twice);
    `same_colour` is the share of those redraws that must share a colour.
    `synonyms` is the chance that a word with synonyms takes one of them. `gap` is the least background between two
    objects, in pixels of a 32×32 scene (scaled down to whole pixels at other sizes, so gap 1 is 1 at any size).
    """
    gap = max(1, int(gap * size / 32))
    u = rng.random()
    if u < 0.10:
        return [], random_scene(rng, (1, 3), size, gap).image, []
    if u < 0.25:
        scene = random_scene(rng, 1, size, gap)
        obj = scene.objects[0]
        v = rng.random()
        words = [obj.color] if v < 0.4 else [obj.shape] if v < 0.8 else [obj.color, obj.shape]
        pairs = [(i, obj.mask) for i in range(len(words))]
    else:
        n = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.20]))
        scene = random_scene(rng, n, size, gap)
        if n > 1 and similar_pairs > 0 and rng.random() < similar_pairs:
            colour_only = same_colour > 0 and rng.random() < same_colour
            while not shares_a_word(scene, colour_only):
                scene = random_scene(rng, n, size, gap)
        words = scene.caption.split()
        pairs = [(i, m) for i, _, m in scene.word_masks]
    for i, word in enumerate(words):
        if word in _SYNONYMS_OF and rng.random() < synonyms:
            words[i] = str(rng.choice(_SYNONYMS_OF[word]))
    return words, scene.image, pairs


def context_ids(tok: ClipTokenizer, chunks: list[list[int]]) -> list[int]:
    """The WebUI's SD1 layout: each chunk = start, ≤ 75 ids, end, padded with the end token to 77."""
    out: list[int] = []
    for ids in chunks:
        ids = ids[:CHUNK]
        out += [tok.bos_id, *ids, tok.eos_id] + [tok.eos_id] * (CHUNK - len(ids))
    return out


EMPHASIS_WEIGHTS = (0.8, 0.9, 1.1, 1.2, 1.3, 1.4, 1.5)


def two_chunk_step(step: int, share: float) -> bool:
    """Whether training step `step` conditions on two chunks: `share` of the steps, spread evenly.

    At the default 1/8 this is `step % 8 == 7`, the schedule every earlier cycle trained on.
    """
    return int((step + 1) * share) > int(step * share)


def make_batch(
    rng: np.random.Generator,
    batch: int,
    tok: ClipTokenizer,
    size: int,
    two_chunks: bool,
    emphasis_prob: float = 0.0,
    similar_pairs: float = 0.0,
    long_prompts: float = 0.0,
    synonyms: float = 0.2,
    gap: int = 1,
    same_colour: float = 0.0,
) -> Batch:
    n_ctx = 77 * (2 if two_chunks else 1)
    max_words = 12
    images = np.empty((batch, size, size, 3), dtype=np.uint8)
    ids = np.empty((batch, n_ctx), dtype=np.int64)
    masks = np.zeros((batch, max_words, size, size), dtype=np.float32)
    spans = np.zeros((batch, max_words, n_ctx), dtype=np.float32)
    sup = np.zeros((batch, max_words), dtype=bool)
    mult = np.ones((batch, n_ctx), dtype=np.float32)
    for b in range(batch):
        words, image, pairs = caption_words(rng, size, similar_pairs, synonyms, gap, same_colour)
        images[b] = image
        word_ids = [tok.encode(w) for w in words]
        flat = [t for w in word_ids for t in w]
        offset = 1  # the start token
        if two_chunks and long_prompts > 0 and rng.random() < long_prompts:
            # a long prompt as the WebUI splits it: 75 filler tokens fill the first chunk, the rest of the filler
            # comes before the caption in the second (`bench webui_quality`'s past_75 case)
            n_filler = 75 + int(rng.integers(1, 21))
            filler = [t for w in rng.choice(FILLER_WORDS, size=n_filler) for t in tok.encode(str(w))]
            rest = filler[CHUNK:]
            ids[b] = context_ids(tok, [filler[:CHUNK], rest + flat])
            offset = 77 + 1 + len(rest)
        elif two_chunks:
            filler = [t for w in rng.choice(FILLER_WORDS, size=int(rng.integers(1, 40))) for t in tok.encode(str(w))]
            ids[b] = context_ids(tok, [filler, flat])
            offset = 77 + 1
        else:
            ids[b] = context_ids(tok, [flat])
        starts = np.cumsum([0] + [len(w) for w in word_ids])
        for k, (i, mask) in enumerate(pairs):
            masks[b, k] = mask
            spans[b, k, offset + starts[i] : offset + starts[i + 1]] = 1.0
            sup[b, k] = True
        # drawn only when asked, so a run without emphasis keeps the random stream it always had
        if emphasis_prob > 0 and words and rng.random() < emphasis_prob:
            i = int(rng.integers(len(words)))
            mult[b, offset + starts[i] : offset + starts[i + 1]] = float(rng.choice(EMPHASIS_WEIGHTS))
    rgb = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    latents = torch.cat([rgb, torch.zeros_like(rgb[:, :1])], dim=1)
    multipliers = torch.from_numpy(mult) if (mult != 1.0).any() else None
    return Batch(
        latents,
        torch.from_numpy(ids),
        torch.from_numpy(masks),
        torch.from_numpy(spans),
        torch.from_numpy(sup),
        multipliers,
    )


def draw_timesteps(n: int, total: int, high_share: float = 0.0, high_from: int = 600) -> torch.Tensor:
    """Uniform timesteps; with ``high_share`` > 0 that share of them drawn again from ``high_from`` up.

    The misses left are layouts (an object drawn twice, two drawn over each other, one left out), and a sampler fixes
    the layout in its first steps, at σ above about 2 (t ≥ 600 on SD's schedule). Without a share the draw is the
    uniform one, so earlier recipes replay exactly.
    """
    t = torch.randint(0, total, (n,))
    if high_share > 0:
        high = torch.rand(n) < high_share
        t = torch.where(high, torch.randint(high_from, total, (n,)), t)
    return t


def perturbed(noise: torch.Tensor, gamma: float) -> torch.Tensor:
    """The noise that goes into x_t: ε + γ·ξ with fresh ξ, while the target keeps ε.

    A sampler feeds the model its own slightly wrong x_t, never a true q(x_t | x0); training on perturbed inputs
    narrows that gap (Ning et al. 2023, "Input Perturbation Reduces Exposure Bias in Diffusion Models"). γ = 0 draws
    nothing, so earlier recipes replay exactly.
    """
    return noise + gamma * torch.randn_like(noise) if gamma > 0 else noise


def encode_context(te: ClipTextModel, ids: torch.Tensor, multipliers: torch.Tensor | None = None) -> torch.Tensor:
    """Each 77-token chunk through the text model on its own, then concatenated (the WebUI's long prompts)."""
    zs = [te(chunk) for chunk in ids.split(77, dim=1)]
    if multipliers is not None:
        zs = [emphasise(z, m, per_row=True) for z, m in zip(zs, multipliers.split(77, dim=1), strict=True)]
    return torch.cat(zs, dim=1)


def word_maps(unet: LdmUNet, batch: Batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mask, attention) per attn2 layer, each (N, HW) over the N supervised words and normalised to sum 1.

    A word's attention sums its tokens' (as the heatmaps read it), averaged over heads; the mask is pooled to the
    layer's resolution.
    """
    bi, wi = batch.supervised.nonzero(as_tuple=True)
    if bi.numel() == 0:
        return []
    targets: dict[int, torch.Tensor] = {}
    spans = batch.spans[bi, wi]  # (N, T)
    maps = []
    for _, mod in unet.cross_attention_modules():
        probs = mod.last_probs  # (B, heads, HW, T)
        if probs is None:
            continue
        res = int(round(probs.shape[2] ** 0.5))
        if res not in targets:
            pooled = F.adaptive_avg_pool2d(batch.masks[bi, wi][:, None], res)[:, 0].flatten(1)
            targets[res] = pooled / pooled.sum(-1, keepdim=True).clamp_min(1e-8)
        a = torch.einsum("nqt,nt->nq", probs.mean(1)[bi], spans)
        maps.append((targets[res], a / a.sum(-1, keepdim=True).clamp_min(1e-12)))
    return maps


def attention_loss(unet: LdmUNet, batch: Batch) -> torch.Tensor:
    """Mean over attn2 layers of KL(mask ‖ word attention) over pixels; a word's attention sums its tokens'."""
    losses = [
        (m * (torch.log(m.clamp_min(1e-8)) - torch.log(a.clamp_min(1e-8)))).sum(-1).mean()
        for m, a in word_maps(unet, batch)
    ]
    return torch.stack(losses).mean() if losses else torch.zeros(())


# The reverse KL's mask keeps this share of its mass spread evenly over the picture, so attention off the object
# costs a finite log(share of a pixel / (this / pixels)) instead of an infinite one.
REVERSE_SMOOTHING = 0.01


def reverse_attention_loss(unet: LdmUNet, batch: Batch) -> torch.Tensor:
    """Mean over attn2 layers of KL(word attention ‖ smoothed mask): the reverse of `attention_loss`.

    KL(mask ‖ attention) charges a word's attention on a second place only −log(share left on the mask): half of it on
    a second blob costs log 2, less than attention spread thinly everywhere. That second place is where the sampler
    draws the object twice. The reverse direction charges each unit of attention by how far off the mask it lies,
    log(a / smoothed mask), about log(pixels / (2 × mask pixels × 0.01)) per unit for that second blob, so it asks
    for one place per word (mode-seeking), and the mask's shape is still the forward term's job.
    """
    losses = []
    for m, a in word_maps(unet, batch):
        smooth = (1 - REVERSE_SMOOTHING) * m + REVERSE_SMOOTHING / m.shape[-1]
        losses.append((a * (torch.log(a.clamp_min(1e-12)) - torch.log(smooth))).sum(-1).mean())
    return torch.stack(losses).mean() if losses else torch.zeros(())


@dataclass
class PreferencePairs:
    """The pairs `own_samples` collected, tokenized once: per prompt, the model's own picture judged right (preferred)
    and judged wrong (dispreferred)."""

    winners: torch.Tensor  # (N, 4, 32, 32) final latents
    losers: torch.Tensor  # (N, 4, 32, 32)
    ids: list[torch.Tensor]  # per pair, (77 × chunks,) the prompt as the WebUI tokenizes it
    multipliers: list[torch.Tensor]  # per pair, (77 × chunks,) emphasis weights

    @classmethod
    def load(cls, path: Path, tok: ClipTokenizer) -> PreferencePairs:
        from .clip_conditioning import ClipConditioner
        from .own_samples import OwnPairs

        saved = OwnPairs.load(path)
        if not saved.captions:
            raise ValueError(f"{path} holds no pairs; collect some with `python -m lib_ext.toyworld.own_samples`")
        conditioner = ClipConditioner(None, tok)
        ids, mults = [], []
        for prompt in saved.prompts:
            chunks = conditioner.tokenize_line(prompt).chunks
            ids.append(torch.tensor([t for c in chunks for t in c.tokens]))
            mults.append(torch.tensor([w for c in chunks for w in c.multipliers], dtype=torch.float32))
        winners, losers = (torch.from_numpy(a.astype(np.float32)) for a in (saved.winners, saved.losers))
        return cls(winners, losers, ids, mults)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """n pairs whose prompts have one chunk count, so their contexts batch without padding: (winners, losers,
        ids, multipliers)."""
        first = int(rng.integers(len(self.ids)))
        same = [i for i, x in enumerate(self.ids) if x.shape == self.ids[first].shape]
        chosen = [first, *(int(i) for i in rng.choice(same, size=n - 1))]
        return (
            self.winners[chosen],
            self.losers[chosen],
            torch.stack([self.ids[i] for i in chosen]),
            torch.stack([self.multipliers[i] for i in chosen]),
        )


def dpo_loss(
    te: ClipTextModel,
    unet: LdmUNet,
    ref_te: ClipTextModel,
    ref_unet: LdmUNet,
    winners: torch.Tensor,
    losers: torch.Tensor,
    ids: torch.Tensor,
    multipliers: torch.Tensor,
    beta: float,
    ac: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Diffusion-DPO (Wallace et al. 2023): −log σ(−β/2 · [(e_w − e_w,ref) − (e_l − e_l,ref)]), one noise and
    timestep per pair, e = the v-target's mean squared error. The policy gains on the picture drawn right relative to
    the frozen reference, and loses on the one drawn wrong. Returns (loss, share of pairs the policy orders right).
    """
    n = winners.shape[0]
    t = torch.randint(0, len(ac), (n,))
    noise = torch.randn_like(winners)
    a = ac[t].view(-1, 1, 1, 1)
    x0 = torch.cat([winners, losers])
    eps, tt, a2 = torch.cat([noise, noise]), torch.cat([t, t]), torch.cat([a, a])
    x_t = a2.sqrt() * x0 + (1 - a2).sqrt() * eps
    target = a2.sqrt() * eps - (1 - a2).sqrt() * x0
    ids2 = torch.cat([ids, ids])
    mult2 = torch.cat([multipliers, multipliers])
    err = (unet(x_t, tt, encode_context(te, ids2, mult2)) - target).pow(2).mean(dim=(1, 2, 3))
    with torch.no_grad():
        ref = (ref_unet(x_t, tt, encode_context(ref_te, ids2, mult2)) - target).pow(2).mean(dim=(1, 2, 3))
    inside = -0.5 * beta * ((err[:n] - ref[:n]) - (err[n:] - ref[n:]))
    return -F.logsigmoid(inside).mean(), (inside > 0).float().mean()


def export_config(path: Path) -> LdmConfig:
    """The model config an exported checkpoint was written with (a deepened file has more res blocks)."""
    from .ldm_weights import read_config

    try:
        return read_config(path)[0]
    except ValueError as e:
        raise SystemExit(str(e)) from e


def init_from_export(
    path: Path, te: ClipTextModel, unet: LdmUNet, cfg: LdmConfig, ema: list[torch.Tensor], params: list
) -> tuple[int, float]:
    """Loads an exported checkpoint (its EMA weights, fp16) into the live and EMA weights; (steps, minutes) it had.

    Only the exported file outlives a machine, so a later run fine-tunes from it; the optimiser starts afresh.
    """
    from .ldm_weights import load_ldm_toyworld

    src_te, src_unet, src_cfg, info = load_ldm_toyworld(path)
    if src_cfg.to_dict() != cfg.to_dict():
        raise SystemExit(f"{path}: its model config differs from the run's ({src_cfg.to_dict()} vs {cfg.to_dict()})")
    te.load_state_dict(src_te.state_dict())
    unet.load_state_dict(src_unet.state_dict())
    with torch.no_grad():
        for e, p in zip(ema, params, strict=True):
            e.copy_(p.detach())
    return int(info.get("steps", 0)), float(info.get("minutes", 0.0))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=75.0)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "lib_ext/toyworld/weights/toyworld-sd1.safetensors")
    ap.add_argument("--ckpt", type=Path, default=REPO_ROOT / "work/ldm/ckpt.pt")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--anneal-from", type=int, default=0)
    ap.add_argument("--attn-weight", type=float, default=0.05)
    ap.add_argument(
        "--reverse-attn",
        type=float,
        default=0.0,
        help="weight of KL(word attention ‖ mask), which charges a word's attention on a second place",
    )
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--emphasis-prob", type=float, default=0.0, help="share of captions with one word emphasised")
    ap.add_argument(
        "--similar-pairs", type=float, default=0.0, help="share of scenes redrawn until 2 objects share a word"
    )
    ap.add_argument(
        "--long-prompts", type=float, default=0.0, help="share of two-chunk steps laid out as one long prompt"
    )
    ap.add_argument("--synonyms", type=float, default=0.2, help="chance that a word with synonyms takes one")
    ap.add_argument("--two-chunks", type=float, default=0.125, help="share of steps on two 77-token chunks")
    ap.add_argument("--gap", type=int, default=1, help="least background pixels between two objects of a scene")
    ap.add_argument(
        "--same-colour", type=float, default=0.0, help="share of the --similar-pairs redraws that share a colour"
    )
    ap.add_argument("--high-noise", type=float, default=0.0, help="share of timesteps drawn from --high-noise-from up")
    ap.add_argument("--high-noise-from", type=int, default=600, help="first timestep of the --high-noise draws")
    ap.add_argument(
        "--input-perturbation",
        type=float,
        default=0.0,
        help="γ: the noised input takes ε + γ·ξ, the target keeps ε (Ning et al. 2023, against exposure bias)",
    )
    ap.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from an exported checkpoint's weights (a new optimiser; steps and minutes carry on)",
    )
    ap.add_argument(
        "--dpo-pairs",
        type=Path,
        default=None,
        help="pairs from `own_samples` (.npz): adds Diffusion-DPO, the model's own picture drawn right preferred",
    )
    ap.add_argument("--dpo-weight", type=float, default=1.0, help="weight of the DPO loss beside the others")
    ap.add_argument("--dpo-beta", type=float, default=2000.0, help="DPO's β (Wallace et al. use 5000 for SD1.5)")
    ap.add_argument("--dpo-batch", type=int, default=8, help="pairs per step")
    ap.add_argument(
        "--dpo-reference",
        type=Path,
        default=None,
        help="the frozen reference model (an exported checkpoint); defaults to --init-from",
    )
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--export-only", action="store_true")
    args = ap.parse_args(argv)
    if not 0.0 <= args.two_chunks <= 1.0:
        ap.error(f"--two-chunks is a share of the steps, between 0 and 1 (got {args.two_chunks})")
    if args.gap < 1:
        ap.error(f"--gap is at least one background pixel (got {args.gap})")
    if not 0.0 <= args.same_colour <= 1.0:
        ap.error(f"--same-colour is a share of the redraws, between 0 and 1 (got {args.same_colour})")
    if not 0.0 <= args.high_noise <= 1.0:
        ap.error(f"--high-noise is a share of the timesteps, between 0 and 1 (got {args.high_noise})")
    if not 0 <= args.high_noise_from < NUM_TIMESTEPS:
        ap.error(f"--high-noise-from is a timestep, 0 to {NUM_TIMESTEPS - 1} (got {args.high_noise_from})")
    if not 0.0 <= args.input_perturbation < math.inf:  # NaN fails this too
        ap.error(f"--input-perturbation is a finite noise scale, at least 0 (got {args.input_perturbation})")
    if not 0.0 <= args.reverse_attn < math.inf:
        ap.error(f"--reverse-attn is a finite loss weight, at least 0 (got {args.reverse_attn})")
    if args.dpo_pairs is not None:
        if not (0.0 < args.dpo_weight < math.inf and 0.0 < args.dpo_beta < math.inf):
            ap.error(f"--dpo-weight and --dpo-beta are finite and above 0 (got {args.dpo_weight}, {args.dpo_beta})")
        if args.dpo_batch < 1:
            ap.error(f"--dpo-batch is at least one pair (got {args.dpo_batch})")
        args.dpo_reference = args.dpo_reference or args.init_from
        if args.dpo_reference is None:
            ap.error("--dpo-pairs needs a reference model: --init-from, or --dpo-reference when resuming")
    if args.init_from is not None and (args.resume or args.export_only):
        ap.error("--init-from starts a new run; it does not go with --resume or --export-only")
    torch.set_num_threads(args.threads)
    log_path = args.ckpt.with_suffix(".csv")

    # The architecture is the code's default, or that of the file a run continues (`deepen` adds res blocks).
    cfg = LdmConfig()
    continuing = (args.resume or args.export_only) and args.ckpt.exists()
    ck = torch.load(args.ckpt, map_location="cpu") if continuing else None
    if ck is not None:
        saved = {**ck["config"], "prediction": cfg.prediction}  # a key missing from an old state still differs
        if {k: v for k, v in saved.items() if k != "num_res_blocks"} != {
            k: v for k, v in cfg.to_dict().items() if k != "num_res_blocks"
        }:
            raise SystemExit("checkpoint config differs from this code's model config")
        cfg = LdmConfig.from_dict(saved)
    elif args.init_from is not None:
        cfg = export_config(args.init_from)
    tok = ClipTokenizer()
    torch.manual_seed(args.seed)
    te, unet = ClipTextModel(cfg), LdmUNet(cfg)
    params = list(te.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ema = [p.detach().clone() for p in params]
    rng = np.random.default_rng(args.seed)
    step, minutes_before = 0, 0.0
    warmup_from = 0  # a fresh optimiser warms up from its first step (Adam's first steps are full-size)
    if ck is not None:
        if ck["config"].get("prediction", "eps") != cfg.prediction:
            print(f"continuing an {ck['config'].get('prediction', 'eps')}-model with the {cfg.prediction} objective")
        te.load_state_dict(ck["text_encoder"])
        unet.load_state_dict(ck["unet"])
        opt.load_state_dict(ck["opt"])
        for e, v in zip(ema, ck["ema"]):
            e.copy_(v)
        rng.bit_generator.state = ck["numpy_rng"]
        torch.set_rng_state(ck["torch_rng"])
        step, minutes_before = ck["step"], ck["minutes"]
        warmup_from = int(ck.get("warmup_from", 0))
        print(f"resumed at step {step} after {minutes_before:.1f} min", flush=True)
    else:
        if log_path.exists():
            log_path.unlink()
        if args.init_from is not None:
            step, minutes_before = init_from_export(args.init_from, te, unet, cfg, ema, params)
            warmup_from = step
            print(f"starting from {args.init_from} at step {step} after {minutes_before:.1f} min", flush=True)

    def info() -> dict:
        return {
            "steps": step,
            "minutes": round(minutes_before + (time.time() - t_start) / 60.0, 1),
            "seed": args.seed,
            "batch": args.batch,
            "lr": args.lr,
            "anneal_from": args.anneal_from,
            "attn_weight": args.attn_weight,
            "ema": args.ema,
            "emphasis_prob": args.emphasis_prob,
            "similar_pairs": args.similar_pairs,
            "long_prompts": args.long_prompts,
            "synonyms": args.synonyms,
            "two_chunks": args.two_chunks,
            "gap": args.gap,
            **({"same_colour": args.same_colour} if args.same_colour else {}),
            **({"high_noise": args.high_noise, "high_noise_from": args.high_noise_from} if args.high_noise else {}),
            **({"input_perturbation": args.input_perturbation} if args.input_perturbation else {}),
            **({"reverse_attn": args.reverse_attn} if args.reverse_attn else {}),
            **(
                {
                    "dpo_pairs": args.dpo_pairs.name,
                    "dpo_weight": args.dpo_weight,
                    "dpo_beta": args.dpo_beta,
                    "dpo_batch": args.dpo_batch,
                    "dpo_reference": args.dpo_reference.name,
                }
                if args.dpo_pairs is not None
                else {}
            ),
            **({"warmup_from": warmup_from} if warmup_from else {}),
            **({"init_from": args.init_from.name} if args.init_from is not None else {}),
        }

    def export() -> None:
        live = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e)
        export_checkpoint_file(args.out, te, unet, cfg, info())
        with torch.no_grad():
            for p, v in zip(params, live):
                p.copy_(v)

    t_start = time.time()
    if args.export_only:
        export()
        print(f"wrote {args.out}")
        return

    def save_ckpt() -> None:
        ck = {
            "config": cfg.to_dict(),
            "text_encoder": te.state_dict(),
            "unet": unet.state_dict(),
            "opt": opt.state_dict(),
            "ema": [e.clone() for e in ema],
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "step": step,
            "warmup_from": warmup_from,
            "minutes": minutes_before + (time.time() - t_start) / 60.0,
            "args": {k: str(v) for k, v in vars(args).items()},
        }
        args.ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.ckpt.with_suffix(".tmp")
        torch.save(ck, tmp)
        os.replace(tmp, args.ckpt)

    ac = alphas_cumprod()
    pairs, ref_te, ref_unet = None, None, None
    if args.dpo_pairs is not None:
        from .ldm_weights import load_ldm_toyworld

        try:
            pairs = PreferencePairs.load(args.dpo_pairs, tok)
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"--dpo-pairs {args.dpo_pairs}: {e}") from e
        ref_te, ref_unet, ref_cfg, _ = load_ldm_toyworld(args.dpo_reference)
        if ref_cfg.to_dict() != cfg.to_dict():
            raise SystemExit(f"--dpo-reference {args.dpo_reference}: its model config differs from the run's")
        for module in (ref_te, ref_unet):
            module.eval().requires_grad_(False)
        print(f"DPO on {len(pairs.ids)} pairs from {args.dpo_pairs}", flush=True)
    set_store_probs(unet, args.attn_weight > 0 or args.reverse_attn > 0)
    te.train()
    unet.train()
    args.ckpt.parent.mkdir(parents=True, exist_ok=True)
    if not log_path.exists():
        log_path.write_text("step,minutes,loss,mse,attn_kl,lr,attn_rkl,dpo,dpo_order\n")
    last_ckpt = time.time()
    acc, acc_n = np.zeros(6), 0
    while not (args.max_steps and step >= args.max_steps) and (time.time() - t_start) / 60.0 < args.minutes:
        size = 48 if step % 10 == 9 else 32
        two = two_chunk_step(step, args.two_chunks)
        n = args.batch if size == 32 else args.batch // 2
        # by keyword, so a missing option shows (--gap once reached only the metadata, not the batches)
        batch = make_batch(
            rng,
            n,
            tok,
            size,
            two,
            emphasis_prob=args.emphasis_prob,
            similar_pairs=args.similar_pairs,
            long_prompts=args.long_prompts,
            synonyms=args.synonyms,
            gap=args.gap,
            same_colour=args.same_colour,
        )
        t = draw_timesteps(batch.latents.shape[0], len(ac), args.high_noise, args.high_noise_from)
        noise = torch.randn_like(batch.latents)
        a = ac[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * batch.latents + (1 - a).sqrt() * perturbed(noise, args.input_perturbation)
        lr = learning_rate(args.lr, step, args.warmup, args.anneal_from, args.max_steps, warmup_from)
        for g in opt.param_groups:
            g["lr"] = lr
        out = unet(x_t, t, encode_context(te, batch.ids, batch.multipliers))
        # ldm's targets: ε, or v = √ᾱ·ε − √(1−ᾱ)·x0 (`get_v`)
        target = noise if cfg.prediction == "eps" else a.sqrt() * noise - (1 - a).sqrt() * batch.latents
        mse = F.mse_loss(out, target)
        attn = attention_loss(unet, batch) if args.attn_weight > 0 else torch.zeros(())
        rev = reverse_attention_loss(unet, batch) if args.reverse_attn > 0 else torch.zeros(())
        loss = mse + args.attn_weight * attn + args.reverse_attn * rev
        dpo, order = torch.zeros(()), torch.zeros(())
        if pairs is not None:
            # after the attention terms: this forward overwrites the maps they read
            winners, losers, ids, mults = pairs.draw(rng, args.dpo_batch)
            dpo, order = dpo_loss(te, unet, ref_te, ref_unet, winners, losers, ids, mults, args.dpo_beta, ac)
            loss = loss + args.dpo_weight * dpo
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        acc += (loss.item(), mse.item(), attn.item(), rev.item(), dpo.item(), order.item())
        acc_n += 1
        if step % 25 == 0:
            m = acc / acc_n
            minutes = minutes_before + (time.time() - t_start) / 60.0
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow(
                    [step, f"{minutes:.2f}", f"{m[0]:.5f}", f"{m[1]:.5f}", f"{m[2]:.5f}", f"{lr:.2e}", f"{m[3]:.5f}",
                     f"{m[4]:.5f}", f"{m[5]:.3f}"]
                )  # fmt: skip
            rkl = f" rkl {m[3]:.4f}" if args.reverse_attn > 0 else ""
            rkl += f" dpo {m[4]:.4f} ordered {m[5]:.2f}" if pairs is not None else ""
            print(f"step {step} min {minutes:.1f} loss {m[0]:.4f} mse {m[1]:.4f} attn {m[2]:.4f}{rkl}", flush=True)
            acc[:], acc_n = 0, 0
        if time.time() - last_ckpt >= args.ckpt_minutes * 60:
            save_ckpt()
            export()
            last_ckpt = time.time()
    save_ckpt()
    export()
    print(json.dumps(info()), flush=True)


if __name__ == "__main__":
    main()
