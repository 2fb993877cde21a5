"""A Neo-style generation on top of the doubles: the A1111 double's models and prompt parser (Neo keeps them),
the `fake_neo` backend (UnetPatcher, KModel, Neo's CFG path) and a sampler whose denoiser follows Neo's
`CFGDenoiser.forward` (reconstruct the batch, then `sampling_function`)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

FAKE_NEO = str(Path(__file__).resolve().parent / "fake_neo")
NEO_PACKAGES = ("backend", "modules_forge")


def mount() -> None:
    if FAKE_NEO not in sys.path:
        sys.path.insert(0, FAKE_NEO)


def unmount() -> None:
    while FAKE_NEO in sys.path:
        sys.path.remove(FAKE_NEO)
    ours = (*NEO_PACKAGES, "promptscope_adapter", "promptscope_forge")
    for name in [n for n in sys.modules if n.split(".")[0] in ours]:
        del sys.modules[name]


class ForgeObjects:
    def __init__(self, unet: Any) -> None:
        self.unet = unet

    def shallow_copy(self) -> ForgeObjects:
        return ForgeObjects(self.unet)


class NeoModel:
    """`p.sd_model` as Neo has it: forge_objects (reset before every pass), conditioning, text engine."""

    def __init__(self, a1111_model: Any) -> None:
        from backend.patcher.unet import KModel, UnetPatcher

        self.inner = a1111_model
        self.is_sdxl = bool(getattr(a1111_model, "is_sdxl", False))
        self.forge_objects_after_applying_lora = ForgeObjects(UnetPatcher(KModel(a1111_model.model.diffusion_model)))
        self.forge_objects = self.forge_objects_after_applying_lora.shallow_copy()
        engine = getattr(a1111_model, "cond_stage_model", None)
        self.text_processing_engine = engine

    def get_learned_conditioning(self, prompts: list[str]) -> Any:
        return self.inner.get_learned_conditioning(prompts)


class Denoiser:
    """Neo's CFGDenoiser.forward, reduced: reconstruct rows, call `sampling_function`, count the step."""

    def __init__(self, p: Any, model: NeoModel) -> None:
        self.p = p
        self.step = 0
        self.total_steps = 0
        self.inner_model = SimpleNamespace(inner_model=model)

    def forward(self, x, sigma, uncond, cond, cond_scale):
        from backend.sampling.sampling_function import sampling_function
        from modules import prompt_parser

        composition, cond_t = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond_t = prompt_parser.reconstruct_cond_batch(uncond, self.step)
        params = SimpleNamespace(x=x, sigma=sigma, text_cond=cond_t, text_uncond=uncond_t)
        if self.p.is_hr_pass:
            cond_scale = self.p.hr_cfg
        denoised, _c, _u = sampling_function(self, params, cond_scale, composition)
        self.step += 1
        return denoised


class Sampler:
    def __init__(self, p: Any, model: NeoModel, fail_at_step: int | None = None) -> None:
        self.model_wrap_cfg = Denoiser(p, model)
        self.fail_at_step = fail_at_step

    def _euler(self, p: Any, x: torch.Tensor, cond: Any, uncond: Any, steps: int, start: float) -> torch.Tensor:
        sigmas = [*torch.linspace(start, 0.2, steps).tolist(), 0.0]
        d = self.model_wrap_cfg
        d.step, d.total_steps = 0, steps
        for i in range(steps):
            if self.fail_at_step == i:
                raise RuntimeError("sampling failed mid-way (test)")
            sigma = torch.full((x.shape[0],), sigmas[i])
            denoised = d.forward(x, sigma, uncond, cond, p.cfg_scale)
            x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        return x

    def sample(self, p, x, conditioning, unconditional_conditioning, image_conditioning=None):
        return self._euler(p, x * 8.0, conditioning, unconditional_conditioning, p.steps, 8.0)

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, **_kw):
        return self._euler(p, x + noise * 2.0, conditioning, unconditional_conditioning, steps or p.steps, 2.0)


class P:
    """The processing object's fields the glue reads."""

    def __init__(self, model: NeoModel, prompts: list[str], negatives: list[str], steps: int, cfg_scale: float):
        self.sd_model = model
        self.prompts = list(prompts)
        self.all_prompts = list(prompts)
        self.negative_prompts = list(negatives)
        self.seeds = list(range(1, len(prompts) + 1))
        self.batch_size = len(prompts)
        self.iteration = 0
        self.steps = steps
        self.cfg_scale = cfg_scale
        self.hr_cfg = cfg_scale
        self.is_hr_pass = False
        self.width = self.height = 64
        self.extra_generation_params: dict[str, Any] = {}
        self.comments: list[str] = []
        self.sampler: Sampler | None = None

    def comment(self, text: str) -> None:
        self.comments.append(text)


def generate(
    m: Any,
    model: NeoModel,
    prompts: list[str],
    features: tuple[Any, ...] = (),
    *,
    steps: int = 3,
    cfg_scale: float = 7.0,
    before_sampling: tuple[Any, ...] = (),
    fail_at_step: int | None = None,
    hires: bool = False,
    latent: torch.Tensor | None = None,
) -> tuple[torch.Tensor, P]:
    """One batch the way Neo's processing runs it: process → process_batch (prompt rewrite) → setup conds →
    reset forge_objects → process_before_every_sampling (other scripts first, then ours) → sampler.sample."""
    from promptscope_a1111.host import rewrite_batch_prompts
    from promptscope_a1111.sampling import activate
    from promptscope_forge.sampling import prepare_sampling

    p = P(model, prompts, ["ugly"] * len(prompts), steps, cfg_scale)
    if hires:  # Neo slices the batch's hires prompts before process_batch (parse_extra_network_prompts)
        p.all_hr_prompts, p.hr_prompts = list(prompts), list(prompts)
    for feature in features:
        activate(p, feature)
        if hasattr(feature, "rewrite_prompts"):
            rewrite_batch_prompts(p, feature.rewrite_prompts)
    c = m.prompt_parser.get_multicond_learned_conditioning(model.inner, p.hr_prompts if hires else p.prompts, steps)
    uc = m.prompt_parser.get_learned_conditioning(model.inner, p.negative_prompts, steps)
    model.forge_objects = model.forge_objects_after_applying_lora.shallow_copy()
    p.sampler = Sampler(p, model, fail_at_step)
    for hook in before_sampling:
        hook(p)
    prepare_sampling(p)
    gen = torch.Generator().manual_seed(1234)
    size = 8
    x = torch.randn(len(prompts), 4, size, size, generator=gen) if latent is None else latent.clone()
    if hires:
        p.is_hr_pass = True
        noise = torch.randn(x.shape, generator=gen)
        return p.sampler.sample_img2img(p, x, noise, c, uc), p
    return p.sampler.sample(p, x, c, uc), p


def guided_and_recomputed(m: Any, model: NeoModel, prompts: list[str], cond_scale: float = 7.0):
    """The first guided denoiser output of a 2-step run through the Forge glue, and lib_ext's `combine` recomputed
    from rows computed one UNet call each: (guided, expected, rows), for the host test and `bench forge_neo`."""
    from promptscope_lib_ext.guidance.combine import combine
    from promptscope_lib_ext.guidance.feature import GuidanceFeature, prepare_prompts
    from promptscope_lib_ext.guidance.state import GuidanceState
    from promptscope_lib_ext.guidance.step import GuidanceStep
    from promptscope_lib_ext.prompt_multicond import split_and

    seen: dict[str, Any] = {}
    original = Denoiser.forward

    def spy(self, x, sigma, uncond, cond, scale):
        out = original(self, x, sigma, uncond, cond, scale)
        seen.setdefault("first", (x.clone(), sigma.clone(), out.clone()))
        return out

    Denoiser.forward = spy
    try:
        feature = GuidanceFeature()
        generate(m, model, prompts, (feature,), steps=2)
    finally:
        Denoiser.forward = original
    x, sigma, guided = seen["first"]
    prepared = prepare_prompts(prompts)
    split = split_and(prepared.host_prompts[0])
    kmodel = model.forge_objects_after_applying_lora.unet.model
    rows = []
    with torch.no_grad():
        for text in [*(t for t, _w in split), "ugly"]:
            ctx = model.get_learned_conditioning([text])
            extra = {"y": ctx["vector"]} if isinstance(ctx, dict) else {}
            context = ctx["crossattn"] if isinstance(ctx, dict) else ctx
            rows.append(kmodel.apply_model(x, sigma, c_crossattn=context, **extra))
    step = GuidanceStep(
        x_out=torch.cat(rows),
        x_in=x.repeat(len(rows), 1, 1, 1),
        sigma=sigma,
        conds_list=[[(j, w) for j, (_t, w) in enumerate(split)]],
        cond_scale=cond_scale,
        step=0,
        total_steps=2,
        prediction="x0",
    )
    expected = combine(step, prepared.trees, feature.settings, GuidanceState())
    return guided, expected, torch.cat(rows)
