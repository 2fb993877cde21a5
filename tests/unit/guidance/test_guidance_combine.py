"""neutral-prompt mode: our combine against the published formulas, each re-implemented naively in numpy here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib_ext.guidance.combine import GuidanceLayoutError, combine
from lib_ext.guidance.ops import filter_abs_top_k, perpendicular_component
from lib_ext.guidance.parser import parse_root
from lib_ext.guidance.settings import GuidanceSettings
from lib_ext.guidance.state import GuidanceState
from lib_ext.guidance.step import GuidanceStep
from lib_ext.guidance.tree import CompositePrompt, Conciliation, LeafPrompt, StepCount, flatten_leaves

SHAPE = (4, 8, 8)

# -- naive formulas (float64 numpy) ------------------------------------------------------------------------------


def topk_naive(v: np.ndarray, ratio: float) -> np.ndarray:
    flat = np.sort(np.abs(v).ravel())
    k = min(max(int(flat.size * (1 - ratio)), 1), flat.size)
    return np.where(np.abs(v) >= flat[k - 1], v, 0.0)


def perp_naive(n: np.ndarray, v: np.ndarray) -> np.ndarray:
    nn = float(np.sum(n * n))
    return v if nn == 0 else v - n * float(np.sum(n * v)) / nn


def softmax_abs(v: np.ndarray) -> np.ndarray:
    a = np.abs(v).ravel()
    e = np.exp(a - a.max())
    return (e / e.sum()).reshape(v.shape)


def salt_naive(d: np.ndarray, vectors: list[tuple[np.ndarray, float]]) -> np.ndarray:
    maps = np.stack([softmax_abs(d)] + [softmax_abs(v) for v, _ in vectors])
    winner = np.argmax(maps, axis=0)
    out = np.zeros_like(d)
    for i, (v, w) in enumerate(vectors, start=1):
        out += w * (winner == i) * (v - d)
    return out


def rescale_naive(cfg: np.ndarray, cond: np.ndarray, phi: float) -> np.ndarray:
    if phi == 0:
        return cfg
    mean = (1 - phi) * cfg.mean() + phi * cond.mean()
    factor = phi * (cond.std(ddof=1) / cfg.std(ddof=1) - 1) + 1
    return mean + (cfg - cfg.mean()) * factor


def naive_neutral(tree, rows, x_out, u, s, phi, ratio):
    """neutral-prompt's CondDelta / AuxCondDelta visitors and combine_denoised_hijack, written out."""
    counter = iter(rows)

    def delta(node):  # δ of a child
        if isinstance(node, LeafPrompt):
            return x_out[next(counter)] - u
        cd, aux = group(node)
        return cd + aux

    def group(node):
        ds = [delta(c) for c in node.children]
        cd = sum((c.weight * d for c, d in zip(node.children, ds) if c.conciliation is None), np.zeros_like(u))
        aux = np.zeros_like(u)
        salient = []
        for c, d in zip(node.children, ds):
            if c.conciliation is Conciliation.PERP:
                aux += c.weight * perp_naive(cd, d)
            elif c.conciliation is Conciliation.TOPK:
                aux += c.weight * topk_naive(d, ratio)
            elif c.conciliation is Conciliation.SALT:
                salient.append((d, c.weight))
        return cd, aux + salt_naive(cd, salient)

    cd, aux = group(tree)
    webui = u + s * cd  # A1111's combine_denoised over the AND children (a group child's row is u + its δ)
    return rescale_naive(webui + s * aux, u + cd + aux, phi)


# -- helpers -------------------------------------------------------------------------------------------------


def make_step(prompts, *, seed=0, cond_scale=7.0, prediction="x0", dtype=torch.float64, dedup=False):
    """x_out with one row per leaf (or per distinct leaf text when dedup), then one uncond row per image."""
    trees = [parse_root(p) for p in prompts]
    g = torch.Generator().manual_seed(seed)
    conds_list, texts = [], {}
    n = 0
    for tree in trees:
        rows = []
        for leaf in flatten_leaves(tree):
            key = leaf.prompt.strip() if dedup else object()
            if key not in texts:
                texts[key] = n
                n += 1
            rows.append((texts[key], leaf.weight))
        conds_list.append(rows)
    total = n + len(trees)
    x_out = torch.randn((total, *SHAPE), generator=g, dtype=torch.float64).to(dtype)
    x_in = torch.randn((total, *SHAPE), generator=g, dtype=torch.float64).to(dtype)
    sigma = torch.linspace(1.0, 3.0, len(trees), dtype=torch.float64)
    step = GuidanceStep(x_out, x_in, sigma, conds_list, cond_scale, 3, 20, prediction)
    return step, trees


def run_naive(step, trees, phi=0.0, ratio=0.05):
    x = step.x_out.double().numpy()
    n_img = step.n_images
    out = []
    for i, tree in enumerate(trees):
        rows = [r for r, _ in step.conds_list[i]]
        out.append(naive_neutral(tree, rows, x, x[-n_img + i], step.cond_scale, phi, ratio))
    return np.stack(out)


PROMPTS = [
    "a castle AND_TOPK snowy :0.4",
    "a girl AND_TOPK (glasses:1.3),(smile:1.3) :-0.7 AND_TOPK hat :1.2",
    "a :1.5 AND b :-0.5 AND_PERP c :0.8 AND_SALT d :0.6 AND_SALT e :0.3",
    "x AND_PERP [y :0.5 AND_TOPK z :2 AND_SALT w] :0.7 AND [p AND_PERP q] :-0.4 AND_TOPK [r AND s :0.3] :0.9",
]


# -- tests ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("phi", [0.0, 0.7])
def test_neutral_mode_matches_formulas(prompt, phi):
    step, trees = make_step([prompt])
    got = combine(step, trees, GuidanceSettings(cfg_rescale=phi), GuidanceState())
    np.testing.assert_allclose(got.numpy(), run_naive(step, trees, phi=phi), rtol=1e-10, atol=1e-10)


def test_batch_with_different_prompts_and_shared_rows():
    step, trees = make_step([*PROMPTS, "a castle AND_TOPK hat :0.3 AND_TOPK hat"], seed=3, dedup=True)
    assert step.x_out.shape[0] < sum(len(flatten_leaves(t)) for t in trees) + len(trees)  # some rows shared
    got = combine(step, trees, GuidanceSettings(cfg_rescale=0.3), GuidanceState())
    np.testing.assert_allclose(got.numpy(), run_naive(step, trees, phi=0.3), rtol=1e-10, atol=1e-10)
    # each image only depends on its own rows
    alone, alone_trees = make_step(PROMPTS[1:2], seed=3)
    assert not torch.allclose(got[1], combine(alone, alone_trees, GuidanceSettings(), GuidanceState())[0])


@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.5, 1.0])
def test_topk_ratio_setting_and_clamped_k(ratio):
    step, trees = make_step(["a AND_TOPK b :0.6"])
    got = combine(step, trees, GuidanceSettings(topk_ratio=ratio), GuidanceState())
    np.testing.assert_allclose(got.numpy(), run_naive(step, trees, ratio=ratio), rtol=1e-10, atol=1e-10)


def test_filter_abs_top_k_counts():
    v = torch.randn(4, 64, 64, generator=torch.Generator().manual_seed(1))
    n = v.numel()
    assert int((filter_abs_top_k(v, 0.05) != 0).sum()) == n - int(n * 0.95) + 1  # neutral-prompt's k
    assert int((filter_abs_top_k(v, 1.0) != 0).sum()) == n  # k = 0 would crash neutral-prompt
    assert int((filter_abs_top_k(v, 0.0) != 0).sum()) == 1


def test_concept_tag_sets_its_own_ratio_in_neutral_mode():
    step, trees = make_step(["a AND_TOPK b <sega:topk=0.3> :0.6 AND_TOPK c :0.2"])
    got = combine(step, trees, GuidanceSettings(), GuidanceState())
    x = step.x_out.numpy()
    u = x[-1]
    expected = u + 7.0 * (x[0] - u) + 7.0 * (0.6 * topk_naive(x[1] - u, 0.3) + 0.2 * topk_naive(x[2] - u, 0.05))
    np.testing.assert_allclose(got.numpy()[0], expected, rtol=1e-10, atol=1e-10)


def test_concept_warmup_and_cooldown_gate_in_neutral_mode():
    step, trees = make_step(["a AND_TOPK b <sega:warmup=5,cooldown=10> :0.6"])
    plain, _ = make_step(["a"])
    x = step.x_out.numpy()
    u = x[-1]
    for i, active in [(0, False), (4, False), (5, True), (9, True), (10, False)]:
        step.step = i
        got = combine(step, trees, GuidanceSettings(), GuidanceState()).numpy()[0]
        expected = u + 7.0 * (x[0] - u) + (7.0 * 0.6 * topk_naive(x[1] - u, 0.05) if active else 0)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_keyword_free_prompt_gives_the_hosts_combination():
    step, trees = make_step(["a AND b :0.5 AND c :-0.25"])
    got = combine(step, trees, GuidanceSettings(), GuidanceState())
    x = step.x_out
    u = x[-1]
    expected = u + 7.0 * ((x[0] - u) + 0.5 * (x[1] - u) - 0.25 * (x[2] - u))
    torch.testing.assert_close(got[0], expected)


def test_perp_with_zero_base_returns_the_vector():
    n = torch.zeros(SHAPE, dtype=torch.float64)
    v = torch.randn(SHAPE, dtype=torch.float64)
    assert torch.equal(perpendicular_component(n, v), v)
    step, trees = make_step(["a AND_PERP b :0.5"])
    step.x_out[0] = step.x_out[-1]  # the AND row equals uncond: CondDelta is 0
    x = step.x_out.numpy()
    got = combine(step, trees, GuidanceSettings(), GuidanceState()).numpy()[0]
    np.testing.assert_allclose(got, x[-1] + 7.0 * 0.5 * (x[1] - x[-1]), rtol=1e-12, atol=1e-12)


def test_perp_result_is_orthogonal():
    g = torch.Generator().manual_seed(5)
    n, v = torch.randn(SHAPE, generator=g, dtype=torch.float64), torch.randn(SHAPE, generator=g, dtype=torch.float64)
    assert abs(float(torch.sum(perpendicular_component(n, v) * n))) < 1e-9


def test_float16_on_cpu():
    step, trees = make_step([PROMPTS[3]], dtype=torch.float16)
    got = combine(step, trees, GuidanceSettings(), GuidanceState())
    assert got.dtype == torch.float16
    assert torch.isfinite(got).all()
    ref, _ = make_step([PROMPTS[3]])
    ref.x_out = step.x_out.double()
    expected = combine(ref, trees, GuidanceSettings(), GuidanceState())
    # top-k masks may differ on a few ties after rounding to half precision; most of the image must agree
    close = torch.isclose(got.double(), expected, rtol=1e-2, atol=5e-2)
    assert close.float().mean() > 0.98


def test_layout_mismatch_is_reported():
    step, trees = make_step(["a AND_TOPK b"])
    with pytest.raises(GuidanceLayoutError, match="2 sub-prompt rows, the prompt has 3"):
        combine(step, [parse_root("a AND_TOPK b AND c")], GuidanceSettings(), GuidanceState())
    with pytest.raises(GuidanceLayoutError, match="2 prompt trees for 1 images"):
        combine(step, trees * 2, GuidanceSettings(), GuidanceState())
    step.conds_list = [[(0, 1.0), (7, 1.0)]]
    with pytest.raises(GuidanceLayoutError, match="outside"):
        combine(step, trees, GuidanceSettings(), GuidanceState())


def test_host_weight_mismatch_warns_once_and_uses_the_prompt():
    step, trees = make_step(["a AND_TOPK b :0.5"])
    expected = combine(step, trees, GuidanceSettings(), GuidanceState())
    step.conds_list = [[(0, 1.0), (1, 0.9)]]
    state = GuidanceState()
    got = combine(step, trees, GuidanceSettings(), state)
    combine(step, trees, GuidanceSettings(), state)
    torch.testing.assert_close(got, expected)
    assert len(state.messages) == 1 and "0.9" in state.messages[0]


def test_settings_validation():
    GuidanceSettings().validated()
    GuidanceSettings(mode="sega", cfg_rescale=1.0).validated()
    for bad, match in [
        (GuidanceSettings(mode="x"), "mode"),  # type: ignore[arg-type]
        (GuidanceSettings(cfg_rescale=1.5), "cfg_rescale"),
        (GuidanceSettings(topk_ratio=float("nan")), "topk_ratio"),
    ]:
        with pytest.raises(ValueError, match=match):
            bad.validated()


def test_tree_built_by_hand_works_too():
    tree = CompositePrompt(
        1.0,
        None,
        [LeafPrompt(1.0, None, "a"), LeafPrompt(0.5, Conciliation.TOPK, "b"), LeafPrompt(0.5, Conciliation.PERP, "c")],
    )
    step, _ = make_step(["a AND_TOPK b :0.5 AND_PERP c :0.5"])
    got = combine(step, [tree], GuidanceSettings(), GuidanceState())
    np.testing.assert_allclose(got.numpy(), run_naive(step, [tree]), rtol=1e-10, atol=1e-10)


def test_settings_dict_and_infotext_round_trip():
    from lib_ext.guidance.tree import SegaParams, StepCount

    for settings in [
        GuidanceSettings(),
        GuidanceSettings(mode="sega", cfg_rescale=0.7),
        GuidanceSettings(
            mode="sega",
            sega=SegaParams(threshold=0.95, warmup=StepCount(5), cooldown=StepCount(0.8, True), momentum=0.3, beta=0.6),
        ),
    ]:
        assert GuidanceSettings.from_dict(settings.to_dict()) == settings
        info = settings.to_infotext()
        assert all("," not in v and ":" not in v and "\n" not in v for v in info.values())
        back = GuidanceSettings.from_infotext(info)
        if settings.mode == "sega":
            assert back == GuidanceSettings(mode="sega", cfg_rescale=settings.cfg_rescale, sega=settings.sega)
        else:
            assert back == settings
    assert GuidanceSettings.from_infotext({"Steps": "20"}) is None


def test_settings_from_dict_errors_are_clear():
    assert GuidanceSettings.from_dict({"mode": "sega", "warmup": "25%", "cooldown": None}).sega.warmup == StepCount(
        0.25, True
    )
    for values, match in [
        ({"modee": "sega"}, "unknown guidance setting"),
        ({"mode": "seg"}, "mode must be"),
        ({"cfg_rescale": "abc"}, "cfg_rescale must be a number"),
        ({"cfg_rescale": True}, "cfg_rescale must be a number"),
        ({"momentum": float("inf")}, "momentum must be finite"),
        ({"threshold": 1.5}, "threshold must be in"),
        ({"warmup": 2.5}, "whole number"),
        ({"warmup": "x%"}, "percentage"),
        ({"beta": 1.0}, "beta must be in"),
    ]:
        with pytest.raises(ValueError, match=match):
            GuidanceSettings.from_dict(values)


def test_images_sharing_a_structure_are_combined_together():
    from lib_ext.guidance.combine import structure_key

    a = "a castle AND_TOPK snowy :0.4 AND_PERP fog :0.3 AND_SALT night AND [x AND_TOPK y :2] :0.5"
    b = "a house AND_TOPK rainy :0.4 AND_PERP mist :0.3 AND_SALT day AND [p AND_TOPK q :2] :0.5"
    prompts = [a, b, a, "other AND_TOPK thing :0.9", b]
    step, trees = make_step(prompts, seed=9, dedup=True)
    assert len({structure_key(t) for t in trees}) == 2
    assert structure_key(parse_root("x AND_TOPK y <sega:topk=0.1> :0.4")) != structure_key(parse_root(PROMPTS[0]))
    for settings in (GuidanceSettings(cfg_rescale=0.5), GuidanceSettings(topk_ratio=0.3)):
        got = combine(step, trees, settings, GuidanceState())
        np.testing.assert_allclose(
            got.numpy(), run_naive(step, trees, phi=settings.cfg_rescale, ratio=settings.topk_ratio), rtol=1e-10,
            atol=1e-10,
        )  # fmt: skip
