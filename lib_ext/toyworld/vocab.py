"""The toy world's closed vocabulary: what a scene can hold and how it is drawn.

Shared by the scene generator, the judge, the tokenizer and the benches, so that all agree on one palette.
"""

from __future__ import annotations

IMAGE_SIZE = 32
BACKGROUND_RGB: tuple[int, int, int] = (128, 128, 128)

# Distinct, saturated colours far apart in RGB so the judge can classify pixels by nearest colour.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (30, 60, 230),
    "yellow": (235, 215, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Words the tokenizer knows besides colours and shapes; anything else maps to an unknown token.
FILLER_WORDS: tuple[str, ...] = ("a", "an", "and", "the", "with", "on", "background", "grey", "gray", "image", "of")
