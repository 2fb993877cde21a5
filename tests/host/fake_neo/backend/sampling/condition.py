"""Conditions as Neo compiles them (test double; signatures of backend/sampling/condition.py)."""

import math

import torch


def repeat_to_batch_size(tensor, batch_size):
    if tensor.shape[0] > batch_size:
        return tensor[:batch_size]
    if tensor.shape[0] < batch_size:
        reps = math.ceil(batch_size / tensor.shape[0])
        return tensor.repeat([reps] + [1] * (tensor.dim() - 1))[:batch_size]
    return tensor


class Condition:
    def __init__(self, cond):
        self.cond = cond

    def process_cond(self, batch_size, device, **kwargs):
        return type(self)(repeat_to_batch_size(self.cond, batch_size).to(device))

    def can_concat(self, other):
        return self.cond.shape == other.cond.shape

    def concat(self, others):
        return torch.cat([self.cond] + [o.cond for o in others])


class ConditionCrossAttn(Condition):
    def can_concat(self, other):
        a, b = self.cond.shape, other.cond.shape
        if a == b:
            return True
        if a[0] != b[0] or a[2] != b[2]:
            return False
        return math.lcm(a[1], b[1]) // min(a[1], b[1]) <= 4

    def concat(self, others):
        conds = [self.cond] + [o.cond for o in others]
        length = 1
        for c in conds:
            length = math.lcm(length, c.shape[1])
        return torch.cat([c if c.shape[1] == length else c.repeat(1, length // c.shape[1], 1) for c in conds])


def compile_conditions(cond):
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return [dict(cross_attn=cond, model_conds=dict(c_crossattn=ConditionCrossAttn(cond)))]
    return [
        dict(
            cross_attn=cond["crossattn"],
            pooled_output=cond["vector"],
            model_conds=dict(c_crossattn=ConditionCrossAttn(cond["crossattn"]), y=Condition(cond["vector"])),
        )
    ]


def _index(cond, indices):
    if isinstance(cond, dict):
        return {k: v[indices] for k, v in cond.items()}
    return cond[indices]


def compile_weighted_conditions(cond, weights):
    """One cond per sub-prompt index (rows of every image), strength = its weight (the last image's)."""
    results = []
    for per_image in map(list, zip(*weights)):
        indices = [i for i, _w in per_image]
        entry = compile_conditions(_index(cond, indices))
        entry[0]["strength"] = per_image[-1][1]
        results += entry
    return results
