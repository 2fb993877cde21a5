"""A1111's composable prompts: `a AND b :0.5` split into weighted sub-prompts, as `modules.prompt_parser` does.

`get_multicond_prompt_list` is v1.10.1's function of that name restated on plain lists: per prompt a list of
(index into the flat list, weight), the flat list of distinct sub-prompt texts (identical texts stored once, so a
host encodes them once), and the text → index map.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def split_subprompt(subprompt: str) -> tuple[str, float]:
    """`" a blue square:0.5"` → (" a blue square", 0.5): A1111 strips the weight and trailing blanks only."""
    match = re_weight.search(subprompt)
    text, weight = match.groups() if match is not None else (subprompt, 1.0)
    return text, float(weight) if weight is not None else 1.0


def split_and(prompt: str) -> list[tuple[str, float]]:
    """One prompt's sub-prompts with their weights, in order (duplicates kept)."""
    return [split_subprompt(sub) for sub in re_AND.split(prompt)]


def get_multicond_prompt_list(
    prompts: Sequence[str],
) -> tuple[list[list[tuple[int, float]]], list[str], dict[str, int]]:
    res_indexes: list[list[tuple[int, float]]] = []
    prompt_indexes: dict[str, int] = {}
    flat: list[str] = []
    for prompt in prompts:
        indexes = []
        for text, weight in split_and(prompt):
            index = prompt_indexes.get(text)
            if index is None:
                index = len(flat)
                flat.append(text)
                prompt_indexes[text] = index
            indexes.append((index, weight))
        res_indexes.append(indexes)
    return res_indexes, flat, prompt_indexes
