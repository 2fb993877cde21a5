"""The seam adapter: prompts rewritten for the host, a per-call step hook, the host left alone otherwise."""

from __future__ import annotations

import torch

from lib_ext.guidance import GuidanceSettings, GuidanceState, GuidanceStep, SegaParams, combine, parse_root
from lib_ext.guidance.feature import GuidanceFeature, disabled_warning, host_tree, prepare_prompts
from lib_ext.guidance.tree import flatten_leaves
from lib_ext.patches import PatchSet
from lib_ext.prompt_multicond import get_multicond_prompt_list
from lib_ext.seam import BatchLayout, DenoiseStep, JobInfo, PromptTokens, SamplingContext

SHAPE = (4, 8, 8)


def context(prompts, host_prompts):
    """A sampling context whose layout is what the host computes from `host_prompts` (A1111's multicond split)."""
    conds, flat, _ = get_multicond_prompt_list(host_prompts)
    ctx = SamplingContext(
        job=JobInfo(prompts=list(prompts), negative_prompts=[""] * len(prompts), seeds=list(range(len(prompts)))),
        patches=PatchSet("test"),
        unet=torch.nn.Identity(),
        layout=BatchLayout.from_conds_list(conds),
        tokenize=lambda p: PromptTokens(p, (), ()),
    )
    return ctx, len(flat)


def denoise_step(ctx, n_rows, step=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = n_rows + ctx.layout.n_images
    x_out = torch.randn((rows, *SHAPE), generator=g, dtype=torch.float64)
    x_in = torch.randn((rows, *SHAPE), generator=g, dtype=torch.float64)
    sigma = torch.full((ctx.layout.n_images,), 2.0, dtype=torch.float64)
    return DenoiseStep(x_in, x_out, sigma, ctx.layout, 7.0, step, 10, "x0")


def test_rewrite_and_hook_give_combine():
    prompts = ["a castle AND_TOPK snowy <sega:topk=0.2> :0.4", "a cat AND_PERP dog :0.3 AND_TOPK hat :-0.5"]
    feature = GuidanceFeature(GuidanceSettings(mode="sega"))
    host_prompts = feature.rewrite_prompts(prompts)
    assert "sega" not in " ".join(host_prompts)
    ctx, n_rows = context(prompts, host_prompts)
    assert n_rows == 5  # one row per leaf
    feature.begin_sampling(ctx)
    assert len(ctx.step_hooks) == 1
    state = GuidanceState()
    trees = [parse_root(p) for p in prompts]
    for i in range(3):
        ds = denoise_step(ctx, n_rows, step=i, seed=i)
        expected = combine(GuidanceStep.from_denoise_step(ds), trees, GuidanceSettings(mode="sega"), state)
        torch.testing.assert_close(ctx.step_hooks[0](ds), expected)
    assert ctx.messages == []


def test_prompts_without_keywords_are_left_to_the_host():
    prompts = ["a :1] b", "[a AND b] :2"]  # neutral-prompt would read these differently from A1111
    feature = GuidanceFeature()
    assert feature.rewrite_prompts(prompts) == prompts
    ctx, _ = context(prompts, prompts)
    feature.begin_sampling(ctx)
    assert ctx.step_hooks == []


def test_mixed_batch_uses_the_hosts_split_for_plain_prompts():
    prompts = ["x AND_TOPK y :0.5", "[a AND b] :2"]
    prepared = prepare_prompts(prompts)
    assert prepared.host_prompts[1] == prompts[1]
    assert [(leaf.prompt, leaf.weight) for leaf in flatten_leaves(prepared.trees[1])] == [("[a", 1.0), (" b]", 2.0)]
    feature = GuidanceFeature()
    ctx, n_rows = context(prompts, feature.rewrite_prompts(prompts))
    feature.begin_sampling(ctx)
    ds = denoise_step(ctx, n_rows)
    out = ctx.step_hooks[0](ds)
    torch.testing.assert_close(out[1], ds.default_combine()[1])  # the plain image gets the host's formula


def test_bad_prompt_warns_and_falls_back():
    prompts = ["a AND_TOPK b :nan", "c AND_TOPK d :0.5"]
    feature = GuidanceFeature()
    host_prompts = feature.rewrite_prompts(prompts)
    assert host_prompts[0] == prompts[0]
    ctx, n_rows = context(prompts, host_prompts)
    feature.begin_sampling(ctx)
    assert len(ctx.messages) == 1 and "not a finite number" in ctx.messages[0]
    ds = denoise_step(ctx, n_rows)
    torch.testing.assert_close(ctx.step_hooks[0](ds)[0], ds.default_combine()[0])


def test_layout_that_ignored_the_rewrite_is_refused():
    prompts = ["a AND_TOPK b AND_TOPK c"]
    feature = GuidanceFeature()
    ctx, _ = context(prompts, prompts)  # the host did not use rewrite_prompts: one row, three leaves
    feature.begin_sampling(ctx)
    assert ctx.step_hooks == []
    assert "rewrite_prompts" in ctx.messages[0]


def test_each_sampling_call_has_its_own_state():
    prompts = ["a AND_TOPK b <sega:warmup=0> :0.5"]
    settings = GuidanceSettings(mode="sega")
    feature = GuidanceFeature(settings)
    host_prompts = feature.rewrite_prompts(prompts)
    ctx1, n_rows = context(prompts, host_prompts)
    ctx2, _ = context(prompts, host_prompts)
    feature.begin_sampling(ctx1)
    feature.begin_sampling(ctx2)
    ds = [denoise_step(ctx1, n_rows, step=i, seed=i) for i in range(3)]
    first = [ctx1.step_hooks[0](d) for d in ds]
    second = [ctx2.step_hooks[0](d) for d in ds]
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)


def test_disabled_feature_changes_nothing_and_warns_about_keywords():
    prompts = ["a castle AND_TOPK snowy :0.4"]
    feature = GuidanceFeature(enabled=False)
    assert feature.rewrite_prompts(prompts) == prompts
    ctx, _ = context(prompts, prompts)
    feature.begin_sampling(ctx)
    assert ctx.step_hooks == []
    assert ctx.messages == [disabled_warning(prompts)]
    assert disabled_warning(["a AND b"]) is None


def test_host_tree_matches_the_hosts_split():
    tree = host_tree("a :0.5 AND b AND c:1.5 ")
    assert [(leaf.prompt, leaf.weight) for leaf in tree.children] == [("a", 0.5), (" b", 1.0), (" c", 1.5)]


def strip_extra_networks(prompt: str) -> str:
    import re

    return re.sub(r"<(\w+):([^>]+)>", "", prompt)  # what A1111 does before it computes conds


def test_tagged_prompts_keep_sega_settings_after_the_host_stripped_them():
    tagged = ["a <lora:x:0.8> castle AND_TOPK snowy <sega:threshold=0.7,warmup=3> :0.4", "plain <lora:y:1>"]
    stripped = [strip_extra_networks(p) for p in tagged]
    prepared = prepare_prompts(stripped, tagged)
    assert prepared.warnings == []
    assert "lora" not in prepared.host_prompts[0] and "sega" not in prepared.host_prompts[0]
    assert prepared.host_prompts[1] == stripped[1]
    leaf = flatten_leaves(prepared.trees[0])[1]
    assert leaf.sega is not None and leaf.sega.threshold == 0.7 and leaf.sega.warmup.value == 3
    # through the feature: the host gives the tagged prompts in JobInfo.extra
    feature = GuidanceFeature(GuidanceSettings(mode="sega"))
    ctx, n_rows = context(stripped, feature.rewrite_prompts(stripped, tagged))
    ctx.job.extra["tagged_prompts"] = tagged
    feature.begin_sampling(ctx)
    ds = denoise_step(ctx, n_rows, step=5)  # past both warm-ups (the tag's 3, the default 40% of 10)
    expected = combine(GuidanceStep.from_denoise_step(ds), prepared.trees, GuidanceSettings(mode="sega"),
                       GuidanceState())  # fmt: skip
    torch.testing.assert_close(ctx.step_hooks[0](ds), expected)
    without = combine(GuidanceStep.from_denoise_step(ds), [parse_root(p) for p in stripped],
                      GuidanceSettings(mode="sega"), GuidanceState())  # fmt: skip
    assert not torch.allclose(expected, without)  # the tag's threshold 0.7 mattered


def test_tagged_prompt_that_reads_differently_is_ignored_with_a_warning():
    # a (pathological) tag that hides a keyword changes the structure once removed
    tagged = ["a <lora:x AND_TOPK y> AND_TOPK b <sega:warmup=2> :0.5"]
    stripped = [strip_extra_networks(p) for p in tagged]
    prepared = prepare_prompts(stripped, tagged)
    assert len(prepared.warnings) == 1 and "reads differently" in prepared.warnings[0]
    assert all(leaf.sega is None for leaf in flatten_leaves(prepared.trees[0]))
    assert prepared.active


def test_bad_sega_tag_is_ignored_with_a_note_and_the_prompt_guided():
    tagged = ["a AND_TOPK b <sega:warmup=abc> <sega:momentum=0.5> :0.5"]
    stripped = [strip_extra_networks(p) for p in tagged]
    prepared = prepare_prompts(stripped, tagged)
    assert prepared.active and prepared.host_prompts == [" a :1 AND b :0.5 "]
    assert prepared.warnings == ["semantic guidance: '<sega:warmup=abc>' at character 13: warmup='abc' is not a "
                                 "number; the tag is ignored (A1111 removes it from the prompt like any extra-network "
                                 "tag)"]  # fmt: skip
    assert prepared.trees[0].children[1].sega == SegaParams(momentum=0.5)


def test_non_finite_weight_falls_back_to_the_host():
    prompts = ["a AND_TOPK b :nan"]
    prepared = prepare_prompts(prompts)
    assert prepared.host_prompts == prompts and not prepared.active
    assert prepared.warnings == ["semantic guidance off for this prompt: weight nan at character 14 is not a finite "
                                 "number"]  # fmt: skip
