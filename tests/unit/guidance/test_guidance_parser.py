"""The prompt grammar: neutral-prompt's parser tests (basic_test.py, malicious_test.py) ported, plus our additions
(SEGA tags, malformed input, the host string)."""

from __future__ import annotations

import re

import pytest

from lib_ext.guidance.parser import (
    LARGE_WEIGHT,
    MAX_GROUP_DEPTH,
    PromptSyntaxError,
    flatten_for_host,
    has_keywords,
    parse_prompt,
    parse_root,
    parse_sega_args,
    safe_parse,
)
from lib_ext.guidance.tree import (
    CompositePrompt,
    Conciliation,
    LeafPrompt,
    SegaParams,
    StepCount,
    flatten_leaves,
)

# A1111's multicond split (modules/prompt_parser.py, get_multicond_prompt_list), to read our host string back.
RE_AND = re.compile(r"\bAND\b")
RE_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def a1111_split(prompt: str) -> list[tuple[str, float]]:
    out = []
    for sub in RE_AND.split(prompt):
        m = RE_WEIGHT.search(sub)
        text, weight = m.groups() if m is not None else (sub, 1.0)
        out.append((text, float(weight) if weight is not None else 1.0))
    return out


# -- neutral-prompt's basic_test.py ----------------------------------------------------------------------------


def test_simple_prompt():
    root = parse_root("hello :1.0")
    assert len(root.children) == 1
    assert root.children[0].weight == 1.0
    assert root.children[0].prompt == "hello "


def test_square_weight_prompt_is_text():
    prompt = "a [b c d e : f g h :1.5]"
    assert parse_root(prompt).children[0].prompt == prompt
    assert parse_root(f"{prompt} AND_PERP other prompt").children[0].prompt == prompt


def test_and_prompt():
    root = parse_root("hello AND goodbye :2.0")
    assert [(c.weight, c.prompt, c.conciliation) for c in root.children] == [
        (1.0, "hello ", None),
        (2.0, " goodbye ", None),
    ]


@pytest.mark.parametrize(("keyword", "kind"), [("AND_PERP", Conciliation.PERP), ("AND_SALT", Conciliation.SALT)])
def test_conciliation_prompt(keyword, kind):
    root = parse_root(f"hello :1.0 {keyword} goodbye :2.0")
    assert len(root.children) == 2
    assert all(isinstance(c, LeafPrompt) for c in root.children)
    assert root.children[1].weight == 2.0
    assert root.children[1].prompt.strip() == "goodbye"
    assert root.children[1].conciliation is kind


@pytest.mark.parametrize(("keyword", "kind"), [("AND_PERP", Conciliation.PERP), ("AND_SALT", Conciliation.SALT)])
def test_nested_conciliation_prompt(keyword, kind):
    root = parse_root(f"hello :1.0 {keyword} [goodbye :2.0 {keyword} welcome :3.0]")
    assert len(root.children) == 2
    assert isinstance(root.children[0], LeafPrompt)
    group = root.children[1]
    assert isinstance(group, CompositePrompt)
    assert group.conciliation is kind
    assert all(isinstance(c, LeafPrompt) for c in group.children)
    assert group.children[1].weight == 3.0
    assert group.children[1].prompt.strip() == "welcome"
    assert group.children[1].conciliation is kind
    assert group.children[0].conciliation is None


def test_invalid_weight_stays_text():
    root = parse_root("hello :not_a_float")
    assert len(root.children) == 1
    assert root.children[0].weight == 1.0
    assert root.children[0].prompt == "hello :not_a_float"


def test_start_with_prompt_editing():
    prompt = "[(long shot:1.2):0.1] detail.."
    root = parse_root(prompt)
    assert root.children[0].weight == 1.0
    assert root.children[0].prompt == prompt


# -- neutral-prompt's malicious_test.py ------------------------------------------------------------------------


def test_empty():
    root = parse_root("")
    assert [(c.prompt, c.weight) for c in root.children] == [("", 1.0)]


def test_zero_and_negative_weights():
    assert parse_root("hello :0.0").children[0].weight == 0.0
    root = parse_root("hello :1.0 AND goodbye :-2.0")
    assert [c.weight for c in root.children] == [1.0, -2.0]


def test_unbalanced_square_brackets_are_text():
    prompt = "a [ b " * 100
    assert parse_root(prompt).children[0].prompt == prompt
    prompt = "a ] b " * 100
    assert parse_root(prompt).children[0].prompt == prompt
    # neutral-prompt gives "a [[ b ", " c ] a [[ b ", ...: its tokenizer drops the blank between "[ [". We keep it.
    repeats = 10
    root = parse_root("a [ [ b AND c ] " * repeats)
    assert [x.prompt for x in root.children] == ["a [ [ b ", *[" c ] a [ [ b "] * (repeats - 1), " c ]"]
    root = parse_root("a [ b AND c ] ] " * repeats)
    assert [x.prompt for x in root.children] == ["a [ b ", *[" c ] ] a [ b "] * (repeats - 1), " c ] ]"]


def test_erroneous_syntax():
    root = parse_root("hello :1.0 AND_PERP [goodbye :2.0")
    assert root.children[0].weight == 1.0
    assert (root.children[1].prompt, root.children[1].weight) == ("[goodbye ", 2.0)

    root = parse_root("hello :1.0 AND_PERP goodbye :2.0]")
    assert root.children[0].weight == 1.0
    assert root.children[1].prompt == " goodbye "
    # the `]` after a weight at depth 0 starts a new plain sub-prompt, as in neutral-prompt
    assert [(c.prompt, c.conciliation) for c in root.children[2:]] == [("]", None)]

    root = parse_root("hello :1.0 AND_PERP goodbye] :2.0")
    assert (root.children[1].prompt, root.children[1].weight) == (" goodbye]", 2.0)

    root = parse_root("hello :1.0 AND_PERP a [ goodbye :2.0")
    assert (root.children[1].prompt, root.children[1].weight) == (" a [ goodbye ", 2.0)

    # neutral-prompt accepts an empty AND_PERP here; so do we, with a note for under the image
    parsed = parse_prompt("hello :1.0 AND_PERP AND goodbye :2.0")
    root = parsed.tree
    assert root.children[0].weight == 1.0
    assert (root.children[1].prompt, root.children[1].conciliation) == ("", Conciliation.PERP)
    assert root.children[2].prompt == " goodbye "
    assert parsed.notes == [
        "AND_PERP at character 11 has no text, so it guides towards the empty prompt (as in neutral-prompt)"
    ]


def test_huge_number_of_prompt_parts():
    parsed = parse_prompt(" AND ".join(f"hello{i} :{i}" for i in range(10**4)))
    assert len(parsed.tree.children) == 10**4
    assert parsed.tree.children[9999].weight == 9999.0
    assert len(parsed.notes) == 10**4 - 1 - int(LARGE_WEIGHT)  # weights beyond 1000 are used, with a note each


def test_prompt_ending_with_weight():
    root = parse_root("hello :1.0 AND :2.0")
    assert root.children[0].weight == 1.0
    assert (root.children[1].prompt, root.children[1].weight) == ("", 2.0)


def test_huge_input_string():
    assert len(parse_root("hello :1.0 AND " * 10**4).children) == 10**4 + 1


def test_deeply_nested_prompt():
    root = parse_root("hello :1.0" + " AND_PERP [goodbye :2.0" * 100 + "]" * 100)
    assert isinstance(root.children[1], CompositePrompt)
    depth, node = 0, root
    while isinstance(node, CompositePrompt):
        node = node.children[-1]
        depth += 1
    # root + 99 groups: the innermost "[goodbye :2.0]" holds one prompt, so it is text
    assert depth == 100
    assert flatten_leaves(root)[-1].prompt == "[goodbye :2.0]"
    assert len(flatten_leaves(root)) == 101  # hello, 99 × "goodbye ", "[goodbye :2.0]"


def test_complex_nested_prompts():
    root = parse_root("hello :1.0 AND goodbye :2.0 AND_PERP [welcome :3.0 AND farewell :4.0 AND_PERP greetings:5.0]")
    assert [root.children[0].weight, root.children[1].weight] == [1.0, 2.0]
    assert [c.weight for c in root.children[2].children] == [3.0, 4.0, 5.0]


@pytest.mark.parametrize(
    "prompt",
    [
        "ASDFGHJKL:@#$/.,|}{><~`12[3]456AND_PERP7890",
        "hello :1.0 AND $%^&*()goodbye :2.0",
        "123hello :1.0 AND goodbye456 :2.0",
        "hello :1.0 AND [goodbye :2.0 AND [[welcome :3.0]]]",
        "hello [[[[[[[[[ :1.0 AND_PERP goodbye :2.0",
        "hello :1.0 AND_PERP goodbye ]]]]]]]]] :2.0",
        "hello ::::::: :1.0 AND_PERP goodbye :::: :2.0",
        "hello    :1.0  AND_PERP     goodbye  :2.0",
        "hello :1.0 AND AND AND AND AND goodbye :2.0",
        "AND_PERP [weighted] you thought it was the end",
    ],
)
def test_odd_prompts_parse(prompt):
    root = parse_root(prompt)
    assert flatten_leaves(root)


@pytest.mark.parametrize(
    "prompt",
    ["hello :1.0 AND_PERP :2.0 AND [goodbye]", "hello :1.0 AND_PERP AND_PERP AND_PERP AND_PERP goodbye :2.0"],
)
def test_odd_prompts_with_empty_keywords_are_used_with_a_note(prompt):
    parsed = parse_prompt(prompt)
    assert parsed.tree == parse_root(prompt, strict=False)
    assert parsed.notes and all("has no text" in note for note in parsed.notes)


# -- grammar facts from the design note -----------------------------------------------------------------------


def test_keywords_are_case_sensitive_whole_words():
    for text in ["a AND_topk b", "a ANDAND_TOPK b", "a xAND_TOPK b", "a AND_TOPKs b", "a and_topk b"]:
        assert len(parse_root(text).children) == 1, text
    assert len(parse_root("a,AND_TOPK,b").children) == 2


def test_leading_keyword_gives_empty_first_leaf():
    root = parse_root("AND_TOPK glasses :1")
    assert [(c.prompt, c.conciliation, c.weight) for c in root.children] == [
        ("", None, 1.0),
        (" glasses ", Conciliation.TOPK, 1.0),
    ]


@pytest.mark.parametrize(
    ("prompt", "weight"),
    [("x: 0.4", 0.4), ("x :-0.5", -0.5), ("x :+2", 2.0), ("x :.5", 0.5), ("x :1e-3", 0.001), ("x :3 ", 3.0)],
)
def test_weight_forms(prompt, weight):
    assert parse_root(prompt).children[0].weight == weight


@pytest.mark.parametrize(
    "prompt", ["[dog:cat:0.5]", "(x:1.3)", "[a:b:10]", "a [dog:cat:0.5] b", "(glasses:1.3),(smile:1.3)"]
)
def test_emphasis_and_editing_stay_text(prompt):
    root = parse_root(f"{prompt} AND_TOPK concept :0.4")
    assert root.children[0].prompt.rstrip() == prompt
    assert root.children[0].weight == 1.0


def test_user_examples():
    root = parse_root("a girl AND_TOPK (glasses:1.3),(smile:1.3) :0.4")
    assert root.children[1].prompt == " (glasses:1.3),(smile:1.3) "
    assert root.children[1].weight == 0.4
    root = parse_root("a castle AND_TOPK (ukiyo-e style:1.3) :-0.4")
    assert root.children[1].weight == -0.4


def test_single_bracketed_prompt_is_text_and_group_takes_weight():
    root = parse_root("a AND_TOPK [sunglasses]")
    assert root.children[1].prompt == "[sunglasses]"
    root = parse_root("a AND_TOPK [b AND_PERP c :0.5] :0.25 AND d")
    group = root.children[1]
    assert isinstance(group, CompositePrompt)
    assert (group.conciliation, group.weight) == (Conciliation.TOPK, 0.25)
    assert [leaf.prompt for leaf in flatten_leaves(root)] == ["a ", "b ", " c ", " d"]


def test_nested_brackets_that_hold_one_group_fall_back_to_text():
    # "[[a AND b]]": the outer brackets hold one prompt, so they are text and the AND splits (neutral-prompt too)
    assert [leaf.prompt for leaf in flatten_leaves(parse_root("[[a AND b]]"))] == ["[[a ", " b]]"]


def test_a1111_constructs_pass_through():
    text = "masterpiece, <lora:foo:0.8> BREAK [from:to:0.3] [cat|dog] (x:1.2)"
    root = parse_root(f"{text} AND_TOPK glasses :0.5")
    assert root.children[0].prompt == f"{text} "


def test_exponential_backtracking_is_avoided():
    prompt = "x"
    for _ in range(40):
        prompt = f"[[a AND {prompt}]]"
    root = parse_root(prompt)  # neutral-prompt's parser takes ~2^40 steps here
    assert len(flatten_leaves(root)) == 41


# -- malformed input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a :nan", "weight nan at character 3 is not a finite number"),
        ("a AND_TOPK b :inf", "weight inf at character 14 is not a finite number"),
        ("a AND_TOPK b :-1e309", "weight -inf at character 14 is not a finite number"),
        ("a AND_TOPK b :1e39", "is not a finite number in the model's 32-bit tensors"),
        ("a AND [b AND_PERP c] :1e400", "group weight inf is not a finite number"),
    ],
)
def test_non_finite_weights_are_refused_clearly(prompt, message):
    with pytest.raises(PromptSyntaxError, match=re.escape(message)):
        parse_root(prompt)
    tree, notes = safe_parse(prompt)
    assert tree is None and len(notes) == 1
    assert notes[0].startswith("semantic guidance off for this prompt: ") and message in notes[0]
    assert parse_root(prompt, strict=False)  # neutral-prompt's tree, which would put inf/NaN into the image


@pytest.mark.parametrize(
    ("prompt", "note"),
    [
        ("a AND_TOPK b :1e6", "weight 1e+06 at character 14 is beyond ±1000; it is used as written"),
        ("a AND_TOPK b :1001", "weight 1001 at character 14 is beyond ±1000"),
        ("a AND [b AND_PERP c] :1e9", "group weight 1e+09 is beyond ±1000"),
        ("a AND_TOPK :0.4", "AND_TOPK at character 2 has no text, so it guides towards the empty prompt"),
        ("a AND_TOPK", "AND_TOPK at character 2 has no text"),
        ("a AND_SALT    AND b", "AND_SALT at character 2 has no text"),
        ("AND_TOPK b", "the prompt starts with a keyword, so its first sub-prompt is empty"),
        ("a AND  AND_TOPK b", "the AND sub-prompt at character 2 has no text"),
        ("a AND_TOPK b <sega:bogus=1>", "unknown setting 'bogus'"),
        ("a AND_TOPK b <sega:threshold=2>", "between 0 and 1"),
        ("a AND_TOPK b <sega:warmup=2.5>", "whole number"),
        ("a AND_TOPK b <sega:warmup=150%>", "between 0 and 100"),
        ("a AND_TOPK b <sega:momentum>", "key=value"),
        ("a AND_TOPK b <sega:topk=0.1,threshold=0.5>", "either threshold or topk"),
        ("a <sega:topk=0.1> AND_TOPK b", "belongs to an AND sub-prompt"),
        ("a AND_PERP b <sega:topk=0.1>", "belongs to an AND_PERP"),
        ("a AND_TOPK b <sega:topk=0.1> <sega:topk=0.2>", "repeats a SEGA setting of its concept; the first value"),
    ],
)
def test_odd_input_is_used_as_neutral_prompt_reads_it_with_a_note(prompt, note):
    parsed = parse_prompt(prompt)
    assert any(note in n for n in parsed.notes), parsed.notes
    stripped = re.sub(r"<sega:[^>]+>", "", prompt)
    bare = parse_root(stripped, strict=False)
    assert _shape(parsed.tree) == _shape(bare)  # the tree neutral-prompt builds from what A1111 hands it
    tree, notes = safe_parse(prompt)
    assert tree == parsed.tree and notes == [f"semantic guidance: {n}" for n in parsed.notes]


def _shape(node):
    if isinstance(node, LeafPrompt):
        return ("leaf", node.weight, node.conciliation, node.prompt.strip())
    return ("group", node.weight, node.conciliation, [_shape(c) for c in node.children])


def test_bad_or_misplaced_tags_are_ignored_and_good_ones_kept():
    root = parse_root("a <sega:topk=0.1> AND_TOPK b <sega:bogus=1> <sega:warmup=3> :0.5")
    assert root.children[0].sega is None
    assert root.children[1].sega == SegaParams(warmup=StepCount(3))
    root = parse_root("a AND_TOPK b <sega:topk=0.1> <sega:topk=0.2,warmup=2>")
    assert root.children[1].sega == SegaParams(threshold=pytest.approx(0.9), warmup=StepCount(2))


def test_error_position_counts_the_typed_text():
    # the tag before the keyword is removed before parsing; the note still points into what the user typed
    notes = parse_prompt("a AND_TOPK b <sega:topk=0.1> :0.5 AND_TOPK").notes
    assert notes == [
        "AND_TOPK at character 34 has no text, so it guides towards the empty prompt (as in neutral-prompt)"
    ]


def test_too_deep_nesting_is_a_syntax_error():
    deep = "a" + " AND_PERP [b" * (MAX_GROUP_DEPTH + 5) + "]" * (MAX_GROUP_DEPTH + 5)
    with pytest.raises(PromptSyntaxError, match="nested deeper"):
        parse_root(deep)
    # brackets without any keyword never nest groups, however many
    assert parse_root("[" * 5000 + "x").children[0].prompt == "[" * 5000 + "x"


def test_safe_parse_survives_anything():
    assert safe_parse(None)[0] is None  # type: ignore[arg-type]
    tree, notes = safe_parse("a AND_TOPK b :0.5")
    assert notes == [] and tree is not None


# -- SEGA tags ------------------------------------------------------------------------------------------------


def test_sega_tag_is_attached_and_removed_from_text():
    root = parse_root("a castle AND_TOPK snowy <sega:topk=0.1,warmup=20%; cooldown=30 momentum=0.3,beta=0.6> :0.4")
    leaf = root.children[1]
    assert leaf.prompt == " snowy  "
    assert leaf.weight == 0.4
    assert leaf.sega == SegaParams(
        threshold=pytest.approx(0.9), warmup=StepCount(0.2, True), cooldown=StepCount(30), momentum=0.3, beta=0.6
    )
    assert "sega" not in flatten_for_host(root)


@pytest.mark.parametrize(
    "prompt",
    [
        "a AND_TOPK<sega:threshold=0.95> b :0.5",
        "a AND_TOPK b <sega:threshold=0.95> :0.5",
        "a AND_TOPK b :0.5 <sega:threshold=0.95>",  # after the weight: A1111 strips it first, so the weight holds
        "a AND_TOPK b :0.5 <sega:threshold=0.95> AND c",
    ],
)
def test_sega_tag_positions(prompt):
    root = parse_root(prompt)
    topk = root.children[1]
    assert topk.conciliation is Conciliation.TOPK
    assert topk.weight == 0.5
    assert topk.sega == SegaParams(threshold=0.95)
    assert topk.prompt.strip() == "b"


def test_sega_tag_in_a_group():
    root = parse_root("a AND_PERP [b AND_TOPK c <sega:warmup=3>] AND_TOPK d <sega:warmup=4>")
    leaves = flatten_leaves(root)
    assert [leaf.sega.warmup.value if leaf.sega else None for leaf in leaves] == [None, None, 3, 4]


def test_without_tags_the_tree_equals_the_host_stripped_prompt():
    # A1111 strips every <name:...> tag before its multicond parser; a tag must not change structure or weights
    typed = "a <lora:x:0.7> castle AND_TOPK snowy <sega:topk=0.2> :0.4 AND_PERP fog :0.3"
    stripped = re.sub(r"<(\w+):([^>]+)>", "", typed)
    ours = [(leaf.weight, leaf.conciliation) for leaf in flatten_leaves(parse_root(typed))]
    host = [(leaf.weight, leaf.conciliation) for leaf in flatten_leaves(parse_root(stripped))]
    assert ours == host


def test_other_extra_networks_are_left_alone():
    root = parse_root("<lora:sega:1> a AND_TOPK b")
    assert root.children[0].prompt == "<lora:sega:1> a "
    # the same pattern A1111 uses: a sega tag swallowed by an earlier tag is not ours
    root = parse_root("a AND_TOPK b <lora:x<sega:topk=0.1>")
    assert root.children[1].sega is None


def test_sega_params_round_trip_through_tag():
    p = SegaParams(threshold=0.85, warmup=StepCount(0.25, True), cooldown=StepCount(12), momentum=0.5, beta=0.6)
    assert parse_sega_args(p.to_tag()[len("<sega:") : -1]) == p
    assert SegaParams().to_tag() == ""


def test_step_count_resolution():
    assert StepCount(5).resolve(20) == 5
    assert StepCount(0.2, True).resolve(20) == 4
    assert StepCount(0.2, True).resolve(50) == 10
    assert StepCount(1 / 3, True).resolve(30) == 10


# -- host string ----------------------------------------------------------------------------------------------


def test_flatten_for_host_is_one_subprompt_per_leaf_with_exact_weights():
    root = parse_root("a castle :1.5 AND_TOPK snowy :0.00001 AND_PERP [fog AND_SALT night :-2.5] :0.7 AND x")
    host = a1111_split(flatten_for_host(root))
    leaves = flatten_leaves(root)
    assert [w for _, w in host] == [leaf.weight for leaf in leaves] == [1.5, 0.00001, 1.0, -2.5, 1.0]
    assert [t for t, _ in host] == [" " + leaf.prompt.strip() for leaf in leaves]


def test_flatten_for_host_keeps_identical_leaves_identical():
    host = a1111_split(flatten_for_host(parse_root("cat AND_TOPK cat :0.5 AND cat")))
    assert [t for t, _ in host] == [" cat"] * 3  # A1111 keys rows by this exact text


def test_has_keywords():
    assert has_keywords("a AND_TOPK b")
    assert has_keywords("a\nAND_PERP b")
    assert has_keywords("AND_SALT")
    assert not has_keywords("a AND b")
    assert not has_keywords("a AND_topk b xAND_TOPK")
    assert not has_keywords(None)  # type: ignore[arg-type]


def test_keyword_line_parses_back():
    from lib_ext.guidance.parser import keyword_line

    base = "a photo of a castle"
    line = keyword_line("AND_TOPK", "  (ukiyo-e style:1.3) ", -0.4, SegaParams(threshold=0.8, warmup=StepCount(3)))
    assert line == "\nAND_TOPK (ukiyo-e style:1.3) <sega:threshold=0.8,warmup=3> :-0.4"
    leaf = parse_root(base + line).children[-1]
    assert (leaf.prompt.strip(), leaf.weight, leaf.conciliation) == ("(ukiyo-e style:1.3)", -0.4, Conciliation.TOPK)
    assert leaf.sega == SegaParams(threshold=0.8, warmup=StepCount(3))
    assert keyword_line("AND_PERP", "fog", 1e-5) == "\nAND_PERP fog :0.00001"
    for args, match in [
        (("AND_TOPKK", "x", 1), "unknown keyword"),
        (("AND_TOPK", "  ", 1), "needs a concept"),
        (("AND_TOPK", "x AND y", 1), "contains a keyword"),
        (("AND_TOPK", "<lora:x:1>", 1), "contains a keyword"),
        (("AND_TOPK", "x", float("nan")), "finite"),
        (("AND_TOPK", "x", float("inf")), "finite"),
    ]:
        with pytest.raises(PromptSyntaxError, match=match):
            keyword_line(*args)
    with pytest.raises(PromptSyntaxError, match="AND_TOPK only"):
        keyword_line("AND_PERP", "x", 1, SegaParams(threshold=0.5))
