"""The parsed form of a semantic-guidance prompt: neutral-prompt's data model plus per-concept SEGA settings.

A prompt is a `CompositePrompt` (the root) whose children are `LeafPrompt`s (one host cond row each) and nested
`CompositePrompt`s (a `[ ... ]` group holding two or more prompts). `conciliation` says how a child joins its
siblings: None for plain `AND`, or one of `Conciliation` for `AND_PERP` / `AND_SALT` / `AND_TOPK`.
Leaves in depth-first order are the host's cond rows of that image (`flatten_leaves`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal


class Conciliation(enum.Enum):
    """How a non-`AND` child joins the guidance of its siblings (values are the prompt keywords)."""

    PERP = "AND_PERP"  # perpendicular component to the siblings' AND delta
    SALT = "AND_SALT"  # salience-mask blend
    TOPK = "AND_TOPK"  # semantic guidance: only the largest-magnitude part of the delta


KEYWORDS: tuple[str, ...] = ("AND", *(c.value for c in Conciliation))


@dataclass(frozen=True)
class StepCount:
    """A step number written either absolute (`warmup=10`: step 10) or relative (`warmup=20%` of total steps)."""

    value: float
    relative: bool = False

    def resolve(self, total_steps: int) -> int:
        if not self.relative:
            return int(self.value)
        return int(math.floor(self.value * max(total_steps, 0) + 1e-9))

    def __str__(self) -> str:
        if self.relative:
            return f"{format_plain_float(round(self.value * 100, 9))}%"
        return str(int(self.value))


@dataclass(frozen=True)
class SegaParams:
    """Per-concept SEGA settings written inline (`<sega:...>`); None means "use the UI default".

    threshold: λ, the per-channel quantile below which the edit is zeroed (SEGA's `edit_threshold`); the tag also
    accepts `topk=f` meaning λ = 1 − f. warmup / cooldown: step from which the concept acts / stops acting.
    momentum: s_m (SEGA's `edit_momentum_scale`); beta: β (`edit_mom_beta`).
    """

    threshold: float | None = None
    warmup: StepCount | None = None
    cooldown: StepCount | None = None
    momentum: float | None = None
    beta: float | None = None

    def is_empty(self) -> bool:
        return all(v is None for v in (self.threshold, self.warmup, self.cooldown, self.momentum, self.beta))

    def merged_over(self, base: SegaParams) -> SegaParams:
        """These settings where set, `base` elsewhere."""
        return SegaParams(
            threshold=self.threshold if self.threshold is not None else base.threshold,
            warmup=self.warmup if self.warmup is not None else base.warmup,
            cooldown=self.cooldown if self.cooldown is not None else base.cooldown,
            momentum=self.momentum if self.momentum is not None else base.momentum,
            beta=self.beta if self.beta is not None else base.beta,
        )

    def to_tag(self) -> str:
        """The inline form, e.g. `<sega:threshold=0.9,warmup=20%>` (empty string when nothing is set)."""
        parts = []
        if self.threshold is not None:
            parts.append(f"threshold={format_plain_float(self.threshold)}")
        if self.warmup is not None:
            parts.append(f"warmup={self.warmup}")
        if self.cooldown is not None:
            parts.append(f"cooldown={self.cooldown}")
        if self.momentum is not None:
            parts.append(f"momentum={format_plain_float(self.momentum)}")
        if self.beta is not None:
            parts.append(f"beta={format_plain_float(self.beta)}")
        return f"<sega:{','.join(parts)}>" if parts else ""


@dataclass
class LeafPrompt:
    """One sub-prompt: its text goes to the host untouched (emphasis, editing, BREAK, <lora:...> included)."""

    weight: float
    conciliation: Conciliation | None
    prompt: str
    sega: SegaParams | None = None


@dataclass
class CompositePrompt:
    """A group of prompts (the root, or `[a AND_PERP b]`); weight and conciliation as for a leaf."""

    weight: float
    conciliation: Conciliation | None
    children: list[PromptNode] = field(default_factory=list)


PromptNode = LeafPrompt | CompositePrompt


def iter_leaves(node: PromptNode) -> Iterator[LeafPrompt]:
    """Leaves depth-first, children in order: the host's cond-row order for this prompt. Iterative (deep trees)."""
    stack: list[PromptNode] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, LeafPrompt):
            yield n
        else:
            stack.extend(reversed(n.children))


def flatten_leaves(tree: PromptNode) -> list[LeafPrompt]:
    return list(iter_leaves(tree))


def leaf_count(node: PromptNode) -> int:
    return sum(1 for _ in iter_leaves(node))


def format_plain_float(x: float) -> str:
    """The shortest decimal that reads back as x, without exponent (A1111's weight pattern reads no exponents)."""
    text = format(Decimal(repr(float(x))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
