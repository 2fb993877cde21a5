"""The toy world's closed vocabulary: what a scene can hold and how it is drawn.

Shared by the scene generator, the judge, the tokenizer and the benches, so that all agree on one palette.
"""

from __future__ import annotations

IMAGE_SIZE = 32
BACKGROUND_RGB: tuple[int, int, int] = (40, 40, 40)

# Light objects on a dark background, their colour a tint (chroma 90) around one lightness (175): an object's place
# is carried by a strong signal in all three channels, its colour by a weaker one. With saturated colours on grey
# (the first version), recolouring an object in place was a bigger change in pixel space than moving it, so no
# edit during sampling could change a colour and keep the layout (the nearest image of the new colour is elsewhere);
# here recolouring in place is the nearest, as it is for SD's latents. Hues 0/120/240/60 degrees, far apart.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (235, 145, 145),
    "green": (145, 235, 145),
    "blue": (145, 145, 235),
    "yellow": (205, 205, 115),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Words the tokenizer knows besides colours and shapes; anything else maps to an unknown token.
FILLER_WORDS: tuple[str, ...] = ("a", "an", "and", "the", "with", "on", "background", "grey", "gray", "image", "of")

# Synonyms the LDM checkpoint (`ldm_model.py`) learns besides the canonical words: CLIP's BPE splits each into several
# tokens (vermilion = ver·mil·ion, cerulean = cer·u·lean, roundel = roun·del, 赤 = three byte-level pieces), so a
# word's heatmap must gather its pieces, and 赤 is a non-ASCII word. The word-level toy model does not know them.
SYNONYMS: dict[str, str] = {"vermilion": "red", "赤": "red", "cerulean": "blue", "roundel": "circle"}
