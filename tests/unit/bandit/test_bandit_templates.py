"""Templates: parsing, expansion, and the factored slot model."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib_ext.bandit.templates import SlotModel, is_template, parse_template


def test_parse_and_expand():
    t = parse_template("a photo of a {cat|dog|red fox}, {oil painting|(watercolor:1.2)}")
    assert [len(s.options) for s in t.slots] == [3, 2]
    assert t.expand([2, 1]) == "a photo of a red fox, (watercolor:1.2)"
    assert t.choice_texts([0, 0]) == ["cat", "oil painting"]
    assert not is_template("plain prompt, (x:1.1), [a|b]")
    assert is_template("{a|b}")


def test_weights_escapes_and_a1111_syntax_inside_options():
    t = parse_template(r"{0.5::a|2::b|c} \{lit\|eral\} {[x|y]|(z:1.3)|<lora:q:0.5>}")
    assert [o.weight for o in t.slots[0].options] == [0.5, 2.0, 1.0]
    assert [o.text for o in t.slots[0].options] == ["a", "b", "c"]
    assert [o.text for o in t.slots[1].options] == ["[x|y]", "(z:1.3)", "<lora:q:0.5>"]
    assert t.expand([1, 0]) == "b {lit|eral} [x|y]"
    # A1111's escapes stay for its own parser.
    assert parse_template(r"\(x\) {a|b}").expand([0]) == r"\(x\) a"
    # Empty option = "optional" fragment.
    assert parse_template("x{, detailed|}").expand([1]) == "x"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{a|b", "unclosed"),
        ("a}b", "unmatched"),
        ("{a|{b|c}}", "nested"),
        ("{2$$a|b|c}", "multi-select"),
        ("{}", "empty"),
        ("{0::a|b}", "weight"),
    ],
)
def test_parse_errors_are_clear(text, match):
    with pytest.raises(ValueError, match=match):
        parse_template(text)


def test_choice_validation():
    t = parse_template("{a|b} {c|d|e}")
    with pytest.raises(ValueError, match="2 slot"):
        t.expand([0])
    with pytest.raises(ValueError, match="out of range"):
        t.expand([0, 3])
    with pytest.raises(ValueError, match="out of range"):
        t.expand([True, 0])


_safe = st.text(alphabet=st.characters(blacklist_characters="{}|\\()[]<>:", blacklist_categories=("Cs",)), max_size=8)


@given(
    st.lists(st.tuples(_safe, st.lists(_safe, min_size=1, max_size=4)), max_size=4),
    _safe,
    st.data(),
)
def test_roundtrip_property(groups, tail, data):
    # Build a template from literals and option lists, parse it, and expand a random choice.
    src, expected, choices = [], [], []
    for lit, opts in groups:
        if len(opts) == 1 and opts[0].strip() == "":
            opts = ["x", *opts]
        c = data.draw(st.integers(0, len(opts) - 1))
        src.append(lit + "{" + "|".join(opts) + "}")
        expected.append(lit + opts[c])
        choices.append(c)
    src.append(tail)
    expected.append(tail)
    t = parse_template("".join(src))
    assert len(t.slots) == len(groups)
    assert t.expand(choices) == "".join(expected)


def _simulate(model, rng, n, like_prob):
    choices = [model.random_choices(rng) for _ in range(n)]
    liked = [rng.random() < like_prob(c) for c in choices]
    return choices, liked


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_slot_model_learns_the_good_option(seed):
    t = parse_template("{a|b|c|d} {x|y|z}")
    rng = np.random.default_rng(seed)
    # Option c of slot 0 is much liked; slot 1 does not matter.
    choices, liked = _simulate(SlotModel(t), rng, 400, lambda c: 0.7 if c[0] == 2 else 0.15)
    model = SlotModel(t).fit(choices, liked)
    picks = np.array([model.thompson_choices(rng) for _ in range(500)])
    assert np.mean(picks[:, 0] == 2) > 0.9
    summary = model.option_summary()
    assert max(range(4), key=lambda i: summary[0][i]["weight_mean"]) == 2


def test_slot_model_intervals_are_calibrated_on_an_irrelevant_slot():
    # Slot 1 has no effect: the 95 % interval of w_y − w_x must cover 0 in about 95 % of replications.
    t = parse_template("{a|b|c|d} {x|y|z}")
    covered, reps = 0, 120
    for seed in range(reps):
        rng = np.random.default_rng(100 + seed)
        choices, liked = _simulate(SlotModel(t), rng, 300, lambda c: 0.7 if c[0] == 2 else 0.15)
        m = SlotModel(t).fit(choices, liked)
        cov = np.linalg.inv(m.hess)
        i, j = m.offsets[1], m.offsets[1] + 1
        sd = np.sqrt(cov[i, i] + cov[j, j] - 2 * cov[i, j])
        covered += abs(m.m[i] - m.m[j]) < 1.96 * sd
    assert 0.88 <= covered / reps <= 1.0


def test_slot_model_credit_assignment_beats_independent_counts():
    # Options of slot 1 are equally good, but the sampler chose y mostly together with the great option c.
    t = parse_template("{a|c} {x|y}")
    rng = np.random.default_rng(1)
    choices = [(1, 1)] * 150 + [(0, 0)] * 150 + [(1, 0)] * 20 + [(0, 1)] * 20
    liked = [rng.random() < (0.8 if c[0] == 1 else 0.1) for c in choices]
    model = SlotModel(t).fit(choices, liked)
    w = model.option_summary()[1]
    # Independent per-slot rates would give y ≈ 0.73 vs x ≈ 0.17; the joint model sees y ≈ x.
    assert abs(w[0]["weight_mean"] - w[1]["weight_mean"]) < 0.7
    assert model.option_summary()[0][1]["weight_mean"] - model.option_summary()[0][0]["weight_mean"] > 1.5


def test_slot_model_prior_from_template_weights_and_precision_grows():
    t = parse_template("{4::a|1::b}")
    model = SlotModel(t)
    assert model.m[1] - model.m[2] == pytest.approx(np.log(4))
    sd_before = model.sd
    model.fit([(0,), (1,), (0,)], [True, False, True])
    assert np.all(model.sd <= sd_before) and model.sd[1] < sd_before[1]
    with pytest.raises(ValueError):
        model.fit([(0,)], [True, False])
    # Discount weights of 0 make data count for nothing.
    zero = SlotModel(t).fit([(0,), (1,)], [True, False], weights=[0.0, 0.0])
    np.testing.assert_allclose(zero.m, SlotModel(t).m0)
