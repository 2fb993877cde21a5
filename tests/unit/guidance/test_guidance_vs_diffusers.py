"""SEGA mode against diffusers' own code: the guidance block of `SemanticStableDiffusionPipeline.__call__` (from
"# perform guidance" to `noise_pred = noise_pred_uncond + noise_guidance`), executed step after step on the same
noise predictions our `combine` gets, over whole runs with warm-up, cooldown, reversed concepts and momentum.

The peer's code is never stored here: set ``PROMPTSCOPE_DIFFUSERS`` to a checkout of huggingface/diffusers (a work
tree, or a git directory read with ``git show HEAD:…``). Without it these tests skip.

Mapping: diffusers' `edit_guidance_scale` s_e = |w| × CFG scale of our concept weight w, `reverse_editing_direction`
= w < 0, `edit_weights` all 1; our warm-up/cooldown are sampler steps, diffusers' `i` is its step index (one model
call per step with the schedulers used here).
"""

from __future__ import annotations

import textwrap
import types

import pytest
import torch

from lib_ext.guidance.combine import combine
from lib_ext.guidance.parser import parse_root
from lib_ext.guidance.settings import GuidanceSettings
from lib_ext.guidance.state import GuidanceState
from lib_ext.guidance.step import GuidanceStep
from lib_ext.guidance.tree import SegaParams, StepCount
from tests.peer_source import peer_source as read_peer

ENV = "PROMPTSCOPE_DIFFUSERS"
PIPELINE = "src/diffusers/pipelines/deprecated/semantic_stable_diffusion/pipeline_semantic_stable_diffusion.py"
SHAPE = (4, 8, 8)


def peer_source(path: str) -> str:
    return read_peer(ENV, "huggingface/diffusers", path)


@pytest.fixture(scope="module")
def guidance_block():
    """diffusers' per-step guidance code, compiled; it reads and writes the names of the pipeline's loop."""
    lines = peer_source(PIPELINE).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# perform guidance")
    end = next(
        i for i in range(start, len(lines)) if lines[i].strip() == "noise_pred = noise_pred_uncond + noise_guidance"
    )
    block = textwrap.dedent("\n".join(lines[start : end + 1]))
    assert "torch.quantile" in block and "edit_momentum" in block  # the code this test is about
    return compile(block, PIPELINE, "exec")


def run(guidance_block, concepts, *, steps=12, s_g=7.0, s_m=0.3, beta=0.6, batch=2, seed=0, prediction="eps"):
    """Per step: (ours, diffusers') guided ε. concepts: (text, weight, threshold, warmup, cooldown or None)."""
    g = torch.Generator().manual_seed(seed)
    parts = ["a photo of a face"]
    for text, w, q, warm, cool in concepts:
        tag = f"threshold={q},warmup={warm}" + (f",cooldown={cool}" if cool is not None else "")
        parts.append(f"AND_TOPK {text} <sega:{tag}> :{w}")
    tree = parse_root(" ".join(parts))
    settings = GuidanceSettings(mode="sega", sega=SegaParams(threshold=0.9, warmup=StepCount(0), momentum=s_m,
                                                               beta=beta))  # fmt: skip
    state = GuidanceState()
    n, n_leaves = len(concepts), 1 + len(concepts)
    conds_list = [[(b * n_leaves + j, w) for j, w in enumerate([1.0] + [c[1] for c in concepts])] for b in range(batch)]
    sigmas = torch.logspace(1.2, -1.5, steps, dtype=torch.float32)
    ns = {
        "torch": torch,
        "self": types.SimpleNamespace(
            uncond_estimates=None, text_estimates=None, edit_estimates=None, sem_guidance=None
        ),  # fmt: skip
        "do_classifier_free_guidance": True,
        "enable_edit_guidance": True,
        "enabled_editing_prompts": n,
        "num_inference_steps": steps,
        "guidance_scale": s_g,
        "edit_guidance_scale": [abs(c[1]) * s_g for c in concepts],
        "edit_threshold": [c[2] for c in concepts],
        "reverse_editing_direction": [c[1] < 0 for c in concepts],
        "edit_weights": None,
        "edit_warmup_steps": [c[3] for c in concepts],
        "edit_cooldown_steps": [c[4] if c[4] is not None else steps + 1 for c in concepts],
        "edit_momentum_scale": s_m,
        "edit_mom_beta": beta,
        "device": "cpu",
        "sem_guidance": None,
        "edit_momentum": None,
    }
    out = []
    for i in range(steps):
        eps = torch.randn((batch * n_leaves + batch, *SHAPE), generator=g)
        eps_u = eps[-batch:]
        rows = [eps[[b * n_leaves + j for b in range(batch)]] for j in range(n_leaves)]  # text, then each concept
        ns.update(i=i, noise_pred=torch.cat([eps_u, *rows]))  # diffusers' chunks: uncond, text, edit_1..n
        exec(guidance_block, ns)
        theirs = ns["noise_pred"]

        sigma = sigmas[i].repeat(batch)
        x = torch.randn((batch, *SHAPE), generator=g)
        x_rows = torch.cat([x.repeat_interleave(n_leaves, dim=0), x])
        if prediction == "eps":
            ours = combine(GuidanceStep(eps, x_rows, sigma, conds_list, s_g, i, steps, "eps"), [tree] * batch,
                           settings, state)  # fmt: skip
        else:
            row_sigma = torch.cat([sigma.repeat_interleave(n_leaves), sigma]).view(-1, 1, 1, 1)
            x0 = x_rows - row_sigma * eps  # what a k-diffusion denoiser returns
            denoised = combine(GuidanceStep(x0, x_rows, sigma, conds_list, s_g, i, steps, "x0"), [tree] * batch,
                               settings, state)  # fmt: skip
            ours = (x - denoised) / sigma.view(-1, 1, 1, 1)
        out.append((ours, theirs))
    return out


CONCEPTS = [("glasses", 0.6, 0.9, 2, None), ("smile", -0.4, 0.75, 4, 9), ("hat", 0.8, 0.5, 0, None)]


@pytest.mark.parametrize("prediction", ["eps", "x0"])
@pytest.mark.parametrize(
    "concepts",
    [CONCEPTS, CONCEPTS[:1], [("snow", -1.2, 0.95, 0, 6)], [("a", 0.5, 0.9, 3, None), ("b", 0.5, 0.9, 3, None)]],
    ids=["three", "one", "reversed-cooldown", "same-warmup"],
)
def test_sega_equals_diffusers_own_code(guidance_block, concepts, prediction):
    for i, (ours, theirs) in enumerate(run(guidance_block, concepts, prediction=prediction)):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4, msg=lambda m, i=i: f"step {i}: {m}")


def test_the_comparison_sees_the_edit(guidance_block):
    # the runs above are not trivially equal: a concept's weight visibly changes diffusers' result
    strong = run(guidance_block, [("hat", 0.8, 0.5, 0, None)], steps=3)
    weak = run(guidance_block, [("hat", 0.1, 0.5, 0, None)], steps=3)
    assert not torch.allclose(strong[-1][1], weak[-1][1], atol=1e-3)
