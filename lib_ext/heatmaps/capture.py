"""Lean DAAM capture beside the host's own cross-attention.

How it captures
---------------
For every cross-attention module (``attn2``: anything with ``to_q``, ``to_k``, ``to_v``, ``to_out``, ``heads``, such as
ldm/sgm ``CrossAttention`` or a diffusers ``Attention``) given to :meth:`Capture.attach`, per-INSTANCE hooks only:

- a forward pre-hook on the module asks the host's ``rows_provider()`` which rows of the current UNet call belong to
  which image and sub-prompt, and whether they are conditional (``None``: not capturing this call);
- forward hooks on ``to_q`` and ``to_k`` keep a reference to the projections the host computed itself (no copy and
  no second projection), whatever attention the host runs (SDP, xformers, sub-quadratic, diffusers processors);
- a forward hook on the module (after the host's attention has produced the output, which is left untouched)
  computes fp32 softmax(q·kᵀ·scale) for the selected rows only, sums the heads on the device and adds the result into
  running sums.

Class-level patches of ``forward`` (how the WebUI switches attention optimisations) do not disturb the hooks, and
:meth:`Capture.detach` removes every hook, leaving the modules exactly as they were.

Aggregation (as DAAM, Tang et al., ACL 2023)
--------------------------------------------
One layer call gives, per selected row, a head-summed map ``[L, h, w]`` (``L`` = key length, 77·k for prompts of
k chunks; ``h×w`` = the layer's query grid, found from the latent size by repeated ceil-halving). All rows' maps are
upsampled bicubically to the common map size (the latent size with its longer side capped at ``max_map_side``, 64 by
default: DAAM's 64×64 for a 512² SD1.5 image) in ONE ``interpolate`` call over all rows and tokens, clamped at 0
(bicubic overshoot; layers finer than the common size, as in a hires pass, are area-averaged down instead), and added
into ONE running fp32 sum ``[L, H, W]`` per (pass, image, sub-prompt), plus one per image for the negative prompt's
rows when asked. The sum therefore runs over heads, layers and steps; DAAM's mean
differs only by a constant factor, which the per-word normalisation removes. Like DAAM, 8× downsampled layers (the
SD1.5 middle block) are skipped by default (``skip_factors``), and the host can keep named layers out of the sums
(``sum_exclude``: the heatmap feature passes the UNet middle block, which DAAM never hooks — SDXL's sits at 4×).
A word's map is the mean of its tokens' maps, min-max normalised (``aggregate.word_map``); DAAM's threshold τ = 0.4
turns it into a mask.

Memory: the held maps never grow with the number of steps (one sum per key, :meth:`Capture.map_bytes`); they stay on
the device during sampling and move to the CPU once per image (:meth:`Capture.finish_image` or :meth:`Capture.collect`).
Per-layer or per-resolution sums (``group_by``) are kept at each layer's native resolution, only when asked.

Layers whose query count is not a grid of the latent (ToMe-like token merging), or whose q/k the host's attention
changed in place after projecting them, are skipped and noted once. Errors in
the hooks never break the host's generation: they are recorded in :attr:`Capture.errors` for the host to show
(``strict=True`` re-raises them instead, for tests).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..seam import RowRole

# The host's description of the UNet call now running: one RowRole(image, subprompt, is_uncond) per batch row, or None
# when this call is not to be captured (lib_ext.seam.SamplingContext.current_rows).
RowsProvider = Callable[[], "Sequence[RowRole] | None"]
GroupBy = Literal["layer", "resolution"]


@dataclass
class CaptureOptions:
    capture_negative: bool = False  # also sum the uncond rows (the negative prompt) per image
    group_by: GroupBy | None = None  # extra sums per layer or per resolution, at native resolution
    step_range: tuple[int, int] | None = None  # time focus: capture steps start <= step < end (see set_step)
    max_map_side: int = 64  # longer side of the common map size
    skip_factors: frozenset[int] = frozenset({8})  # downsampling factors not summed (DAAM drops 8×8 maps)
    sum_exclude: frozenset[str] = frozenset()  # layer names kept out of the word maps (DAAM: the UNet mid block);
    # with group_by they still get their own per-layer / per-resolution sums
    max_block_elements: int = 1 << 24  # bound on one transient rows×heads×queries×keys score block
    strict: bool = False  # re-raise errors from the hooks instead of recording them


@dataclass(frozen=True)
class MapKey:
    pass_name: str
    image: int
    subprompt: int  # -1 for the negative prompt
    negative: bool = False


@dataclass
class ImageMaps:
    """The summed maps of one image in one pass, on the CPU, fp32.

    ``positive[s]`` is ``[L, H, W]`` for sub-prompt ``s`` (token position p of the 77·k context at index p);
    ``negative`` the same for the negative prompt; ``groups[g][s]`` the per-layer/per-resolution sums at native
    resolution; ``calls[s]`` how many layer calls were summed into ``positive[s]``.
    """

    image: int
    pass_name: str
    size: tuple[int, int]
    positive: dict[int, torch.Tensor] = field(default_factory=dict)
    negative: torch.Tensor | None = None
    groups: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    calls: dict[int, int] = field(default_factory=dict)

    def group_map(self, group: str, subprompt: int = 0) -> torch.Tensor:
        """One group's summed maps upsampled to the common size, ``[L, H, W]``."""
        native = self.groups[group][subprompt]
        return upsample_maps(native.unsqueeze(0), self.size)[0]


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, L, h, w]`` maps to ``size`` (H, W) in one call: bicubic upsampling clamped at 0, or an area average
    when the layer is finer than the common size (hires latents above ``max_map_side``), which does not alias."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if maps.shape[-2] >= size[0] and maps.shape[-1] >= size[1]:
        return F.interpolate(maps, size=size, mode="area")
    return F.interpolate(maps, size=size, mode="bicubic", align_corners=False).clamp_min_(0)


def query_grid(n_queries: int, latent_size: tuple[int, int] | None) -> tuple[int, int, int] | None:
    """(h, w, factor) of a layer whose query count is ``n_queries``, or None if it is no grid of the latent.

    The UNet's stride-2 convolutions give ceil(h/2) at each level; without a latent size a square grid is assumed.
    """
    if latent_size is None:
        side = math.isqrt(n_queries)
        return (side, side, 0) if side * side == n_queries else None
    h, w = latent_size
    factor = 1
    while True:
        if h * w == n_queries:
            return h, w, factor
        if h == 1 and w == 1:
            return None
        h, w, factor = (h + 1) // 2, (w + 1) // 2, factor * 2


def common_size(latent_size: tuple[int, int], max_side: int) -> tuple[int, int]:
    h, w = latent_size
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


class _RunningSum:
    """A running fp32 sum on the device, moved to the CPU once (merged with any later device part at the end)."""

    def __init__(self) -> None:
        self.device_sum: torch.Tensor | None = None
        self.cpu_sum: torch.Tensor | None = None
        self.calls = 0

    @staticmethod
    def _add(total: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
        if total is None:
            return part.detach().to(dtype=torch.float32, copy=True)
        if total.is_inference() and not torch.is_inference_mode_enabled():
            total = total.clone()  # created under inference_mode, now updated outside it
        if total.shape[0] != part.shape[0]:  # key length changed (prompt schedule): pad the shorter token axis
            n = max(total.shape[0], part.shape[0])
            total = F.pad(total, (0, 0, 0, 0, 0, n - total.shape[0]))
            part = F.pad(part, (0, 0, 0, 0, 0, n - part.shape[0]))
        if total.shape != part.shape:
            raise ValueError(f"map size changed within one pass: {tuple(total.shape)} vs {tuple(part.shape)}")
        return total.add_(part)

    def add(self, part: torch.Tensor) -> None:
        self.device_sum = self._add(self.device_sum, part)
        self.calls += 1

    def to_cpu(self) -> None:
        if self.device_sum is None:
            return
        part = self.device_sum.to("cpu", copy=True)
        self.device_sum = None
        self.cpu_sum = part if self.cpu_sum is None else self._add(self.cpu_sum, part)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.device_sum, self.cpu_sum) if t is not None)


@dataclass
class _LayerState:
    name: str
    heads: int
    rows: list[RowRole] | None = None
    q: list[torch.Tensor] = field(default_factory=list)
    k: torch.Tensor | None = None
    versions: list[int] = field(default_factory=list)  # tensor versions when stashed (q…, then k)

    def clear(self) -> None:
        self.rows, self.q, self.k, self.versions = None, [], None, []


ModuleList = Sequence[Any] | Mapping[str, nn.Module] | Iterable[tuple[str, nn.Module]]


class Capture:
    """Captures cross-attention maps beside the host's attention; see the module docstring.

    The host sets ``pass_name`` (``begin_pass``) for hires fix, the step (``set_step``) for the time focus and the
    latent size (``set_latent_size``, or give ``unet`` to ``attach`` to read it from each UNet call).
    """

    REQUIRED = ("to_q", "to_k", "to_v", "to_out")  # and a head count: `heads`, `num_heads` or AttentionSite.heads

    def __init__(self, rows_provider: RowsProvider, options: CaptureOptions | None = None) -> None:
        self.rows_provider = rows_provider
        self.options = options or CaptureOptions()
        self.pass_name = "first"
        self.step: int | None = None
        self.latent_size: tuple[int, int] | None = None
        self.notes: list[str] = []
        self.errors: list[str] = []
        self._handles: list[RemovableHandle] = []
        self._hooked: set[int] = set()  # ids of hooked modules
        self._sums: dict[MapKey, _RunningSum] = {}
        self._group_sums: dict[tuple[MapKey, str], _RunningSum] = {}
        self._sizes: dict[tuple[str, int], tuple[int, int]] = {}
        self._peak_bytes = 0

    # ---- attaching -------------------------------------------------------------------------------------------
    def attach(
        self, modules: ModuleList, unet: nn.Module | None = None, *, replace: bool = True
    ) -> list[RemovableHandle]:
        """Hook every module and return the new handles. ``replace`` (default) detaches any earlier attachment
        first; ``replace=False`` adds modules (a second UNet, such as SDXL's refiner), skipping hooked ones."""
        if replace:
            self.detach()
        named = _named(modules)
        for name, module, heads in named:
            missing = [a for a in self.REQUIRED if not hasattr(module, a)]
            if heads is None:
                missing.append("heads")
            if missing:
                raise TypeError(f"{name} ({type(module).__name__}) is no cross-attention module: lacks {missing}")
        new: list[RemovableHandle] = []
        for name, module, heads in named:
            if id(module) in self._hooked:
                continue
            self._hooked.add(id(module))
            state = _LayerState(name, heads)
            new += [
                module.register_forward_pre_hook(partial(self._before, state)),
                module.to_q.register_forward_hook(partial(self._on_q, state)),
                module.to_k.register_forward_hook(partial(self._on_k, state)),
                module.register_forward_hook(partial(self._after, state)),
            ]
        if unet is not None and id(unet) not in self._hooked:
            self._hooked.add(id(unet))
            new.append(unet.register_forward_pre_hook(self._on_unet, with_kwargs=True))
        self._handles += new
        return new

    def detach(self) -> None:
        """Remove every hook; the captured maps stay available."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._hooked = set()

    remove = detach  # so the Capture itself can be held as one removable handle

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    # ---- host state ------------------------------------------------------------------------------------------
    def begin_pass(self, name: str, latent_size: tuple[int, int] | None = None) -> None:
        """Start a sampling pass ("first", "hires", ...): its maps are kept apart from the other passes'."""
        self.pass_name = name
        if latent_size is not None:
            self.latent_size = (int(latent_size[0]), int(latent_size[1]))

    def set_step(self, step: int | None) -> None:
        self.step = step

    def set_latent_size(self, height: int, width: int) -> None:
        self.latent_size = (int(height), int(width))

    # ---- results ---------------------------------------------------------------------------------------------
    def map_bytes(self) -> int:
        """Bytes held for maps now (device and CPU); it does not grow with steps."""
        total = sum(s.nbytes() for s in self._sums.values())
        return total + sum(s.nbytes() for s in self._group_sums.values())

    def peak_map_bytes(self) -> int:
        return self._peak_bytes

    def finish_image(self, image: int, pass_name: str | None = None) -> None:
        """Move one image's sums to the CPU (once per image, never per step)."""
        for key, running in self._all_sums():
            if key.image == image and (pass_name is None or key.pass_name == pass_name):
                running.to_cpu()

    def images(self) -> list[tuple[str, int]]:
        return sorted({(k.pass_name, k.image) for k in self._sums})

    def collect(self) -> list[ImageMaps]:
        """All images' maps (moved to the CPU); the capture keeps them until ``take`` or ``reset``."""
        return [self._image_maps(p, i) for p, i in self.images()]

    def take(self, image: int, pass_name: str | None = None) -> ImageMaps | None:
        """One image's maps, removed from the capture (``pass_name`` None: the current pass)."""
        pass_name = self.pass_name if pass_name is None else pass_name
        if (pass_name, image) not in self.images():
            return None
        maps = self._image_maps(pass_name, image)
        for key in [k for k in self._sums if (k.pass_name, k.image) == (pass_name, image)]:
            del self._sums[key]
        for gkey in [g for g in self._group_sums if (g[0].pass_name, g[0].image) == (pass_name, image)]:
            del self._group_sums[gkey]
        return maps

    def reset(self) -> None:
        self._sums.clear()
        self._group_sums.clear()
        self._sizes.clear()
        self.notes.clear()
        self.errors.clear()
        self._peak_bytes = 0

    def _all_sums(self) -> Iterable[tuple[MapKey, _RunningSum]]:
        yield from self._sums.items()
        for (key, _group), running in self._group_sums.items():
            yield key, running

    def _image_maps(self, pass_name: str, image: int) -> ImageMaps:
        self.finish_image(image, pass_name)
        out = ImageMaps(image=image, pass_name=pass_name, size=self._sizes[(pass_name, image)])
        for key, running in self._sums.items():
            if (key.pass_name, key.image) != (pass_name, image) or running.cpu_sum is None:
                continue
            if key.negative:
                out.negative = _plain(running.cpu_sum)
            else:
                out.positive[key.subprompt] = _plain(running.cpu_sum)
                out.calls[key.subprompt] = running.calls
        for (key, group), running in self._group_sums.items():
            if (key.pass_name, key.image) == (pass_name, image) and running.cpu_sum is not None:
                out.groups.setdefault(group, {})[key.subprompt] = _plain(running.cpu_sum)
        return out

    # ---- hooks -----------------------------------------------------------------------------------------------
    def _note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def _fail(self, where: str, exc: BaseException) -> None:
        message = f"attention heatmap capture failed in {where}: {type(exc).__name__}: {exc}"
        if message not in self.errors:
            self.errors.append(message)
        if self.options.strict:
            raise exc

    def _on_unet(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get("x", kwargs.get("sample"))
        if isinstance(x, torch.Tensor) and x.dim() == 4:
            self.latent_size = (int(x.shape[-2]), int(x.shape[-1]))

    def _before(self, state: _LayerState, _module: nn.Module, _args: tuple) -> None:
        state.clear()
        if state.name in self.options.sum_exclude and self.options.group_by is None:
            return  # nothing of this layer is kept: do not even hold its q/k
        step_range = self.options.step_range
        if step_range is not None and self.step is not None and not (step_range[0] <= self.step < step_range[1]):
            return
        try:
            rows = self.rows_provider()
        except Exception as exc:
            self._fail("rows_provider", exc)
            return
        if rows is None:
            return
        rows = list(rows)
        if any(not r.is_filler and (not r.is_uncond or self.options.capture_negative) for r in rows):
            state.rows = rows

    def _on_q(self, state: _LayerState, _module: nn.Module, _args: tuple, output: Any) -> None:
        if state.rows is not None and isinstance(output, torch.Tensor):
            state.q.append(output)  # a reference only: the host computed it anyway
            state.versions.append(_version_of(output))

    def _on_k(self, state: _LayerState, _module: nn.Module, _args: tuple, output: Any) -> None:
        if state.rows is not None and isinstance(output, torch.Tensor) and state.k is None:
            state.k = output
            state.versions.append(_version_of(output))

    def _after(self, state: _LayerState, module: nn.Module, _args: tuple, _output: Any) -> None:
        rows, qs, k = state.rows, state.q, state.k
        changed = [_version_of(t) for t in (*qs, *(() if k is None else (k,)))] != state.versions
        state.clear()
        if rows is None:
            return
        if changed:  # the host scaled or reused a projection in place: what we hold is no longer q or k
            self._note(f"{state.name}: the attention changed q/k in place; layer skipped")
            return
        try:
            with torch.no_grad():
                self._accumulate(state.name, state.heads, module, rows, qs, k)
        except Exception as exc:
            self._fail(state.name, exc)

    # ---- the computation -------------------------------------------------------------------------------------
    def _accumulate(
        self,
        name: str,
        heads: int,
        module: nn.Module,
        rows: list[RowRole],
        qs: list[torch.Tensor],
        k: torch.Tensor | None,
    ) -> None:
        if not qs or k is None:
            self._note(f"{name}: to_q/to_k were not called (fused projections?); layer skipped")
            return
        q = qs[0] if len(qs) == 1 else torch.cat(qs, dim=1)  # a host projecting queries in slices
        if q.dim() != 3 or k.dim() != 3 or q.shape[0] != len(rows) or k.shape[0] != len(rows):
            self._note(
                f"{name}: batch of {tuple(q.shape)} / keys {tuple(k.shape)} does not match the {len(rows)} rows "
                "the host described; call skipped"
            )
            return
        n_queries, inner = q.shape[1], q.shape[2]
        if inner % heads or k.shape[2] != inner:
            self._note(f"{name}: projections {inner}/{k.shape[2]} wide do not split into {heads} heads; skipped")
            return
        grid = query_grid(n_queries, self.latent_size)
        if grid is None:
            self._note(
                f"{name}: {n_queries} queries are no grid of the latent {self.latent_size} "
                "(token merging such as ToMe?); layer skipped"
            )
            return
        h, w, factor = grid
        if factor in self.options.skip_factors:
            return
        # Without a latent size the image is taken as square, and every map goes to the full common size.
        latent = self.latent_size or (self.options.max_map_side, self.options.max_map_side)
        size = common_size(latent, self.options.max_map_side)
        selected = []
        for i, role in enumerate(rows):
            if role.is_filler or (role.is_uncond and not self.options.capture_negative):
                continue
            if self._sizes.setdefault((self.pass_name, role.image), size) != size:
                self._note(f"image {role.image}: latent size changed within pass {self.pass_name!r}; call skipped")
                continue
            selected.append((i, role))
        head_dim = inner // heads
        scale = getattr(module, "scale", None)
        scale = float(scale) if isinstance(scale, int | float) else head_dim**-0.5
        n_keys = k.shape[1]
        per_row = heads * n_queries * n_keys
        rows_per_block = max(1, self.options.max_block_elements // per_row)
        queries_per_block = max(1, self.options.max_block_elements // (heads * n_keys))

        for start in range(0, len(selected), rows_per_block):
            block = selected[start : start + rows_per_block]
            qb = _rows(q, [i for i, _ in block]).float().reshape(len(block), n_queries, heads, head_dim).transpose(1, 2)
            kb = _rows(k, [i for i, _ in block]).float().reshape(len(block), n_keys, heads, head_dim).transpose(1, 2)
            kt = kb.transpose(-1, -2)
            maps = torch.empty(len(block), n_queries, n_keys, device=q.device, dtype=torch.float32)
            for q0 in range(0, n_queries, queries_per_block):
                scores = torch.matmul(qb[:, :, q0 : q0 + queries_per_block], kt).mul_(scale)
                maps[:, q0 : q0 + queries_per_block] = scores.softmax(dim=-1).sum(dim=1)
            native = maps.transpose(1, 2).reshape(len(block), n_keys, h, w)
            in_sum = name not in self.options.sum_exclude
            common = upsample_maps(native, size) if in_sum else None
            for j, (_, role) in enumerate(block):
                subprompt = -1 if role.is_uncond else max(0, role.subprompt)
                key = MapKey(self.pass_name, role.image, subprompt, role.is_uncond)
                if common is not None:
                    self._sums.setdefault(key, _RunningSum()).add(common[j])
                if self.options.group_by is not None and not role.is_uncond:
                    group = name if self.options.group_by == "layer" else f"{h}x{w}"
                    self._group_sums.setdefault((key, group), _RunningSum()).add(native[j])
        self._peak_bytes = max(self._peak_bytes, self.map_bytes())


def _rows(t: torch.Tensor, index: list[int]) -> torch.Tensor:
    """Rows of a batch: a slice when they are consecutive (the usual cond block; no index tensor to upload)."""
    if index == list(range(index[0], index[0] + len(index))):
        return t[index[0] : index[0] + len(index)]
    return t.index_select(0, torch.tensor(index, device=t.device))


def _version_of(t: torch.Tensor) -> int:
    """In-place changes bump a tensor's version; inference tensors keep none (-1: cannot tell)."""
    return -1 if t.is_inference() else t._version


def _plain(t: torch.Tensor) -> torch.Tensor:
    """A tensor made under inference_mode cannot be changed in place outside it: hand out a normal one."""
    return t.clone() if t.is_inference() and not torch.is_inference_mode_enabled() else t


def _heads_of(module: Any) -> int | None:
    heads = getattr(module, "heads", None) or getattr(module, "num_heads", None)
    try:
        count = operator.index(heads)  # int-like (numpy ints too), not 8.0 or None
    except TypeError:
        return None
    return count if count > 0 else None


def _named(modules: ModuleList) -> list[tuple[str, nn.Module, int | None]]:
    """(name, module, heads) from modules, (name, module) tuples, a name → module mapping or AttentionSites."""
    if isinstance(modules, Mapping):
        return [(str(n), m, _heads_of(m)) for n, m in modules.items()]
    out: list[tuple[str, nn.Module, int | None]] = []
    for i, item in enumerate(modules):
        if isinstance(item, tuple):
            out.append((str(item[0]), item[1], _heads_of(item[1])))
        elif not isinstance(item, nn.Module) and isinstance(getattr(item, "module", None), nn.Module):
            # lib_ext.attention_sites.AttentionSite: its head count is read already
            heads = _heads_of(item.module) or _heads_of(item)
            out.append((str(getattr(item, "name", f"attn2[{i}]")), item.module, heads))
        else:
            out.append((f"attn2[{i}]", item, _heads_of(item)))
    return out
