"""Semantic guidance: neutral-prompt's `AND_PERP` / `AND_SALT` / `AND_TOPK` grammar and maths, and a SEGA mode.

Host wiring, per generation (never in module globals):
1. For each image's prompt: `tree, notes = safe_parse(prompt)` (read `<sega:...>` tags before the host strips
   extra networks); show each note once under the image; a None tree leaves that prompt to the host.
2. Give the host `flatten_for_host(tree)` instead of the prompt, so it computes one cond row per leaf.
3. Create one `GuidanceState()` per sampling pass; at each denoiser step build a `GuidanceStep` and replace the
   host's combination by `combine(step, trees, settings, state)` (fall back to the host's own on
   `GuidanceLayoutError`).
"""

from .combine import GuidanceLayoutError, combine
from .parser import (
    PromptSyntaxError,
    flatten_for_host,
    has_keywords,
    keyword_line,
    parse_prompt,
    parse_root,
    parse_sega_args,
    safe_parse,
)
from .settings import GuidanceSettings, default_sega_params
from .state import GuidanceState
from .step import GuidanceStep
from .tree import CompositePrompt, Conciliation, LeafPrompt, SegaParams, StepCount, flatten_leaves

__all__ = [
    "CompositePrompt",
    "Conciliation",
    "GuidanceLayoutError",
    "GuidanceSettings",
    "GuidanceState",
    "GuidanceStep",
    "LeafPrompt",
    "PromptSyntaxError",
    "SegaParams",
    "StepCount",
    "combine",
    "default_sega_params",
    "flatten_for_host",
    "flatten_leaves",
    "has_keywords",
    "keyword_line",
    "parse_prompt",
    "parse_root",
    "parse_sega_args",
    "safe_parse",
]
