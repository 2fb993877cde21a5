"""Combine one step's model outputs into the guided prediction, image by image, following each image's prompt tree.

Per image (u = uncond output, s = CFG scale, δ(leaf) = output(leaf) − u, δ(group) = CondDelta + AuxCondDelta):
- CondDelta(group) = Σ over AND children of w·δ(child).
- AuxCondDelta(group) = Σ_PERP w·perp(CondDelta, δ) + TOPK part + salient_blend(CondDelta, [(δ, w)]_SALT).
- result = u + s·CondDelta(root) (the host's own AND combination) + s·AuxCondDelta(root), then CFG rescale φ.
This is neutral-prompt's combination. The TOPK part is, in mode "neutral", Σ w·filter_abs_top_k(δ, ratio); in
mode "sega", SEGA's edit term for the group's AND_TOPK concepts (`_sega_edit`), computed in eps space and divided by
s (it is multiplied by s with the rest), so a concept of weight w has SEGA edit scale |w|·s, reversed when w < 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .ops import cfg_rescale, channel_quantile_filter, filter_abs_top_k, perpendicular_component, salient_blend
from .settings import GuidanceSettings
from .state import GuidanceState
from .step import GuidanceStep
from .tree import CompositePrompt, Conciliation, LeafPrompt, PromptNode, SegaParams, flatten_leaves


class GuidanceLayoutError(ValueError):
    """The host's rows do not match the prompt trees (another extension changed the conds?): use the host's
    own combination for this step."""


def combine(
    step: GuidanceStep, trees: Sequence[CompositePrompt], settings: GuidanceSettings, state: GuidanceState
) -> torch.Tensor:
    """The guided prediction (n_images, C, H, W), in the same space as `step.x_out`."""
    if len(trees) != step.n_images:
        raise GuidanceLayoutError(f"{len(trees)} prompt trees for {step.n_images} images")
    if settings.mode not in ("neutral", "sega"):
        raise ValueError(f"unknown guidance mode {settings.mode!r}")
    state.begin_step(step.step)
    uncond = step.uncond()
    out = torch.empty_like(uncond)
    for image, tree in enumerate(trees):
        out[image] = _ImageCombination(step, image, tree, settings, state).result()
    return out


class _ImageCombination:
    def __init__(
        self,
        step: GuidanceStep,
        image: int,
        tree: CompositePrompt,
        settings: GuidanceSettings,
        state: GuidanceState,
    ) -> None:
        self.step, self.image, self.tree, self.settings, self.state = step, image, tree, settings, state
        leaves = flatten_leaves(tree)
        conds = list(step.conds_list[image])
        if len(conds) != len(leaves):
            raise GuidanceLayoutError(
                f"image {image}: the host has {len(conds)} sub-prompt rows, the prompt has {len(leaves)} sub-prompts"
            )
        n_rows = step.x_out.shape[0]
        for (row, weight), leaf in zip(conds, leaves):
            if not 0 <= int(row) < n_rows - step.n_images:
                raise GuidanceLayoutError(f"image {image}: cond row {row} outside the {n_rows}-row output")
            if abs(float(weight) - leaf.weight) > 1e-6 * max(1.0, abs(leaf.weight)):
                state.warn(
                    f"host weight {weight} differs from the prompt's {leaf.weight} (another extension changing "
                    "AND weights?); using the prompt's"
                )
        self.rows = [int(r) for r, _ in conds]
        self.uncond = step.uncond()[image]
        self.leaf_counts: dict[int, int] = {}

    # -- tree walk ---------------------------------------------------------------------------------------------
    def result(self) -> torch.Tensor:
        s = float(self.step.cond_scale)
        cond_delta, aux, full = self._group(self.tree, (), 0)
        # The host's own combination of the root's AND children (A1111's combine_denoised, term by term).
        denoised = self.uncond.clone()
        for child, d in zip(self.tree.children, full):
            if child.conciliation is None:
                denoised += d * (child.weight * s)
        guided = denoised + aux * s
        if self.settings.cfg_rescale:
            guided = cfg_rescale(guided, self.uncond + cond_delta + aux, self.settings.cfg_rescale)
        return guided

    def _group(
        self, node: CompositePrompt, path: tuple[int, ...], first_leaf: int
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(CondDelta, AuxCondDelta, δ of each child) of a group whose first leaf is leaf number `first_leaf`."""
        full: list[torch.Tensor] = []
        index = first_leaf
        for i, child in enumerate(node.children):
            if isinstance(child, LeafPrompt):
                full.append(self.step.x_out[self.rows[index]] - self.uncond)
            else:
                cd, ax, _ = self._group(child, (*path, i), index)
                full.append(cd + ax)
            index += self._leaf_count(child)

        cond_delta = torch.zeros_like(self.uncond)
        for child, d in zip(node.children, full):
            if child.conciliation is None:
                cond_delta += child.weight * d

        aux = torch.zeros_like(self.uncond)
        salient: list[tuple[torch.Tensor, float]] = []
        concepts: list[tuple[int, PromptNode, torch.Tensor]] = []
        for i, (child, d) in enumerate(zip(node.children, full)):
            if child.conciliation is Conciliation.PERP:
                aux += child.weight * perpendicular_component(cond_delta, d)
            elif child.conciliation is Conciliation.SALT:
                salient.append((d, child.weight))
            elif child.conciliation is Conciliation.TOPK:
                concepts.append((i, child, d))
        if concepts:
            if self.settings.mode == "sega":
                aux += self._sega_edit(concepts, path)
            else:
                for _, child, d in concepts:
                    aux += child.weight * self._neutral_topk(child, d)
        if salient:
            aux += salient_blend(cond_delta, salient)
        return cond_delta, aux, full

    def _leaf_count(self, node: PromptNode) -> int:
        if isinstance(node, LeafPrompt):
            return 1
        n = self.leaf_counts.get(id(node))
        if n is None:
            n = self.leaf_counts[id(node)] = len(flatten_leaves(node))
        return n

    # -- AND_TOPK ------------------------------------------------------------------------------------------------
    def _params(self, node: PromptNode) -> SegaParams:
        """A concept's own inline settings (groups have none)."""
        return node.sega if isinstance(node, LeafPrompt) and node.sega is not None else SegaParams()

    def _neutral_topk(self, node: PromptNode, d: torch.Tensor) -> torch.Tensor:
        """neutral-prompt's top-k filter; a concept's own threshold/warmup/cooldown apply, nothing else does."""
        own = self._params(node)
        i, total = self.step.step, self.step.total_steps
        if own.warmup is not None and i < own.warmup.resolve(total):
            return torch.zeros_like(d)
        if own.cooldown is not None and i >= own.cooldown.resolve(total):
            return torch.zeros_like(d)
        ratio = 1.0 - own.threshold if own.threshold is not None else self.settings.topk_ratio
        return filter_abs_top_k(d, ratio)

    def _sega_edit(self, concepts: list[tuple[int, PromptNode, torch.Tensor]], path: tuple[int, ...]) -> torch.Tensor:
        """SEGA (Brack et al.; diffusers' SemanticStableDiffusionPipeline) for one group's concepts, unit scale.

        ψ_c = w_c·(ε_c − ε_u), zeroed below the per-channel λ_c quantile of |ψ_c|, zero from cooldown on.
        While some but not all concepts are warm, the warm ones' ψ are averaged (non-negative weights normalised to
        sum 1) and added without momentum. Always: γ = Σ ψ_c + s_m·ν, ν ← β·ν + (1−β)·γ (momentum builds during
        warm-up); γ is added once every concept is warm. Momentum is kept per concept (ν = Σ ν_c, identical to
        the reference when concepts share s_m and β) in eps space, so it survives σ changing between steps.
        """
        step, image = self.step, self.image
        f = step.eps_factor(image)
        i, total = step.step, step.total_steps
        defaults = self.settings.sega
        n = len(concepts)
        psis: list[torch.Tensor] = []
        omegas: list[float] = []
        warm: list[bool] = []
        by_threshold: dict[float, list[int]] = {}
        resolved = []
        for j, (_, node, d) in enumerate(concepts):
            p = self._params(node).merged_over(defaults)
            resolved.append(p)
            warm.append(i >= (p.warmup.resolve(total) if p.warmup is not None else 0))
            cooled = p.cooldown is not None and i >= p.cooldown.resolve(total)
            omegas.append(0.0 if cooled else 1.0)
            psis.append(d * (node.weight * f))
            if not cooled:
                by_threshold.setdefault(float(p.threshold if p.threshold is not None else 0.0), []).append(j)
        for q, members in by_threshold.items():  # one selection per distinct λ
            filtered = channel_quantile_filter(torch.stack([psis[j] for j in members]), q)
            for j, t in zip(members, filtered):
                psis[j] = t
        for j in range(n):
            if omegas[j] == 0.0:
                psis[j] = torch.zeros_like(psis[j])

        edit = torch.zeros_like(self.uncond)
        n_warm = sum(warm)
        if 0 < n_warm < n:
            total_w = sum(o for o, w in zip(omegas, warm) if w)
            if total_w > 0:
                for j in range(n):
                    if warm[j] and omegas[j] > 0:
                        edit += (omegas[j] / total_w) * psis[j]

        use_momentum = not step.uncond_skipped
        gamma = torch.zeros_like(self.uncond)
        for j, (child_index, _, _) in enumerate(concepts):
            g = omegas[j] * psis[j]
            p = resolved[j]
            s_m = float(p.momentum or 0.0)
            if use_momentum and s_m > 0:
                key = (image, path, child_index)
                nu = self.state.get_momentum(key, g)
                g = g + s_m * nu
                beta = float(p.beta or 0.0)
                self.state.set_momentum(key, beta * nu + (1 - beta) * g)
            gamma += g
        if n_warm == n:
            edit += gamma
        return edit / f
