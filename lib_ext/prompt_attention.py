"""A1111's prompt emphasis syntax, `(word:1.2)`, `(word)`, `[word]`, `\\(` escapes and `BREAK`, as a pure function.

Same result as `modules.prompt_parser.parse_prompt_attention` of v1.10.1 (the regular expression and the bracket
bookkeeping are those of the host), so that a feature that needs token weights (heatmaps, guidance) and the
standalone host agree with A1111 on every prompt.
"""

from __future__ import annotations

import re

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK_WEIGHT = -1.0  # the weight A1111 gives a BREAK marker

re_attention = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)

re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text: str) -> list[list]:
    """Split `text` into `[text, weight]` runs; a `BREAK` keyword becomes `["BREAK", -1]`.

    >>> parse_prompt_attention('an (important) word')
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    """
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= multiplier

    for m in re_attention.finditer(text):
        tok = m.group(0)
        weight = m.group(1)
        if tok.startswith("\\"):
            res.append([tok[1:], 1.0])
        elif tok == "(":
            round_brackets.append(len(res))
        elif tok == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif tok == ")" and round_brackets:
            multiply_range(round_brackets.pop(), ROUND_MULTIPLIER)
        elif tok == "]" and square_brackets:
            multiply_range(square_brackets.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(re.split(re_break, tok)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])

    # Brackets left open still apply, as in A1111.
    for pos in round_brackets:
        multiply_range(pos, ROUND_MULTIPLIER)
    for pos in square_brackets:
        multiply_range(pos, SQUARE_MULTIPLIER)

    if not res:
        res = [["", 1.0]]

    # Merge runs of identical weights (a BREAK's -1 never merges with text).
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


def is_break(text: str, weight: float) -> bool:
    return text == "BREAK" and weight == BREAK_WEIGHT
