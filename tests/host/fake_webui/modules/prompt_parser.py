"""``modules.prompt_parser`` of v1.10.1: AND-composition, cond schedules and the batch layouts.

Exact: ``re_AND``, ``re_weight``, sub-prompt dedup, ``reconstruct_*`` layouts, ``DictWithShape``,
``parse_prompt_attention``. Prompt editing has its own small parser (the WebUI uses a lark grammar).
"""

from __future__ import annotations

import re
from collections import namedtuple

import torch

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


class _Unparsable(Exception):
    pass


_number = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))\s*$")


class _ScheduleParser:
    """Prompt-editing syntax: ``[from:to:when]``, ``[to:when]``, ``[from::when]``, ``[a|b|...]``; ``(..)``,
    ``(..:..)`` and ``[..]`` only group. Brackets that form no valid group are plain text at the top level; a
    stray ``|`` or a dangling backslash makes the whole prompt unparsable (no schedule), as with the WebUI's
    grammar. Nodes: str, ("sched", before, after, when_text), ("alt", [options]), lists for sequences."""

    def __init__(self, text):
        self.text = text

    def parse(self):
        nodes, i = [], 0
        while i < len(self.text):
            try:
                node, i2 = self.group(i)
            except _Unparsable:
                node, i2 = None, i
            if node is not None:
                nodes.append(node)
                i = i2
            elif self.text[i] in "[]():":
                nodes.append(self.text[i])  # stray bracket or colon: literal text
                i += 1
            else:
                run, i = self.plain(i)
                if not run:
                    raise _Unparsable  # "|" outside an alternation
                nodes.append(run)
        return nodes

    def plain(self, i):
        start = i
        while i < len(self.text) and self.text[i] not in "[]():|":
            if self.text[i] == "\\":
                if i + 1 >= len(self.text):
                    raise _Unparsable
                i += 1
            i += 1
        return self.text[start:i], i

    def seq(self, i, stops):
        """A run of plain text and groups up to one of ``stops`` (not consumed)."""
        nodes = []
        while i < len(self.text) and self.text[i] not in stops:
            c = self.text[i]
            if c in "([":
                node, i = self.group(i)
                if node is None:
                    raise _Unparsable
                nodes.append(node)
            elif c in ")]:|":
                raise _Unparsable
            else:
                run, i = self.plain(i)
                nodes.append(run)
        if i >= len(self.text):
            raise _Unparsable
        return nodes, i

    def group(self, i):
        c = self.text[i] if i < len(self.text) else ""
        if c == "(":
            first, j = self.seq(i + 1, "):")
            if self.text[j] == ")":
                return ["(", first, ")"], j + 1
            second, k = self.seq(j + 1, ")")
            return ["(", first, ":", second, ")"], k + 1
        if c == "[":
            parts, seps, j = [], [], i + 1
            while True:
                part, j = self.seq(j, "]:|")
                parts.append(part)
                if self.text[j] == "]":
                    break
                seps.append(self.text[j])
                j += 1
                if seps[-1] == ":" and len(seps) <= 2 and "|" not in seps:
                    m = _number.match(self.text, j, self.text.find("]", j) if "]" in self.text[j:] else len(self.text))
                    if m is not None and self.text.find("]", j) == m.end():
                        return ("sched", parts[0] if len(parts) == 2 else None, parts[-1], m.group(1)), m.end() + 1
            if not seps:
                return ["[", parts[0], "]"], j + 1
            if set(seps) == {"|"}:
                return ("alt", parts), j + 1
            raise _Unparsable
        return None, i


def get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None, use_old_scheduling=False):
    """Per prompt, ``[[end_at_step, text], ...]``: where prompt editing switches text (same numbers as v1.10.1:
    "N" is a step, "0.N" a fraction; with hires steps the hires pass counts from 1.0 / base_steps)."""
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, steps = 0, 0.0, base_steps
    else:
        int_offset, flt_offset, steps = base_steps, 1.0, hires_steps

    def when_step(text):
        v = float(text)
        if use_old_scheduling:
            v = v * steps if v < 1 else v
        elif "." in text:
            v = (v - flt_offset) * steps
        else:
            v = v - int_offset
        return min(steps, int(v))

    def switch_steps(node, out):
        if isinstance(node, str):
            return
        if isinstance(node, tuple) and node[0] == "sched":
            when = when_step(node[3])
            if when >= 1:
                out.add(when)
            for child in (node[1] or [], node[2]):
                switch_steps(child, out)
        elif isinstance(node, tuple):
            out.update(range(1, steps + 1))
            for child in node[1]:
                switch_steps(child, out)
        else:
            for child in node:
                switch_steps(child, out)

    def render(node, step):
        if isinstance(node, str):
            return node
        if isinstance(node, tuple) and node[0] == "sched":
            chosen = (node[1] or []) if step <= when_step(node[3]) else node[2]
            return render(chosen, step)
        if isinstance(node, tuple):
            return render(node[1][(step - 1) % len(node[1])], step)
        return "".join(render(child, step) for child in node)

    def schedule(prompt):
        try:
            tree = _ScheduleParser(prompt).parse()
        except _Unparsable:
            return [[steps, prompt]]
        points = {steps}
        switch_steps(tree, points)
        return [[t, render(tree, t)] for t in sorted(points)]

    cache = {prompt: schedule(prompt) for prompt in set(prompts)}
    return [cache[prompt] for prompt in prompts]


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
