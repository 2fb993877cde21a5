"""The standalone host: the seam's `Host` on the toy model, with A1111 v1.10.1's txt2img semantics.

What a feature sees is what it would see in A1111:
- prompts split on `AND` into weighted sub-prompts (`get_multicond_prompt_list`; identical sub-prompts encoded
  once), rows laid out as A1111's `reconstruct_multicond_batch`, the negative prompt as each image's uncond row;
- prompts chunked by 75 tokens with `BREAK` and emphasis (`conditioning.py`), cond/uncond of different lengths
  padded with the empty prompt's chunk (`pad_cond_uncond`), one UNet forward per step;
- seeds 0 ≤ seed < 2**32 (−1 random), image i of a batch uses seed + i, per-image CPU generators (`sampling.py`);
- Euler, Euler a, DPM++ 2M (x0 predictions) and DDIM (eps), each call inside one `SamplingSession`;
- an interrupt stops at the next denoiser step and returns the last x0 prediction, like A1111's `launch_sampling`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..prompt_multicond import get_multicond_prompt_list
from ..seam import (
    Feature,
    GenerationRequest,
    GenerationResult,
    JobInfo,
    Progress,
    PromptTokens,
)
from ..session import SamplingSession
from . import sampling
from .cfg_denoiser import Interrupted, MulticondBatch, ToyCFGDenoiser, stack_conds
from .clip_bpe import ClipTokenizer
from .clip_conditioning import ClipConditioner
from .conditioning import ToyConditioner
from .infotext import create_infotext
from .ldm_model import pixels_from_latent
from .schedule import alphas_cumprod
from .tokenizer import ToyTokenizer

log = logging.getLogger("promptscope")

SAMPLER_NAMES: tuple[str, ...] = tuple(sampling.SAMPLERS)
DEFAULT_SAMPLER = "DPM++ 2M"  # A1111 v1.10.1's default
# The shipped weights' best setting on held-out captions (MODEL_CARD.md, `python -m bench toyworld_samplers`): what
# the app offers first and `bench toyworld` reports at.
BEST_SAMPLER, BEST_CFG = "Euler a", 3.0
IMAGE_SIZE = 32
EXTRA_PARAMS_KEY = "extra_generation_params"  # JobInfo.extra[...]: a dict features may add infotext keys to


@dataclass(frozen=True)
class Hires:
    """A1111's hires fix with the "Latent" upscaler: bilinear latent upscale, then img2img at the new size with
    `steps` (0: the first pass's) of the int(steps / strength)-step schedule."""

    scale: float = 1.5
    denoising_strength: float = 0.5
    steps: int = 0

    def infotext(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Denoising strength": self.denoising_strength, "Hires upscale": self.scale}
        if self.steps:
            out["Hires steps"] = self.steps
        out["Hires upscaler"] = "Latent"
        return out


@dataclass
class ToyProcessed:
    """A finished txt2img call, like A1111's `Processed`: the generated images first, then attached ones."""

    images: list[Any]  # PIL images
    infotexts: list[str]
    seeds: list[int]
    prompts: list[str]
    negative_prompts: list[str]
    settings: dict[str, Any]
    extra_generation_params: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    interrupted: bool = False
    n_generated: int = 0
    samples: torch.Tensor | None = None  # (B, 3, 32, 32) in [-1, 1], before conversion to 8 bits

    @property
    def info(self) -> str:
        return self.infotexts[0] if self.infotexts else ""


def to_pil(samples: torch.Tensor) -> list[Any]:
    """[-1, 1] pixels → 8-bit images, truncating as A1111 does (`255 * clamp((x + 1) / 2)` cast to uint8)."""
    from PIL import Image

    x = torch.clamp((torch.nan_to_num(samples.detach().float().cpu()) + 1.0) / 2.0, 0.0, 1.0)
    arr = (255.0 * np.moveaxis(x.numpy(), 1, 3)).astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


def rewrite_prompts(features: Sequence[Feature], prompts: Sequence[str]) -> list[str]:
    """The prompts the cond rows are computed from: a feature may rewrite them (`rewrite_prompts`, e.g. semantic
    guidance flattening its grammar into one sub-prompt per leaf); `JobInfo.prompts` keeps what the user typed."""
    out = list(prompts)
    for feature in features:
        rewrite = getattr(feature, "rewrite_prompts", None)
        if rewrite is not None:
            out = list(rewrite(out))
    return out


class ToyHost:
    """`Host` of the seam on the toy text-to-image model (see the module docstring for the semantics)."""

    name = "toyworld"

    def __init__(
        self,
        text_encoder: torch.nn.Module,
        unet: torch.nn.Module,
        tokenizer: ToyTokenizer,
        *,
        model_name: str = "toyworld",
        device: str | torch.device = "cpu",
        outdir: str | Path | None = None,
        latent_channels: int = 3,
        pixel_scale: int = 1,
        prediction: str = "eps",
    ) -> None:
        """`latent_channels`/`pixel_scale`: 3 and 1 for the word-level pixel model; 4 and 8 for the SD1 checkpoint,
        whose 32×32 latent is the picture (channels 0–2) and whose images are 256×256 (each latent pixel 8×8)."""
        self.text_encoder = text_encoder.eval()
        self.unet = unet.eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.device = torch.device(device)
        self.outdir = Path(outdir) if outdir is not None else None
        self.latent_channels = latent_channels
        self.pixel_scale = pixel_scale
        self.image_size = IMAGE_SIZE * pixel_scale
        self.conditioner: ToyConditioner = (
            ClipConditioner(text_encoder, tokenizer)
            if isinstance(tokenizer, ClipTokenizer)
            else ToyConditioner(text_encoder, tokenizer)
        )
        self.alphas_cumprod = alphas_cumprod().to(self.device)
        # ε- or v-prediction (the SD1 checkpoint's yaml says which), wrapped as A1111 wraps each
        denoiser = sampling.DiscreteVDenoiser if prediction == "v" else sampling.DiscreteEpsDenoiser
        self.sigma_denoiser = denoiser(self._model_fn, self.alphas_cumprod)
        self.timestep_denoiser = sampling.TimestepsEpsDenoiser(self._model_fn, self.alphas_cumprod, prediction)
        self._interrupted = False
        self._depth = 0
        self._lock = threading.RLock()
        self.unet_calls = 0  # UNet forwards so far (tests check one forward per step with it)

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        device: str | torch.device = "cpu",
        *,
        allow_random: bool = True,
        outdir: str | Path | None = None,
    ) -> ToyHost:
        """The shipped weights (or `path`: the word-level model's file or the SD1 checkpoint, told apart by their
        metadata); without them (and `allow_random`) a randomly initialised model, named so."""
        from .ldm_weights import is_sd1_checkpoint
        from .weights import DEFAULT_WEIGHTS, load_toyworld

        weights = Path(path) if path is not None else DEFAULT_WEIGHTS
        if weights.exists() and is_sd1_checkpoint(weights):
            return cls.load_sd1(weights, device=device, outdir=outdir)
        if weights.exists():
            te, unet, tok, _cfg = load_toyworld(weights, device=device)
            return cls(te, unet, tok, model_name="toyworld", device=device, outdir=outdir)
        if not allow_random:
            raise FileNotFoundError(f"toy-world weights not found at {weights}")
        log.warning("PromptScope: %s not found; using an untrained toy model (images will be noise)", weights)
        return cls.random(device=device, outdir=outdir)

    @classmethod
    def load_sd1(
        cls, path: str | Path | None = None, device: str | torch.device = "cpu", outdir: str | Path | None = None
    ) -> ToyHost:
        """The toy world's SD1-format checkpoint (`ldm_weights.py`), the file the WebUI loads."""
        from .ldm_weights import DEFAULT_LDM_WEIGHTS, load_ldm_toyworld

        te, unet, cfg, _info = load_ldm_toyworld(path or DEFAULT_LDM_WEIGHTS, device=device)
        name = Path(path or DEFAULT_LDM_WEIGHTS).stem
        return cls(te, unet, ClipTokenizer(), model_name=name, device=device, outdir=outdir, latent_channels=4,
                   pixel_scale=8, prediction=cfg.prediction)  # fmt: skip

    @classmethod
    def random(cls, seed: int = 0, device: str | torch.device = "cpu", outdir: str | Path | None = None) -> ToyHost:
        from .model import ToyConfig, ToyTextEncoder, ToyUNet

        tok = ToyTokenizer()
        cfg = ToyConfig(vocab_size=tok.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            te, unet = ToyTextEncoder(cfg), ToyUNet(cfg)
        return cls(te.to(device), unet.to(device), tok, model_name="toyworld-untrained", device=device, outdir=outdir)

    # -- seam: prompts ----------------------------------------------------------------------------------------
    def tokenize(self, prompt: str) -> PromptTokens:
        return self.conditioner.prompt_tokens(prompt)

    def encode(self, text: str) -> torch.Tensor:
        """One prompt's encoder context (77·k, D), emphasis applied."""
        return self.conditioner.encode(text)

    # -- interrupt ------------------------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Stop the running generation at its next denoiser step, and any remaining jobs."""
        self._interrupted = True

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    @contextlib.contextmanager
    def _job(self) -> Iterator[None]:
        """The outermost call clears the interrupt flag at its start (A1111's `state.begin`)."""
        with self._lock:
            if self._depth == 0:
                self._interrupted = False
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1

    # -- conditioning ---------------------------------------------------------------------------------------
    def _model_fn(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.unet_calls += 1
        return self.unet(x, t, context)

    def multicond(self, prompts: Sequence[str]) -> MulticondBatch:
        """A1111's `get_multicond_learned_conditioning` + `reconstruct_multicond_batch` for one batch."""
        res_indexes, flat, _ = get_multicond_prompt_list(prompts)
        encoded = [self.encode(text) for text in flat]
        tensors, conds_list = [], []
        for indexes in res_indexes:
            per_image = []
            for index, weight in indexes:
                per_image.append((len(tensors), weight))
                tensors.append(encoded[index])
            conds_list.append(per_image)
        return MulticondBatch(stack_conds(tensors).to(self.device), conds_list)

    def uncond(self, negative_prompts: Sequence[str]) -> torch.Tensor:
        """One row per image; identical negative prompts encoded once."""
        cache: dict[str, torch.Tensor] = {}
        for n in negative_prompts:
            if n not in cache:
                cache[n] = self.encode(n)
        rows = [cache[n] for n in negative_prompts]
        return stack_conds(rows).to(self.device)

    # -- txt2img --------------------------------------------------------------------------------------------
    def txt2img(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] = "",
        seed: int = -1,
        steps: int = 20,
        cfg_scale: float = 7.0,
        sampler_name: str = DEFAULT_SAMPLER,
        batch_size: int = 1,
        width: int | None = None,
        height: int | None = None,
        features: Sequence[Feature] = (),
        progress: Progress | None = None,
        extra_generation_params: Mapping[str, Any] | None = None,
        hires: Hires | None = None,
    ) -> ToyProcessed:
        """Generate one batch. Raises ValueError on settings the toy model cannot honour. `hires`: a second pass
        (the SD1 checkpoint only: its latent can be upscaled; images come out scale × 256 pixels)."""
        size = self.image_size
        if (width or size) != size or (height or size) != size:
            raise ValueError(f"the toy model draws {size}x{size} images, not {width}x{height}")
        if sampler_name not in sampling.SAMPLERS:
            raise ValueError(f"unknown sampler {sampler_name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
        steps, batch_size = int(steps), int(batch_size)
        if steps < 1 or batch_size < 1:
            raise ValueError("steps and batch size must be at least 1")
        prompts = [prompt] * batch_size if isinstance(prompt, str) else list(prompt)
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negatives) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(negatives)} negative prompts")
        seed = sampling.fix_seed(seed)
        seeds = sampling.batch_seeds(seed, len(prompts))
        extra: dict[str, Any] = dict(extra_generation_params or {})
        settings = {"steps": steps, "cfg_scale": float(cfg_scale), "sampler_name": sampler_name}
        hr_size = IMAGE_SIZE
        if hires is not None:
            if self.pixel_scale == 1:
                raise ValueError("the word-level toy model has no hires pass (it draws 32x32 pixels)")
            hr_size = int(self.image_size * hires.scale) // self.pixel_scale
            if hr_size <= IMAGE_SIZE or not 0 < hires.denoising_strength <= 1:
                raise ValueError("hires needs a scale above 1 and a denoising strength in (0, 1]")
            extra.update(hires.infotext())

        with self._job():
            if self._interrupted:  # inside run_jobs after an interrupt: A1111 skips the batch, no images
                samples, interrupted, messages = None, True, ["Interrupted"]
            else:
                samples, interrupted, messages = self._sample(
                    prompts, negatives, seeds, steps, float(cfg_scale), sampler_name, features, progress, extra
                )
                if hires is not None and not interrupted and not self._interrupted:
                    upscaled = torch.nn.functional.interpolate(samples, size=(hr_size, hr_size), mode="bilinear")
                    samples, interrupted, more = self._sample(
                        prompts, negatives, seeds, hires.steps or steps, float(cfg_scale), sampler_name, features,
                        progress, extra, init=upscaled, denoise=hires.denoising_strength,
                    )  # fmt: skip
                    messages += [m for m in more if m not in messages]
        if samples is not None:
            samples = samples[:, :3]  # the picture: the latent's RGB channels (the SD1 checkpoint's 4th is 0)
        images = to_pil(self._pixels(samples)) if samples is not None else []
        processed = ToyProcessed(
            images=images,
            infotexts=[],
            seeds=seeds,
            prompts=prompts,
            negative_prompts=negatives,
            settings=settings,
            extra_generation_params=extra,
            messages=messages,
            interrupted=interrupted,
            n_generated=len(images),
            samples=samples,
        )
        if hires is not None:
            processed.settings["size"] = hr_size * self.pixel_scale
        self._refresh_infotexts(processed)
        return processed

    def _sample(
        self,
        prompts: list[str],
        negatives: list[str],
        seeds: list[int],
        steps: int,
        cfg_scale: float,
        sampler_name: str,
        features: Sequence[Feature],
        progress: Progress | None,
        extra: dict[str, Any],
        init: torch.Tensor | None = None,
        denoise: float = 1.0,
    ) -> tuple[torch.Tensor, bool, list[str]]:
        """One sampling pass: txt2img from noise, or (with `init`, a latent) A1111's hires pass from it."""
        info = sampling.SAMPLERS[sampler_name]
        size = IMAGE_SIZE if init is None else int(init.shape[-1])
        pass_name = "first" if init is None else "hires"
        cond = self.multicond(rewrite_prompts(features, prompts))
        uncond = self.uncond(negatives)
        job = JobInfo(
            prompts=list(prompts),
            negative_prompts=list(negatives),
            seeds=list(seeds),
            pass_name=pass_name,
            width=size * self.pixel_scale,
            height=size * self.pixel_scale,
            steps=steps,
            model_kind="toyworld",
            extra={"iteration": 0, "sampler_name": sampler_name, "cfg_scale": cfg_scale, EXTRA_PARAMS_KEY: extra},
        )
        rng = sampling.ImageRNG((self.latent_channels, size, size), seeds, device=self.device)
        total = info.model_calls(steps)  # a hires pass runs `steps` steps too (the tail of a longer schedule)

        def on_step(done: int, total: int) -> None:
            if progress is not None:
                progress(done, total, f"Step {done}/{total}")

        with SamplingSession(list(features), job, self.unet, cond.layout, self.tokenize) as session:
            denoiser = ToyCFGDenoiser(
                self.timestep_denoiser if info.timesteps else self.sigma_denoiser,
                "eps" if info.timesteps else "x0",
                self.conditioner.empty_prompt().to(self.device),
                total_steps=total,
                sampler_steps=steps,
                pass_name=pass_name,
                session=session,
                job=job,
                should_interrupt=lambda: self._interrupted,
                on_step=on_step,
                alphas_cumprod=self.alphas_cumprod,
            )
            extra_args = {"cond": cond, "uncond": uncond, "cond_scale": cfg_scale}
            interrupted = False
            try:
                with torch.no_grad():
                    if init is None:
                        samples = sampling.sample(
                            sampler_name,
                            denoiser,
                            rng,
                            steps,
                            extra_args=extra_args,
                            alphas_cumprod=self.alphas_cumprod,
                            sigma_denoiser=self.sigma_denoiser,
                        )
                    else:
                        samples = sampling.sample_img2img(
                            sampler_name, denoiser, rng, steps, init, denoise, self.sigma_denoiser, extra_args
                        )
            except Interrupted:
                interrupted = True
                samples = denoiser.last_latent
                if samples is None:  # interrupted before the first step: A1111 returns the initial noise
                    shape = (len(prompts), self.latent_channels, size, size)
                    samples = torch.zeros(shape, device=self.device)
        messages = list(session.ctx.messages) + list(session.errors)
        if interrupted:
            messages.append("Interrupted")
        return samples, interrupted, messages

    def _pixels(self, samples: torch.Tensor) -> torch.Tensor:
        """What the checkpoint's autoencoder decodes (`ldm_model.pixels_from_latent`): each pixel pixel_scale²."""
        return pixels_from_latent(samples, self.pixel_scale)

    # -- results ----------------------------------------------------------------------------------------------
    def _refresh_infotexts(self, processed: ToyProcessed) -> None:
        s = processed.settings
        own = [
            create_infotext(
                processed.prompts[i],
                processed.negative_prompts[i],
                steps=s["steps"],
                sampler_name=s["sampler_name"],
                cfg_scale=s["cfg_scale"],
                seed=processed.seeds[i],
                width=s.get("size", self.image_size),
                height=s.get("size", self.image_size),
                model_name=self.model_name,
                extra=processed.extra_generation_params,
            )
            for i in range(processed.n_generated)
        ]
        processed.infotexts[: processed.n_generated] = own

    def add_infotext(self, processed: ToyProcessed, key: str, value: Any) -> None:
        """Write `key: value` into every generated image's infotext (as `p.extra_generation_params[key]`)."""
        processed.extra_generation_params[key] = value
        self._refresh_infotexts(processed)

    def attach_images(
        self, processed: ToyProcessed, images: Sequence[Any], infotexts: Sequence[str] | None = None
    ) -> None:
        """Show extra images after the generation's own (heatmaps, grids)."""
        texts = list(infotexts) if infotexts is not None else [processed.info] * len(images)
        processed.images.extend(images)
        processed.infotexts.extend(texts)

    def save(self, image: Any, infotext: str, seed: int, outdir: str | Path | None = None) -> Path:
        """Save as PNG with the infotext in the "parameters" text chunk, as A1111 does; returns the path."""
        from PIL import PngImagePlugin

        folder = Path(outdir or self.outdir or "outputs")
        folder.mkdir(parents=True, exist_ok=True)
        n = len(list(folder.glob("*.png")))
        path = folder / f"{n:05d}-{seed}.png"
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", infotext)
        image.save(path, pnginfo=info)
        return path

    # -- seam: jobs -----------------------------------------------------------------------------------------
    def run_jobs(
        self,
        requests: Sequence[GenerationRequest],
        progress: Progress | None = None,
        features: Sequence[Feature] | Callable[[GenerationRequest], Sequence[Feature]] = (),
        postprocess: Callable[[GenerationRequest, ToyProcessed], None] | None = None,
    ) -> list[GenerationResult]:
        """Generate each request (batch of 1) in order; stops early after `interrupt()`.

        `features`: for every request, or a function of the request (a feature only some requests ask for).
        `postprocess(request, processed)` runs after each generation, as A1111's scripts' `postprocess`: images it
        attaches (`attach_images`, e.g. word-heatmap grids) come back in the result's `extra_images`."""
        results: list[GenerationResult] = []
        total = len(requests)
        with self._job():
            for done, req in enumerate(requests):
                if self._interrupted:
                    break
                if progress is not None:
                    progress(done, total, f"Generating {done + 1}/{total}")
                settings = dict(req.settings)
                processed = self.txt2img(
                    req.prompt,
                    req.negative_prompt,
                    seed=req.seed,
                    steps=int(settings.get("steps", 20)),
                    cfg_scale=float(settings.get("cfg_scale", 7.0)),
                    sampler_name=str(settings.get("sampler_name", DEFAULT_SAMPLER)),
                    width=int(settings.get("width", self.image_size)),
                    height=int(settings.get("height", self.image_size)),
                    features=features(req) if callable(features) else features,
                    extra_generation_params=req.infotext,
                )
                if not processed.images:
                    break
                if postprocess is not None:
                    postprocess(req, processed)
                path = None
                if self.outdir is not None:
                    path = str(self.save(processed.images[0], processed.info, processed.seeds[0]))
                n = processed.n_generated
                # An interrupted image is still returned (A1111's process_images keeps it), and nothing after it.
                results.append(
                    GenerationResult(
                        req,
                        processed.images[0],
                        processed.seeds[0],
                        processed.info,
                        path,
                        extra_images=list(processed.images[n:]),
                        extra_infotexts=list(processed.infotexts[n:]),
                    )
                )
        if progress is not None:
            progress(len(results), total, "Done")
        return results


def default_host(device: str = "cpu", outdir: str | Path | None = None) -> ToyHost:
    """The host the app and benches use: shipped weights if present, else an untrained model."""
    return ToyHost.load(device=device, outdir=outdir)
