"""Our parser against neutral-prompt's own code: its parser on the same prompts (a table and generated prompts), and
its own parser unit tests (test/perp_parser/*.py) run against our parser.

The peer's code is never stored here: set ``PROMPTSCOPE_NEUTRAL_PROMPT`` to a checkout of ljleb/sd-webui-neutral-prompt
(a work tree, or a git directory, bare or not, whose HEAD is read with ``git show``). Without it these tests skip.

The one deliberate difference: neutral-prompt drops whitespace-only pieces from a sub-prompt's text (``[b] [c]``
reaches A1111 as ``[b][c]``), we keep the text as typed. `np_text` applies that drop to our text, so everything else —
structure, weights, conciliations, the rest of the text — must be identical.
"""

from __future__ import annotations

import math
import re
import sys
import types
import unittest
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib_ext.guidance.parser import PromptSyntaxError, parse_prompt, parse_root, safe_parse
from lib_ext.guidance.tree import CompositePrompt
from tests.peer_source import peer_source as read_peer

ENV = "PROMPTSCOPE_NEUTRAL_PROMPT"
PARSER = "lib_neutral_prompt/neutral_prompt_parser.py"
THEIR_TESTS = ("test/perp_parser/basic_test.py", "test/perp_parser/malicious_test.py")


def peer_source(path: str) -> str:
    return read_peer(ENV, "ljleb/sd-webui-neutral-prompt", path)


@pytest.fixture(scope="module")
def np_parser() -> types.ModuleType:
    """neutral-prompt's parser module, executed from its source (it imports only the standard library)."""
    module = types.ModuleType("neutral_prompt_parser")
    module.__file__ = PARSER
    sys.modules[module.__name__] = module  # dataclasses look their module up while building the classes
    try:
        exec(compile(peer_source(PARSER), PARSER, "exec"), module.__dict__)
    finally:
        sys.modules.pop(module.__name__, None)
    return module


def np_text(text: str, np) -> str:
    """Our leaf text as neutral-prompt writes it: the same cut, whitespace-only pieces dropped."""
    return "".join(np.tokenize(text))


def ours_as_np(node, np):
    kind = node.conciliation.value if node.conciliation else None
    if isinstance(node, CompositePrompt):
        return ("group", repr(node.weight), kind, [ours_as_np(c, np) for c in node.children])
    return ("leaf", repr(node.weight), kind, np_text(node.prompt, np))


def theirs(node, np):
    kind = node.conciliation.value if node.conciliation else None
    if isinstance(node, np.CompositePrompt):
        return ("group", repr(node.weight), kind, [theirs(c, np) for c in node.children])
    return ("leaf", repr(node.weight), kind, node.prompt)


def usable(weight: float) -> bool:
    return math.isfinite(weight) and abs(weight) <= 3.4028234663852886e38


def weights(node, np):
    yield node.weight
    if isinstance(node, np.CompositePrompt):
        for child in node.children:
            yield from weights(child, np)


def check_against_neutral_prompt(text: str, np) -> None:
    """Same tree as neutral-prompt; refused only when neutral-prompt's tree holds a weight the image cannot take."""
    expected = np.parse_root(text)
    try:
        parsed = parse_prompt(text)
    except PromptSyntaxError as e:
        assert not all(usable(w) for w in weights(expected, np)), (text, str(e))
        assert ours_as_np(parse_root(text, strict=False), np) == theirs(expected, np), text
        tree, notes = safe_parse(text)
        assert tree is None and notes == [f"semantic guidance off for this prompt: {e}"]
        return
    assert ours_as_np(parsed.tree, np) == theirs(expected, np), text


# -- a table: neutral-prompt's own test prompts, the prompts issue 11 found switching us off, and odd corners ----

TABLE = [
    "hello :1.0",
    "hello AND goodbye :2.0",
    "hello :1.0 AND_PERP goodbye :2.0",
    "hello :1.0 AND_SALT [goodbye :2.0 AND_SALT welcome :3.0]",
    "hello :not_a_float",
    "a [b c d e : f g h :1.5] AND_PERP other prompt",
    "[(long shot:1.2):0.1] detail..",
    "",
    "hello :1.0 AND goodbye :-2.0",
    "a [ [ b AND c ] " * 10,
    "a [ b AND c ] ] " * 10,
    "hello :1.0 AND_PERP [goodbye :2.0",
    "hello :1.0 AND_PERP goodbye :2.0]",
    "hello :1.0 AND_PERP goodbye] :2.0",
    "hello :1.0 AND_PERP a [ goodbye :2.0",
    "hello :1.0 AND_PERP AND goodbye :2.0",  # an empty concept
    "hello :1.0 AND :2.0",
    "hello :1.0" + " AND_PERP [goodbye :2.0" * 100 + "]" * 100,
    "hello :1.0 AND goodbye :2.0 AND_PERP [welcome :3.0 AND farewell :4.0 AND_PERP greetings:5.0]",
    "ASDFGHJKL:@#$/.,|}{><~`12[3]456AND_PERP7890",
    "hello :1.0 AND_PERP :2.0 AND [goodbye]",
    "hello [[[[[[[[[ :1.0 AND_PERP goodbye :2.0",
    "hello ::::::: :1.0 AND_PERP goodbye :::: :2.0",
    "hello :1.0 AND_PERP AND_PERP AND_PERP AND_PERP goodbye :2.0",
    "AND_PERP [weighted] you thought it was the end",
    "a castle AND_TOPK snowy :1001",  # beyond our old ±1000 limit
    "a castle AND_TOPK snowy :-1e30",
    "a AND_TOPK",
    "AND_TOPK glasses :0.5",
    "a AND_SALT    AND b",
    "a AND_TOPK [b AND_PERP c :0.5] :2000 AND d",
    "a AND_TOPK b :1e39",  # refused: infinite in 32-bit tensors
    "a AND_TOPK b :nan",  # refused
    "a AND_TOPK b :inf",  # refused
    "a AND [b AND_PERP c] :1e400",  # refused
    "a girl AND_TOPK (glasses:1.3),(smile:1.3) :0.4",
    "[[a AND b]]",
    "a [b] [c] AND_TOPK d",
]


@pytest.mark.parametrize("text", TABLE)
def test_table_same_tree_as_neutral_prompt(np_parser, text):
    check_against_neutral_prompt(text, np_parser)


def test_the_prompts_issue_11_found_are_accepted_with_a_note(np_parser):
    for text in ("hello :1.0 AND_PERP AND goodbye :2.0", "a castle AND_TOPK snowy :1001", "AND_TOPK glasses :0.5"):
        tree, notes = safe_parse(text)
        assert tree is not None and notes, text
        assert ours_as_np(tree, np_parser) == theirs(np_parser.parse_root(text), np_parser)


# -- generated prompts ------------------------------------------------------------------------------------------

PIECES = [" AND ", " AND_PERP ", " AND_SALT ", " AND_TOPK ", "AND_TOPK", "AND", "AND_topk", "xAND", "[", "]", "[ ",
          " ]", ":", " :", ": ", "0.4", "-0.5", "1.", ".5", "1001", "1e39", "1e999", "nan", "-inf", "abc", "cat",
          " dog ", " ", "\n", "(x:1.3)", "[dog:cat:0.5]", " BREAK ", "<lora:foo:0.8>", "日本語"]  # fmt: skip


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=30).map("".join), min_size=5,
                max_size=5))  # fmt: skip
def test_generated_same_tree_as_neutral_prompt(np_parser, texts):
    for text in texts:
        check_against_neutral_prompt(text, np_parser)


# -- neutral-prompt's own unit tests, run against our parser ----------------------------------------------------


def our_parser_as_np_module(np) -> types.ModuleType:
    """A stand-in for `lib_neutral_prompt.neutral_prompt_parser` whose parse_root is ours, its tree built from
    neutral-prompt's own classes (leaf text through `np_text`, the whitespace difference above)."""

    def convert(node):
        conciliation = np.ConciliationStrategy(node.conciliation.value) if node.conciliation else None
        if isinstance(node, CompositePrompt):
            return np.CompositePrompt(node.weight, conciliation, [convert(c) for c in node.children])
        return np.LeafPrompt(node.weight, conciliation, np_text(node.prompt, np))

    module = types.ModuleType("neutral_prompt_parser")
    module.__dict__.update({k: v for k, v in np.__dict__.items() if not k.startswith("__")})
    module.parse_root = lambda text: convert(parse_prompt(text).tree)
    return module


@pytest.mark.parametrize("path", THEIR_TESTS)
def test_neutral_prompts_own_parser_tests_pass_on_our_parser(np_parser, path, monkeypatch):
    source = peer_source(path)
    package = types.ModuleType("lib_neutral_prompt")
    package.neutral_prompt_parser = our_parser_as_np_module(np_parser)
    monkeypatch.setitem(sys.modules, "lib_neutral_prompt", package)
    monkeypatch.setitem(sys.modules, "lib_neutral_prompt.neutral_prompt_parser", package.neutral_prompt_parser)
    namespace = {"__name__": f"neutral_prompt_{Path(path).stem}", "__file__": path}
    exec(compile(source, path, "exec"), namespace)
    cases = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, unittest.TestCase)]
    assert cases
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in cases)
    result = unittest.TestResult()
    suite.run(result)
    assert result.testsRun > 10
    problems = [f"{test.id()}: {trace.splitlines()[-1]}" for test, trace in result.failures + result.errors]
    assert not problems, problems


def test_our_stand_in_is_not_neutral_prompts_parser(np_parser):
    # the stand-in must really run our parser (a text only ours keeps: the blank piece between two groups)
    stand_in = our_parser_as_np_module(np_parser)
    assert stand_in.parse_root is not np_parser.parse_root
    assert parse_root("[b] [c]").children[0].prompt == "[b] [c]"
    assert np_parser.parse_root("[b] [c]").children[0].prompt == "[b][c]"
    assert re.fullmatch(r"\[b\]\s*\[c\]", stand_in.parse_root("[b] [c]").children[0].prompt)
