"""Emphasis and AND parsing against A1111 v1.10.1's documented examples and its test double of prompt_parser."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_ext.prompt_attention import parse_prompt_attention
from lib_ext.prompt_multicond import get_multicond_prompt_list, split_and

ROOT = Path(__file__).resolve().parents[3]


@functools.cache
def _double():
    """The Foundation's test double of `modules.prompt_parser` (written from v1.10.1), loaded by path."""
    path = ROOT / "tests" / "host" / "fake_webui" / "modules" / "prompt_parser.py"
    if not path.exists():
        pytest.skip("no prompt_parser double")
    spec = importlib.util.spec_from_file_location("_ps_prompt_parser_double", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The doctests of v1.10.1's parse_prompt_attention.
        ("normal text", [["normal text", 1.0]]),
        ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
        ("(unbalanced", [["unbalanced", 1.1]]),
        ("\\(literal\\]", [["(literal]", 1.0]]),
        ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ["a ", 1.0],
                ["house", 1.5730000000000004],
                [" ", 1.1],
                ["on", 1.0],
                [" a ", 1.1],
                ["hill", 0.55],
                [", sun, ", 1.1],
                ["sky", 1.4641000000000006],
                [".", 1.1],
            ],
        ),
        ("", [["", 1.0]]),
        ("red BREAK blue", [["red", 1.0], ["BREAK", -1], ["blue", 1.0]]),
        ("(red BREAK blue:1.5)", [["red", 1.5], ["BREAK", -1.5], ["blue", 1.5]]),
        ("BREAKfast", [["BREAKfast", 1.0]]),
    ],
)
def test_parse_prompt_attention_examples(text, expected):
    assert parse_prompt_attention(text) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab ()[]:\\.1-5BREAK,", max_size=30))
def test_parse_prompt_attention_matches_the_host_double(text):
    # A1111 raises on a weight of dots alone ("(a:.)": float('.')); the same input must fail the same way here.
    def outcome(parse):
        try:
            return parse(text)
        except ValueError as exc:
            return ("ValueError", str(exc))

    assert outcome(parse_prompt_attention) == outcome(_double().parse_prompt_attention)


def test_and_split_weights_as_a1111():
    assert split_and("a red circle AND a blue square:0.5") == [("a red circle", 1.0), (" a blue square", 0.5)]
    assert split_and("red :-1.5 AND blue: .5") == [("red", -1.5), (" blue", 0.5)]
    assert split_and("ratio 16:9") == [("ratio 16", 9.0)]  # A1111's own reading of a trailing number
    assert split_and("SAND AND") == [("SAND", 1.0), ("", 1.0)]
    assert split_and("a and b") == [("a and b", 1.0)]  # lower-case "and" is text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab AND:0.5-", max_size=20), min_size=1, max_size=4))
def test_multicond_prompt_list_matches_the_host_double(prompts):
    assert get_multicond_prompt_list(prompts) == tuple(
        list(x) if i == 1 else x for i, x in enumerate(_double().get_multicond_prompt_list(prompts))
    )
