"""The host seam: what a host (A1111, or the standalone toy-world host) must give PromptScope's features.

Features never see a host object. A host builds the values below from its own state and calls the features'
hooks; the A1111 adapter lives in `promptscope_a1111/`, the standalone host in `lib_ext/toyworld/host.py`.

Batch layout (A1111's CFGDenoiser, kept by both hosts): one UNet batch holds every sub-prompt row of image 0,
then of image 1, ..., then one unconditional (negative-prompt) row per image. `BatchLayout` names that layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import torch

from .patches import PatchSet

Prediction = Literal["x0", "eps"]
PassName = Literal["first", "hires"]


class RowRole(NamedTuple):
    """What one row of a UNet batch is: a sub-prompt of an image, or that image's unconditional row."""

    image: int
    subprompt: int  # index of the sub-prompt in the image's cond list; -1 for the uncond row; FILLER for a filler
    is_uncond: bool

    @property
    def is_filler(self) -> bool:
        """A row run only to keep the batch rectangular (Forge: an image with fewer sub-prompts than another);
        it belongs to no prompt, and no feature reads it."""
        return self.subprompt == FILLER


FILLER = -2


@dataclass(frozen=True)
class BatchLayout:
    """Rows of the batched model output: `conds[i]` lists (row, weight) per sub-prompt of image i, host order."""

    conds: tuple[tuple[tuple[int, float], ...], ...]

    @classmethod
    def from_conds_list(cls, conds_list: Sequence[Sequence[tuple[int, float]]]) -> BatchLayout:
        return cls(tuple(tuple((int(r), float(w)) for r, w in conds) for conds in conds_list))

    @classmethod
    def from_weights(cls, weights: Sequence[Sequence[float]]) -> BatchLayout:
        """Rows numbered consecutively, image by image, as A1111's `reconstruct_multicond_batch` does."""
        rows, n = [], 0
        for ws in weights:
            rows.append(tuple((n + j, float(w)) for j, w in enumerate(ws)))
            n += len(ws)
        return cls(tuple(rows))

    @property
    def n_images(self) -> int:
        return len(self.conds)

    @property
    def n_cond_rows(self) -> int:
        return sum(len(c) for c in self.conds)

    @property
    def n_rows(self) -> int:
        return self.n_cond_rows + self.n_images

    def uncond_row(self, image: int) -> int:
        return self.n_cond_rows + image

    def roles(self, *, with_uncond: bool = True) -> list[RowRole]:
        """Role of every row in host order (rows that share an index, as deduplicated sub-prompts may, keep the
        first image and sub-prompt that names them)."""
        roles: dict[int, RowRole] = {}
        for i, conds in enumerate(self.conds):
            for j, (row, _w) in enumerate(conds):
                roles.setdefault(row, RowRole(i, j, False))
        out = [roles[r] for r in sorted(roles)]
        if with_uncond:
            out += [RowRole(i, -1, True) for i in range(self.n_images)]
        return out


def sampler_step_of(call: int, steps: int, total_calls: int) -> dict[str, int]:
    """`sampler_step` / `sampler_steps` for model call number `call` (from 0) of a sampler that takes `steps` steps
    and is expected to call the model `total_calls` times (A1111's `total_steps`: 2 × steps for second-order samplers,
    whose steps call the model twice, the last one once, since k-diffusion ends with an Euler step to σ = 0).
    Call c belongs to step c // (total_calls // steps). {} when the counts are unknown."""
    if steps <= 0 or total_calls <= 0:
        return {}
    per_step = max(1, total_calls // steps)
    return {"sampler_step": min(max(call, 0) // per_step, steps - 1), "sampler_steps": steps}


@dataclass
class DenoiseStep:
    """One sampling step as the host's CFG denoiser sees it, after the UNet ran and before it combines.

    `x_out` is x0 for k-diffusion samplers and eps for timestep samplers (`prediction` says which); `x_in` holds the
    noisy input row for row; `sigma` is per image (k-diffusion sigma, or the timestep for timestep samplers).
    When the host skipped the unconditional rows (NGMS, skip early CFG) `uncond_skipped` is True and the uncond
    rows of `x_out` are copies of each image's first cond row; the host then combines with `cond_scale` 1.

    `step` / `total_steps` count model calls, as the host's CFG denoiser does (A1111: `denoiser.step`, and
    `total_steps` = 2 × steps for second-order samplers such as Heun, DPM2, DPM++ 2S a, DPM++ SDE). `sampler_step` /
    `sampler_steps`, when the host knows them, count the sampler's own steps (the sampler loop's index `i`; every
    model call of one step shares it), which is what "step" means in the SEGA paper and in diffusers.
    """

    x_in: torch.Tensor
    x_out: torch.Tensor
    sigma: torch.Tensor
    layout: BatchLayout
    cond_scale: float
    step: int
    total_steps: int
    prediction: Prediction
    pass_name: PassName = "first"
    uncond_skipped: bool = False
    job: JobInfo | None = None
    sampler_step: int | None = None
    sampler_steps: int | None = None

    def uncond(self) -> torch.Tensor:
        return self.x_out[-self.layout.n_images :]

    def steps(self) -> tuple[int, int]:
        """(this call's sampler step, the number of sampler steps): the sampler's count when known, else the calls."""
        if self.sampler_step is not None and self.sampler_steps:
            return int(self.sampler_step), int(self.sampler_steps)
        return int(self.step), int(self.total_steps)

    def default_combine(self) -> torch.Tensor:
        """The host's own combination: uncond + Σ w·s·(cond − uncond) per image."""
        uncond = self.uncond()
        out = uncond.clone()
        for i, conds in enumerate(self.layout.conds):
            for row, weight in conds:
                out[i] += (self.x_out[row] - uncond[i]) * (weight * self.cond_scale)
        return out

    def to_eps(self, x0_or_eps: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
        """Express outputs as eps: (x − x0)/σ for x0 predictions, unchanged for eps predictions."""
        if self.prediction == "eps":
            return x0_or_eps
        x = self.x_in if rows is None else self.x_in[list(rows)]
        sig = self._row_sigma(rows)
        return (x - x0_or_eps) / sig

    def from_eps(self, eps: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
        if self.prediction == "eps":
            return eps
        x = self.x_in if rows is None else self.x_in[list(rows)]
        return x - eps * self._row_sigma(rows)

    def _row_sigma(self, rows: Sequence[int] | None) -> torch.Tensor:
        per_row = torch.empty(self.x_in.shape[0], dtype=self.x_in.dtype, device=self.x_in.device)
        for i, conds in enumerate(self.layout.conds):
            for row, _w in conds:
                per_row[row] = self.sigma[i]
            per_row[self.layout.uncond_row(i)] = self.sigma[i]
        sel = per_row if rows is None else per_row[list(rows)]
        return sel.view(-1, *([1] * (self.x_in.dim() - 1)))


class StepHook(Protocol):
    """Called once per denoiser step. Return a tensor to replace the combined prediction, or None to keep it."""

    def __call__(self, step: DenoiseStep) -> torch.Tensor | None: ...


@dataclass(frozen=True)
class TokenPiece:
    """One token position of a prompt chunk, as the host's text encoder sees it."""

    text: str  # the token's text (sub-word), or the embedding's name for textual-inversion vectors
    word_index: int | None  # index of the prompt word it belongs to; None for BREAK padding
    multiplier: float = 1.0  # emphasis
    is_embedding: bool = False


@dataclass(frozen=True)
class PromptTokens:
    """A prompt as the text encoder chunks it: chunks of up to 75 tokens, each wrapped in start/end (77 positions)."""

    prompt: str
    words: tuple[str, ...]
    chunks: tuple[tuple[TokenPiece, ...], ...]
    chunk_length: int = 75

    @property
    def context_length(self) -> int:
        return max(1, len(self.chunks)) * (self.chunk_length + 2)

    def position(self, chunk: int, offset: int) -> int:
        """Index in the encoder's output of token `offset` of chunk `chunk` (after that chunk's start token)."""
        return chunk * (self.chunk_length + 2) + 1 + offset


# JobInfo.extra key: the batch's prompts as typed, before the host removed `<name:…>` extra-network tags
TAGGED_PROMPTS_KEY = "tagged_prompts"


@dataclass
class JobInfo:
    """What is being generated: one sampling call of one batch (first pass or hires pass).

    `prompts` are the user's prompts per image (extra-network tags removed, as the host encodes them);
    `host_prompts`, when a feature rewrote them (semantic guidance flattens its tree into plain `AND`s), are
    what the host computed its cond rows from; `subprompts(i)` gives the text of each of image i's cond rows.
    """

    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    pass_name: PassName = "first"
    width: int = 0
    height: int = 0
    steps: int = 0
    is_img2img: bool = False
    model_kind: str = "sd1"  # "sd1", "sd2", "sdxl", "toyworld"
    extra: dict[str, Any] = field(default_factory=dict)
    host_prompts: list[str] = field(default_factory=list)

    def subprompts(self, image: int) -> list[str]:
        """Texts of image `image`'s cond rows in row order, split as the host splits `AND`."""
        from .prompt_multicond import split_and

        source = self.host_prompts or self.prompts
        if not source:
            return []
        return [text for text, _w in split_and(source[min(image, len(source) - 1)])]


@dataclass
class SamplingContext:
    """Handed to each active feature when a sampling call starts; everything it installs goes into `patches`,
    which the host restores when that call ends, however it ends."""

    job: JobInfo
    patches: PatchSet
    unet: torch.nn.Module
    layout: BatchLayout
    tokenize: Callable[[str], PromptTokens]
    step_hooks: list[StepHook] = field(default_factory=list)
    # Row roles of the UNet call now running (None outside a call). Hosts keep it current; attention capture reads it.
    current_rows: Callable[[], list[RowRole] | None] = lambda: None
    messages: list[str] = field(default_factory=list)  # warnings to show the user after the generation


class Feature(Protocol):
    """A PromptScope feature as the hosts drive it. All methods must be cheap when the feature is off.

    Optional methods a host calls when a feature has them:
    - `rewrite_prompts(prompts, tagged_prompts=None) -> list[str]`: the prompts the host should compute this
      batch's cond rows from (semantic guidance flattens its keywords into plain `AND`s); `tagged_prompts` are the
      same prompts with their extra-network tags, when the host strips those; the user's prompts stay in
      `JobInfo.prompts`.
    - `rebind(ctx)`: the host swapped UNets mid-call (SDXL refiner); `ctx.unet` is the new one.
    """

    name: str

    def begin_sampling(self, ctx: SamplingContext) -> None:
        """Install hooks (through ctx.patches) and step hooks for this sampling call."""

    def end_sampling(self, ctx: SamplingContext, ok: bool) -> None:
        """Called after the call ended and ctx.patches was restored; `ok` is False after an exception."""


@dataclass
class GenerationRequest:
    """One image a tab asks the host to generate."""

    prompt: str
    negative_prompt: str = ""
    seed: int = -1
    settings: dict[str, Any] = field(default_factory=dict)  # steps, cfg_scale, sampler_name, width, height, ...
    infotext: dict[str, str] = field(default_factory=dict)  # extra infotext keys written into the image


@dataclass
class GenerationResult:
    request: GenerationRequest
    image: Any  # PIL.Image.Image
    seed: int
    infotext: str
    path: str | None = None  # where the host saved it, if it did
    # Images the host's pipeline attached after this one (A1111's `processed.images[1:]`: word-heatmap grids and
    # the like), with their captions (infotexts); not saved by the host.
    extra_images: list[Any] = field(default_factory=list)
    extra_infotexts: list[str] = field(default_factory=list)


Progress = Callable[[int, int, str], None]  # (done, total, message)


class Host(Protocol):
    """What a host gives the features. Implemented by the A1111 adapter and the standalone host."""

    name: str

    def tokenize(self, prompt: str) -> PromptTokens:
        """The text encoder's chunks for `prompt` (75 + start/end each, BREAK, emphasis, embeddings)."""

    def run_jobs(
        self, requests: Sequence[GenerationRequest], progress: Progress | None = None
    ) -> list[GenerationResult]:
        """Generate the requests in order through the host's normal pipeline, reporting progress; interruptible."""
