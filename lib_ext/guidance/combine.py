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
    """The guided prediction (n_images, C, H, W), in the same space as `step.x_out`.

    Images whose trees have the same structure (weights, conciliations and SEGA settings; texts may differ) are
    combined together, every operation batched over them: a batch of one prompt costs one pass over its tree.
    """
    if len(trees) != step.n_images:
        raise GuidanceLayoutError(f"{len(trees)} prompt trees for {step.n_images} images")
    if settings.mode not in ("neutral", "sega"):
        raise ValueError(f"unknown guidance mode {settings.mode!r}")
    state.begin_step(step.step)
    groups: dict[tuple, list[int]] = {}
    for image, tree in enumerate(trees):
        groups.setdefault(structure_key(tree), []).append(image)
    uncond = step.uncond()
    out = torch.empty_like(uncond)
    for images in groups.values():
        result = _GroupCombination(step, images, trees[images[0]], settings, state).result()
        if len(images) == 1:
            out[images[0]] = result[0]
        else:
            out[torch.tensor(images, device=out.device)] = result
    return out


def structure_key(node: PromptNode) -> tuple:
    """What the maths of a tree depends on, texts aside (iterative: trees may be deep)."""
    parts: list = []
    stack: list = [node]
    while stack:
        n = stack.pop()
        if n is None:
            parts.append(")")
        elif isinstance(n, LeafPrompt):
            parts.append(("L", n.weight, n.conciliation, n.sega))
        else:
            parts.append(("G", n.weight, n.conciliation, len(n.children)))
            stack.append(None)
            stack.extend(reversed(n.children))
    return tuple(parts)


class _GroupCombination:
    """One tree's combination for a group of images sharing its structure; tensors are (G, C, H, W)."""

    def __init__(
        self,
        step: GuidanceStep,
        images: list[int],
        tree: CompositePrompt,
        settings: GuidanceSettings,
        state: GuidanceState,
    ) -> None:
        self.step, self.images, self.tree, self.settings, self.state = step, images, tree, settings, state
        leaves = flatten_leaves(tree)
        n_rows = step.x_out.shape[0]
        rows_per_image = []
        for image in images:
            conds = list(step.conds_list[image])
            if len(conds) != len(leaves):
                raise GuidanceLayoutError(
                    f"image {image}: the host has {len(conds)} sub-prompt rows, the prompt has {len(leaves)} "
                    "sub-prompts"
                )
            for (row, weight), leaf in zip(conds, leaves):
                if not 0 <= int(row) < n_rows - step.n_images:
                    raise GuidanceLayoutError(f"image {image}: cond row {row} outside the {n_rows}-row output")
                if abs(float(weight) - leaf.weight) > 1e-6 * max(1.0, abs(leaf.weight)):
                    state.warn(
                        f"host weight {weight} differs from the prompt's {leaf.weight} (another extension changing "
                        "AND weights?); using the prompt's"
                    )
            rows_per_image.append([int(r) for r, _ in conds])
        device = step.x_out.device
        # leaf j's rows, one per image of the group
        self.leaf_rows = [torch.tensor([rows[j] for rows in rows_per_image], device=device) for j in range(len(leaves))]
        uncond = step.uncond()
        self.uncond = uncond[torch.tensor(images, device=device)]
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
            guided = cfg_rescale(guided, self.uncond + cond_delta + aux, self.settings.cfg_rescale, batched=True)
        return guided

    def _group(
        self, node: CompositePrompt, path: tuple[int, ...], first_leaf: int
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(CondDelta, AuxCondDelta, δ of each child) of a group whose first leaf is leaf number `first_leaf`."""
        full: list[torch.Tensor] = []
        index = first_leaf
        for i, child in enumerate(node.children):
            if isinstance(child, LeafPrompt):
                full.append(self.step.x_out[self.leaf_rows[index]] - self.uncond)
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
                aux += child.weight * perpendicular_component(cond_delta, d, batched=True)
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
            aux += salient_blend(cond_delta, salient, batched=True)
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
        return filter_abs_top_k(d, ratio, batched=True)

    def _sega_edit(self, concepts: list[tuple[int, PromptNode, torch.Tensor]], path: tuple[int, ...]) -> torch.Tensor:
        """SEGA (Brack et al.; diffusers' SemanticStableDiffusionPipeline) for one group's concepts, unit scale.

        ψ_c = w_c·(ε_c − ε_u), zeroed below the per-channel λ_c quantile of |ψ_c|, zero from cooldown on.
        While some but not all concepts are warm, the warm ones' ψ are averaged (non-negative weights normalised to
        sum 1) and added without momentum. Always: γ = Σ ψ_c + s_m·ν, ν ← β·ν + (1−β)·γ (momentum builds during
        warm-up); γ is added once every concept is warm. Momentum is kept per concept (ν = Σ ν_c, identical to
        the reference when concepts share s_m and β) in eps space, so it survives σ changing between steps.
        Steps are the sampler's (`GuidanceStep.step`): with a two-call sampler (Heun) both calls of a step see the
        same warm-up/cooldown state and the momentum the step began with; ν is updated once per step.
        """
        step = self.step
        # eps-difference = f · output-difference, per image of the group
        f = torch.tensor([step.eps_factor(image) for image in self.images], dtype=self.uncond.dtype,
                         device=self.uncond.device).view(-1, *([1] * (self.uncond.dim() - 1)))  # fmt: skip
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
        for q, members in by_threshold.items():  # one selection per distinct λ, over all images and concepts
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
                keys = [(image, path, child_index) for image in self.images]
                nu = torch.stack([self.state.get_momentum(key, g[0], i) for key in keys])
                g = g + s_m * nu
                beta = float(p.beta or 0.0)
                new_nu = beta * nu + (1 - beta) * g
                for key, value in zip(keys, new_nu):
                    self.state.set_momentum(key, value, i)
            gamma += g
        if n_warm == n:
            edit += gamma
        return edit / f
