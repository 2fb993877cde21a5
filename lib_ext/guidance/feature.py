"""Semantic guidance as the hosts drive it (`lib_ext.seam.Feature`), host-independent.

Two calls per batch, both from that batch's own prompts (nothing is kept between generations, so no UI callback
such as A1111's token counter can leave stale state — neutral-prompt #44):
1. Where the host turns prompts into cond rows (A1111: `get_multicond_prompt_list`), it passes its prompts through
   `GuidanceFeature.rewrite_prompts`: a prompt that uses AND_PERP / AND_SALT / AND_TOPK (or `<sega:...>`) becomes
   `flatten_for_host(tree)`, one sub-prompt per leaf; every other prompt is returned unchanged, so the host treats
   it exactly as without us.
2. `begin_sampling` parses the same prompts again (`ctx.job.prompts`; `ctx.job.extra["tagged_prompts"]`, when the
   host gives them, are the same prompts before extra-network tags were removed, for `<sega:...>` settings),
   checks that the host's rows match the trees,
   and installs a step hook that replaces the host's CFG combination with `combine(...)`, with a fresh
   `GuidanceState` for this sampling call (hires pass and img2img get their own).
A prompt that cannot be used gets a one-line warning in `ctx.messages` and the host's own behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..prompt_multicond import split_and
from ..seam import TAGGED_PROMPTS_KEY, DenoiseStep, SamplingContext
from .combine import GuidanceLayoutError, combine
from .parser import SEGA_TAG_NAME, flatten_for_host, has_keywords, safe_parse
from .settings import INFOTEXT_MODE, INFOTEXT_OFF, GuidanceSettings
from .state import GuidanceState
from .step import GuidanceStep
from .tree import CompositePrompt, LeafPrompt, leaf_count

_SEGA_TAG = f"<{SEGA_TAG_NAME}:"


def uses_guidance(prompt: str) -> bool:
    """Whether a prompt is ours to parse: it has AND_PERP / AND_SALT / AND_TOPK, or a `<sega:...>` tag."""
    return has_keywords(prompt) or (isinstance(prompt, str) and _SEGA_TAG in prompt)


def host_tree(prompt: str) -> CompositePrompt:
    """The tree of what the host does with a prompt we leave alone: its own `AND` split, weights as it reads them."""
    return CompositePrompt(1.0, None, [LeafPrompt(w, None, text) for text, w in split_and(prompt)])


@dataclass
class PreparedPrompts:
    host_prompts: list[str]  # what the host should compute cond rows from
    trees: list[CompositePrompt]  # per image, leaves in the host's row order
    active: bool  # some prompt uses the guidance grammar
    warnings: list[str] = field(default_factory=list)


def prepare_prompts(prompts: Sequence[str], tagged_prompts: Sequence[str] | None = None) -> PreparedPrompts:
    """Host prompts and trees for one batch.

    `prompts` are what the host computes cond rows from. A1111 has already removed extra-network tags from them
    (`<lora:...>`, and our `<sega:...>`) when it computes conds; pass the same prompts before that removal as
    `tagged_prompts` (A1111: this batch's slice of `p.all_prompts` / `p.all_hr_prompts`) to keep per-concept SEGA
    settings. The host string always comes from `prompts`; the tree, when its structure and weights agree, from the
    tagged text.
    """
    if tagged_prompts is not None and len(tagged_prompts) != len(prompts):
        raise ValueError(f"{len(tagged_prompts)} tagged prompts for {len(prompts)} prompts")
    host_prompts, trees, warnings, active = [], [], [], False

    def warn(message: str | None) -> None:
        if message is not None and message not in warnings:
            warnings.append(message)

    for i, prompt in enumerate(prompts):
        tagged = tagged_prompts[i] if tagged_prompts is not None else prompt
        tree = None
        if uses_guidance(prompt) or uses_guidance(tagged):
            tree, notes = safe_parse(prompt)
            if tree is not None and tagged != prompt:
                tagged_tree, tagged_notes = safe_parse(tagged)
                if tagged_tree is None:
                    tree, notes = None, tagged_notes
                elif _shape(tagged_tree) != _shape(tree):
                    notes.append(f"semantic guidance ignored the <sega:...> settings of {tagged!r}: the prompt reads "
                                 "differently without its extra-network tags")  # fmt: skip
                else:  # the same tree with the settings of the typed text; its notes point into the typed text
                    host_prompts.append(flatten_for_host(tree))
                    tree, notes = tagged_tree, tagged_notes
                    trees.append(tree)
                    active = True
                    for note in notes:
                        warn(note)
                    continue
            for note in notes:
                warn(note)
        if tree is None:
            host_prompts.append(prompt)
            trees.append(host_tree(prompt))
        else:
            active = True
            host_prompts.append(flatten_for_host(tree))
            trees.append(tree)
    return PreparedPrompts(host_prompts, trees, active, warnings)


def _shape(tree: CompositePrompt) -> list:
    """What the rows and the maths depend on: the tree without leaf texts and SEGA settings."""

    def walk(node):
        if isinstance(node, LeafPrompt):
            return ("leaf", node.weight, node.conciliation)
        return ("group", node.weight, node.conciliation, [walk(c) for c in node.children])

    return walk(tree)  # type: ignore[return-value]


def disabled_warning(prompts: Sequence[str]) -> str | None:
    """The one-line warning for a generation with the feature switched off but guidance keywords typed."""
    if any(has_keywords(p) for p in prompts):
        return (
            "semantic guidance is off, but the prompt uses AND_PERP / AND_SALT / AND_TOPK: the host reads them as "
            "plain text and weights the whole sub-prompt by the last :w"
        )
    return None


def decide(switch: str, prompts: Sequence[str]) -> str | None:
    """What a generation does with guidance: "on" / "auto" (guide the prompts that use the grammar), "off" (only
    warn), or None (nothing at all: the host behaves as without us).

    switch "auto" (the default) turns guidance on when a prompt uses AND_PERP / AND_SALT / AND_TOPK, as neutral-prompt
    does; a `<sega:...>` tag alone does not (A1111 drops it as an unknown extra network). "on" also guides prompts
    whose only sign is a `<sega:...>` tag. "off" with keywords warns and records `Semantic guidance: off`.
    """
    if switch == "off":
        return "off" if any(has_keywords(p) for p in prompts) else None
    if switch == "auto":
        return "auto" if any(has_keywords(p) for p in prompts) else None
    if switch == "on":
        return "on" if any(uses_guidance(p) for p in prompts) else None
    raise ValueError(f"unknown guidance switch {switch!r}")


class GuidanceFeature:
    name = "semantic_guidance"

    def __init__(self, settings: GuidanceSettings | None = None, enabled: bool = True, auto: bool = False) -> None:
        self.settings = (settings or GuidanceSettings()).validated()
        self.enabled = enabled
        self.auto = auto  # the keywords turned it on (the user chose neither on nor off)
        self.messages: list[str] = []

    def infotext(self) -> dict[str, str]:
        """The infotext keys of this generation: the settings, `(auto)` when the keywords turned guidance on, or
        `Semantic guidance: off` when switched off (so a paste restores the same behaviour)."""
        if not self.enabled:
            return {INFOTEXT_MODE: INFOTEXT_OFF}
        return self.settings.to_infotext(auto=self.auto)

    def rewrite_prompts(self, prompts: Sequence[str], tagged_prompts: Sequence[str] | None = None) -> list[str]:
        """The prompts the host should compute its cond rows from (unchanged when off or unused)."""
        if not self.enabled:
            return list(prompts)
        return prepare_prompts(prompts, tagged_prompts).host_prompts

    def begin_sampling(self, ctx: SamplingContext) -> None:
        if not self.enabled:
            warning = disabled_warning(ctx.job.prompts)
            if warning:
                self._message(ctx, warning)
            return
        tagged = ctx.job.extra.get(TAGGED_PROMPTS_KEY)
        if tagged is not None and len(tagged) != len(ctx.job.prompts):
            self._message(ctx, f"semantic guidance ignored {TAGGED_PROMPTS_KEY}: {len(tagged)} for "
                               f"{len(ctx.job.prompts)} prompts")  # fmt: skip
            tagged = None
        prepared = prepare_prompts(ctx.job.prompts, tagged)
        for warning in prepared.warnings:
            self._message(ctx, warning)
        if not prepared.active:
            return
        counts = [leaf_count(t) for t in prepared.trees]
        host_counts = [len(c) for c in ctx.layout.conds]
        if counts != host_counts:
            self._message(
                ctx,
                f"semantic guidance off for this batch: the host computed {host_counts} sub-prompts per image, the "
                f"prompts have {counts} (were the prompts passed through rewrite_prompts?)",
            )
            return
        state = GuidanceState()
        trees, settings = prepared.trees, self.settings

        def step_hook(ds: DenoiseStep) -> torch.Tensor | None:
            try:
                out = combine(GuidanceStep.from_denoise_step(ds), trees, settings, state)
            except GuidanceLayoutError as e:
                self._message(ctx, f"semantic guidance skipped a step: {e}")
                return None
            for m in state.messages:
                self._message(ctx, m)
            return out

        ctx.step_hooks.append(step_hook)

    def end_sampling(self, ctx: SamplingContext, ok: bool) -> None:
        pass

    def _message(self, ctx: SamplingContext, message: str) -> None:
        if message not in ctx.messages:
            ctx.messages.append(message)
        if message not in self.messages:
            self.messages.append(message)
