"""Generated prompts: the parser never raises anything but PromptSyntaxError, builds neutral-prompt's tree, and its
host string gives A1111 one sub-prompt per leaf with the leaf's weight."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib_ext.guidance.parser import PromptSyntaxError, flatten_for_host, has_keywords, parse_root, safe_parse
from lib_ext.guidance.tree import CompositePrompt, LeafPrompt, flatten_leaves

RE_AND = re.compile(r"\bAND\b")
RE_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")
RE_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


def a1111_split(prompt: str) -> list[tuple[str, float]]:
    """A1111's get_multicond_prompt_list, for one prompt: (text, weight) per sub-prompt."""
    out = []
    for sub in RE_AND.split(prompt):
        m = RE_WEIGHT.search(sub)
        text, weight = m.groups() if m is not None else (sub, 1.0)
        out.append((text, float(weight) if weight is not None else 1.0))
    return out


# -- an independent transcription of neutral-prompt's parser (token lists popped from the front) --------------

KW = ("AND", "AND_PERP", "AND_SALT", "AND_TOPK")
SPLIT = re.compile(r"(\[|\]|:|" + "|".join(rf"\b{k}\b" for k in KW) + ")")


def np_tokens(s):
    return [t for t in SPLIT.split(s) if t.strip()]


def np_is_float(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def np_parse(s):
    return ("group", 1.0, "AND", np_prompts(np_tokens(s), nested=False))


def np_prompts(toks, nested):
    out = [np_prompt(toks, first=True, nested=nested)]
    while toks and not (nested and toks[0] == "]"):
        out.append(np_prompt(toks, first=False, nested=nested))
    return out


def np_prompt(toks, first, nested):
    kind = toks.pop(0) if not first and toks[0] in KW else "AND"
    if toks and toks[0] == "[":
        inner = toks[1:]
        children = np_prompts(inner, nested=True)
        if inner:
            assert inner.pop(0) == "]"
        if len(children) > 1:
            toks[:] = inner
            weight = 1.0
            if len(toks) >= 2 and toks[0] == ":" and np_is_float(toks[1]):
                toks.pop(0)
                weight = float(toks.pop(0))
            return ("group", weight, kind, children)
    text, depth, weight = "", 0, 1.0
    while toks:
        t = toks[0]
        if t == "]":
            if depth == 0:
                if nested:
                    break
            else:
                depth -= 1
        elif t == "[":
            depth += 1
        elif t == ":":
            weight_follows = len(toks) < 3 or toks[2] in KW or (toks[2] == "]" and depth == 0)
            if len(toks) >= 2 and np_is_float(toks[1].strip()) and weight_follows:
                toks.pop(0)
                weight = float(toks.pop(0).strip())
                break
        elif t in KW:
            break
        text += toks.pop(0)
    return ("leaf", weight, kind, text)


def ours_as_np(node):
    """Our tree in the transcription's shape; leaf text with blank pieces dropped, as neutral-prompt drops them."""
    kind = node.conciliation.value if node.conciliation else "AND"
    if isinstance(node, CompositePrompt):
        return ("group", repr(node.weight), kind, [ours_as_np(c) for c in node.children])
    return ("leaf", repr(node.weight), kind, "".join(np_tokens(node.prompt)))


def np_normalised(node):
    tag, weight, kind, rest = node
    if tag == "group":
        return (tag, repr(weight), kind, [np_normalised(c) for c in rest])
    return (tag, repr(weight), kind, rest)


# -- generated prompts ------------------------------------------------------------------------------------------

STRUCTURE = [" AND ", " AND_PERP ", " AND_SALT ", " AND_TOPK ", "AND_TOPK", "AND", "AND_topk", "ANDAND_TOPK", "xAND"]
BRACKETS = ["[", "]", "[ ", " ]", "(", ")", ":", " :", ": ", "::", "|"]
NUMBERS = ["0.4", "-0.5", "1", "1.", ".5", "+2", "1e3", "1001", "1e39", "1e999", "nan", "inf", "-inf", "1_0", "١",
           " 3 ", "abc", "0"]  # fmt: skip
TEXT = ["cat", " dog ", "a castle", "snowy", "glasses", " ", "  ", "\n", "\t", "日本語", "é", "\u3000", "\u200b", "🐱"]
A1111 = ["(x:1.3)", "((glasses))", "[dog:cat:0.5]", "[a|b]", " BREAK ", "<lora:foo:0.8>", "[a:b:10]", "\\(", "{a|b}"]
SEGA = ["<sega:topk=0.1>", "<sega:warmup=20%,momentum=0.3>", "<sega:bad>", "<sega:threshold=2>", "<sega:", ">"]

plain_fragments = st.sampled_from(STRUCTURE + BRACKETS + NUMBERS + TEXT + A1111) | st.text(max_size=3)
all_fragments = plain_fragments | st.sampled_from(SEGA)
prompts = st.lists(all_fragments, max_size=40).map("".join)
tagless_prompts = st.lists(plain_fragments, max_size=30).map("".join)


def check_prompt(text: str) -> None:
    try:
        tree = parse_root(text)
    except PromptSyntaxError as e:
        assert str(e)
        assert safe_parse(text) == (None, [f"semantic guidance off for this prompt: {e}"])
        assert "not a finite number" in str(e) or "nested" in str(e)  # only what would break the image
        return
    leaves = flatten_leaves(tree)
    assert leaves
    host = a1111_split(flatten_for_host(tree))
    assert len(host) == len(leaves)
    for (text_h, weight_h), leaf in zip(host, leaves):
        assert weight_h == leaf.weight
        assert math.isfinite(leaf.weight)
        assert text_h == (" " + leaf.prompt.strip() if leaf.prompt.strip() else "")


@pytest.mark.slow
# 1,000 examples of 10 prompts each: 10,000 prompts at a tenth of hypothesis' per-example cost
@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(prompts, min_size=10, max_size=10))
def test_parse_raises_only_syntax_errors_and_host_string_round_trips(texts):
    for text in texts:
        check_prompt(text)


@pytest.mark.slow
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(tagless_prompts, min_size=6, max_size=6))
def test_same_tree_as_neutral_prompt(texts):
    for text in texts:
        assert ours_as_np(parse_root(text, strict=False)) == np_normalised(np_parse(text)), text


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(TEXT + A1111 + ["[", "]", "(", ")"]) | st.text(max_size=4), max_size=20).map("".join))
def test_keyword_and_colon_free_prompt_is_one_leaf_with_its_text(text):
    text = re.sub(r"\bAND(?:_PERP|_SALT|_TOPK)?\b", "&", text.replace(":", ""))
    assert not has_keywords(text)
    tree = parse_root(text)
    assert len(tree.children) == 1
    leaf = tree.children[0]
    assert isinstance(leaf, LeafPrompt)
    assert (leaf.weight, leaf.conciliation, leaf.sega) == (1.0, None, None)
    assert leaf.prompt.strip() == text.strip()
    assert leaf.prompt in text  # a slice of the prompt, inner whitespace kept


@settings(max_examples=500, deadline=None)
@given(prompts)
def test_sega_tags_never_change_structure(text):
    # A1111 removes <word:...> tags before any prompt parser runs; what we parse must be that text's tree
    try:
        tree = parse_root(text)
    except PromptSyntaxError:
        return
    stripped = RE_EXTRA_NETWORK.sub(lambda m: "" if m.group(1) == "sega" else m.group(0), text)
    bare = parse_root(stripped)
    shape = [(leaf.weight, leaf.conciliation, leaf.prompt) for leaf in flatten_leaves(tree)]
    assert shape == [(leaf.weight, leaf.conciliation, leaf.prompt) for leaf in flatten_leaves(bare)]


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_safe_parse_never_raises_on_arbitrary_text(text):
    tree, notes = safe_parse(text)
    if tree is None:
        assert len(notes) == 1 and notes[0].startswith("semantic guidance off for this prompt")
    else:
        assert all(note.startswith("semantic guidance: ") for note in notes)
