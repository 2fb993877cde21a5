"""``modules.prompt_parser`` of v1.10.1: AND-composition, cond schedules and the batch layouts.

Simplified: prompt editing ``[a:b:N]`` / alternation are not parsed (every prompt has one schedule entry that lasts
all steps). Exact: ``re_AND``, ``re_weight``, sub-prompt dedup, ``reconstruct_*`` layouts, ``DictWithShape``,
``parse_prompt_attention``.
"""

from __future__ import annotations

import re
from collections import namedtuple

import torch

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


def get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None, use_old_scheduling=False):
    """One ``[end_at_step, text]`` entry per prompt (no prompt-editing syntax in the double)."""
    steps = base_steps if hires_steps is None or use_old_scheduling else hires_steps
    return [[[steps, prompt]] for prompt in prompts]


class SdConditioning(list):
    """A list of prompts that also carries the image size and whether it holds negative prompts (SDXL needs it)."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__()
        self.extend(prompts)
        if copy_from is None:
            copy_from = prompts
        self.is_negative_prompt = is_negative_prompt or getattr(copy_from, "is_negative_prompt", False)
        self.width = width or getattr(copy_from, "width", None)
        self.height = height or getattr(copy_from, "height", None)


def get_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    """Per prompt, a list of ScheduledPromptConditioning; identical prompts share one encoding."""
    schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)
    res = []
    seen = {}
    for prompt, schedule in zip(prompts, schedules):
        if prompt in seen:
            res.append(seen[prompt])
            continue
        texts = SdConditioning([text for _, text in schedule], copy_from=prompts)
        conds = model.get_learned_conditioning(texts)
        entries = []
        for i, (end_at_step, _) in enumerate(schedule):
            cond = {k: v[i] for k, v in conds.items()} if isinstance(conds, dict) else conds[i]
            entries.append(ScheduledPromptConditioning(end_at_step, cond))
        seen[prompt] = entries
        res.append(entries)
    return res


re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def get_multicond_prompt_list(prompts):
    """Split prompts on AND -> (per-prompt [(flat_index, weight)], flat unique sub-prompt list, text -> index)."""
    res_indexes = []
    prompt_indexes: dict[str, int] = {}
    flat = SdConditioning(prompts)
    flat.clear()
    for prompt in prompts:
        indexes = []
        for subprompt in re_AND.split(prompt):
            m = re_weight.search(subprompt)
            text, weight = m.groups() if m is not None else (subprompt, 1.0)
            weight = float(weight) if weight is not None else 1.0
            index = prompt_indexes.get(text)
            if index is None:
                index = len(flat)
                flat.append(text)
                prompt_indexes[text] = index
            indexes.append((index, weight))
        res_indexes.append(indexes)
    return res_indexes, flat, prompt_indexes


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules: list[ScheduledPromptConditioning] = schedules
        self.weight: float = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape: tuple = shape
        self.batch: list[list[ComposableScheduledPromptConditioning]] = batch


def get_multicond_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    res_indexes, flat, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(model, flat, steps, hires_steps, use_old_scheduling)
    batch = [[ComposableScheduledPromptConditioning(learned[i], weight) for i, weight in idx] for idx in res_indexes]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


class DictWithShape(dict):
    """SDXL cond dict {crossattn, vector}; ``.shape`` is the crossattn shape."""

    def __init__(self, x, shape=None):
        super().__init__()
        self.update(x)

    @property
    def shape(self):
        return self["crossattn"].shape


def _pick(schedule, current_step):
    for i, entry in enumerate(schedule):
        if current_step <= entry.end_at_step:
            return i
    return 0


def reconstruct_cond_batch(c, current_step):
    """One row per prompt (used for the negative prompts)."""
    first = c[0][0].cond
    is_dict = isinstance(first, dict)
    if is_dict:
        res = DictWithShape(
            {k: torch.zeros((len(c), *v.shape), device=v.device, dtype=v.dtype) for k, v in first.items()}
        )
    else:
        res = torch.zeros((len(c), *first.shape), device=first.device, dtype=first.dtype)
    for i, schedule in enumerate(c):
        cond = schedule[_pick(schedule, current_step)].cond
        if is_dict:
            for k, v in cond.items():
                res[k][i] = v
        else:
            res[i] = cond
    return res


def stack_conds(tensors):
    """Stack (T, D) conds; shorter ones are padded by repeating their last token vector."""
    n = max(t.shape[0] for t in tensors)
    tensors = list(tensors)
    for i, t in enumerate(tensors):
        if t.shape[0] != n:
            tensors[i] = torch.vstack([t, t[-1:].repeat([n - t.shape[0], 1])])
    return torch.stack(tensors)


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step):
    """Rows: every sub-prompt of image 0, then image 1, ...; conds_list[i] = [(row, weight), ...] for image i."""
    first = c.batch[0][0].schedules[0].cond
    tensors = []
    conds_list = []
    for composable_prompts in c.batch:
        per_image = []
        for cp in composable_prompts:
            per_image.append((len(tensors), cp.weight))
            tensors.append(cp.schedules[_pick(cp.schedules, current_step)].cond)
        conds_list.append(per_image)
    if isinstance(tensors[0], dict):
        stacked = DictWithShape({k: stack_conds([t[k] for t in tensors]) for k in tensors[0]})
    else:
        stacked = stack_conds(tensors).to(device=first.device, dtype=first.dtype)
    return conds_list, stacked


# Tokens of the emphasis syntax: escapes, brackets, ":weight)" closers, plain runs and a stray ":".
re_attention = re.compile(
    r"\\[()\[\]\\]"  # escaped bracket or backslash
    r"|\\"  # lone backslash
    r"|[(\[]"  # openers
    r"|:\s*([+-]?[.\d]+)\s*\)"  # explicit weight closing a round bracket
    r"|[)\]]"  # closers
    r"|[^\\()\[\]:]+"  # plain text
    r"|:"
)
re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)

_ROUND = 1.1
_SQUARE = 1 / 1.1


def parse_prompt_attention(text):
    """``"a (b:1.5) [c]"`` -> [["a ", 1.0], ["b", 1.5], [" ", 1.0], ["c", 1/1.1]]; BREAK -> ["BREAK", -1]."""
    res: list[list] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale_from(start, factor):
        for item in res[start:]:
            item[1] *= factor

    for m in re_attention.finditer(text):
        tok, weight = m.group(0), m.group(1)
        if tok.startswith("\\"):
            res.append([tok[1:], 1.0])
        elif tok == "(":
            open_round.append(len(res))
        elif tok == "[":
            open_square.append(len(res))
        elif weight is not None and open_round:
            scale_from(open_round.pop(), float(weight))
        elif tok == ")" and open_round:
            scale_from(open_round.pop(), _ROUND)
        elif tok == "]" and open_square:
            scale_from(open_square.pop(), _SQUARE)
        else:
            for i, part in enumerate(re_break.split(tok)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])

    # unclosed brackets still apply
    for start in open_round:
        scale_from(start, _ROUND)
    for start in open_square:
        scale_from(start, _SQUARE)

    if not res:
        res = [["", 1.0]]

    merged = [res[0]]
    for item in res[1:]:
        if item[1] == merged[-1][1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return merged
