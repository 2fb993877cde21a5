from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_ext.heatmaps.tokens import (
    WordNotFound,
    _byte_decoder,
    clip_token_bytes,
    find_word,
    normalize_word,
    prompt_tokens_from_clip,
    prompt_words,
    word_spans,
)
from lib_ext.seam import PromptTokens, TokenPiece

PAD = "<|endoftext|>"


def clip_word(word: str, cuts: tuple[int, ...] = ()) -> list[str]:
    """A word as CLIP's byte-level BPE writes it, split at the given byte offsets, the last piece ending in </w>."""
    encoder = {b: ch for ch, b in _byte_decoder().items()}
    data = word.encode("utf-8")
    bounds = [0, *cuts, len(data)]
    pieces = ["".join(encoder[b] for b in data[a:z]) for a, z in itertools.pairwise(bounds)]
    pieces[-1] += "</w>"
    return pieces


def clip_chunks(*chunks: list[str]) -> list[list[str]]:
    """Chunks padded to 75 with the end token, as A1111's tokenize_line gives them (without start/end)."""
    return [c + [PAD] * (75 - len(c)) for c in chunks]


def test_bpe_table_round_trip():
    assert clip_token_bytes("monkey</w>") == (b"monkey", True)
    assert clip_token_bytes("wal") == (b"wal", False)
    assert "".join(clip_word("ナウシカ", (2, 5))).endswith("</w>")
    assert len(_byte_decoder()) == 256


def test_multi_token_word_and_plain_words():
    pt = prompt_tokens_from_clip(clip_chunks(["monkey</w>", "wal", "king</w>", "with</w>", "hat</w>"]))
    assert find_word(pt, "walking") == [2, 3]
    assert find_word(pt, "Monkey") == [1]
    assert find_word(pt, "hat") == [5]
    assert [s.word for s in word_spans(pt)] == ["monkey", "walking", "with", "hat"]
    assert pt.context_length == 77


def test_repeated_word_every_occurrence():
    tokens = ["a</w>", "red</w>", "circle</w>", "and</w>", "a</w>", "red</w>", "square</w>"]
    pt = prompt_tokens_from_clip(clip_chunks(tokens))
    assert find_word(pt, "red") == [2, 6]
    spans = {s.word: s for s in word_spans(pt)}
    assert spans["red"].positions == (2, 6) and spans["red"].occurrences == 2
    assert find_word(pt, "red circle") == [2, 3]  # a run of words


def test_prompt_longer_than_75_tokens():
    first = [f"w{i}</w>" for i in range(75)]
    pt = prompt_tokens_from_clip(clip_chunks(first, ["tail</w>", "end", "word</w>"]))
    assert pt.context_length == 154
    assert find_word(pt, "w0") == [1]
    assert find_word(pt, "w74") == [75]
    assert find_word(pt, "tail") == [78]  # chunk 1, offset 0 → 77 + 1
    assert find_word(pt, "endword") == [79, 80]


def test_sd2_openclip_padding():
    chunk = ["monkey</w>", "hat</w>", "<end_of_text>"] + ["!"] * 72  # SD2 pads with id 0, "!"
    pt = prompt_tokens_from_clip([chunk])
    assert [s.word for s in word_spans(pt)] == ["monkey", "hat"]
    assert find_word(pt, "hat") == [2]


def test_break_starts_a_new_chunk():
    pt = prompt_tokens_from_clip(clip_chunks(["monkey</w>"], ["hat</w>"]))
    assert find_word(pt, "monkey") == [1]
    assert find_word(pt, "hat") == [78]


def test_word_split_across_a_chunk_boundary():
    first = [f"w{i}</w>" for i in range(74)] + ["wal"]
    pt = prompt_tokens_from_clip([first, ["king</w>"] + [PAD] * 74])
    assert find_word(pt, "walking") == [75, 78]


def test_textual_inversion_embedding_by_name():
    tokens = ["monkey</w>", "!", "!", "!", "hat</w>"]
    pt = prompt_tokens_from_clip(clip_chunks(tokens), embeddings=[[(1, "EasyNegative", 3)]])
    assert find_word(pt, "easynegative") == [2, 3, 4]
    assert find_word(pt, "hat") == [5]
    spans = {s.word: s for s in word_spans(pt)}
    assert spans["EasyNegative"].is_embedding and spans["EasyNegative"].positions == (2, 3, 4)


def test_japanese_words_of_several_byte_level_tokens():
    # ナウシカ: 12 UTF-8 bytes cut inside characters; テト: 6 bytes in two tokens.
    tokens = clip_word("ナウシカ", (2, 5, 9)) + clip_word("テト", (3,)) + clip_word("ミヤザキハヤオ", (7,))
    pt = prompt_tokens_from_clip(clip_chunks(tokens))
    assert find_word(pt, "ナウシカ") == [1, 2, 3, 4]
    assert find_word(pt, "テト") == [5, 6]
    assert find_word(pt, "ミヤザキハヤオ") == [7, 8]
    assert [s.word for s in word_spans(pt)] == ["ナウシカ", "テト", "ミヤザキハヤオ"]


def test_punctuation_is_no_word_and_1girl_is_found():
    pt = prompt_tokens_from_clip(clip_chunks(["1</w>", "girl</w>", ",</w>", "hat</w>", "(</w>"]))
    assert [s.word for s in word_spans(pt)] == ["1", "girl", "hat"]
    assert find_word(pt, "1girl") == [1, 2]
    assert pt.chunks[0][2].word_index is None


def test_missing_word_message_lists_the_words():
    pt = prompt_tokens_from_clip(clip_chunks(["monkey</w>", "hat</w>"]))
    with pytest.raises(WordNotFound) as info:
        find_word(pt, "giraffe")
    assert "'giraffe' is not in the prompt" in info.value.message
    assert "monkey, hat" in info.value.message
    with pytest.raises(WordNotFound, match="no letters"):
        find_word(pt, ", ")


def test_host_words_tuple_names_the_words():
    """The seam's PromptTokens from another host (one token per word, word texts in `words`)."""
    pieces = (TokenPiece("red", 0), TokenPiece("cir", 1), TokenPiece("cle", 1)) + (TokenPiece("", None),) * 72
    pt = PromptTokens(prompt="red circle", words=("red", "circle"), chunks=(pieces,))
    assert find_word(pt, "circle") == [2, 3]
    with pytest.raises(ValueError, match="holds 76 tokens"):
        find_word(PromptTokens("x", ("x",), ((TokenPiece("x", 0),) * 76,)), "x")


def test_toyworld_conditioner_tokens():
    from lib_ext.toyworld.conditioning import ToyConditioner
    from lib_ext.toyworld.tokenizer import ToyTokenizer

    conditioner = ToyConditioner(text_encoder=None, tokenizer=ToyTokenizer())
    pt = conditioner.prompt_tokens("a (red:1.3) circle BREAK a blue square")
    assert find_word(pt, "red") == [2]
    assert find_word(pt, "square") == [77 + 3]
    assert find_word(pt, "a") == [1, 78]


def test_prompt_words_splitter():
    prompt = (
        "(masterpiece:1.2), [monkey] walking with hat <lora:foo_v2:0.8> BREAK ナウシカ テト, "
        r"\(bracket\) [cat:dog:10] [sun|moon] AND_TOPK concept :0.4 AND Monkey"
    )
    assert prompt_words(prompt) == [
        "masterpiece",
        "monkey",
        "walking",
        "with",
        "hat",
        "ナウシカ",
        "テト",
        "bracket",
        "cat",
        "dog",
        "sun",
        "moon",
        "concept",
    ]
    assert prompt_words("it's a 1girl") == ["it's", "a", "1girl"]
    assert prompt_words("sci-fi city, bad_prompt_v2, (hat:0.9)") == ["sci-fi", "city", "bad_prompt_v2", "hat"]


def test_hyphenated_word_and_embedding_name_found():
    tokens = ["sci</w>", "-</w>", "fi</w>", "city</w>", "!", "!"]
    pt = prompt_tokens_from_clip(clip_chunks(tokens), embeddings=[[(4, "bad_prompt_v2", 2)]])
    assert find_word(pt, "sci-fi") == [1, 3]
    assert find_word(pt, "bad_prompt_v2") == [5, 6]
    assert prompt_words("") == []


def test_normalize_word():
    assert normalize_word("Ｈａｔ!") == "hat"  # NFKC full-width
    assert normalize_word("テト") == "テト"


VOCAB = ["cat", "dog", "hat", "red", "sun", "ミヤ"]  # no two consecutive words spell another word


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(st.sampled_from(VOCAB), min_size=1, max_size=60),
    cut_seed=st.lists(st.integers(0, 8), min_size=60, max_size=60),
    breaks=st.sets(st.integers(1, 59), max_size=3),
)
def test_every_word_found_at_its_positions(words, cut_seed, breaks):
    chunks: list[list[str]] = [[]]
    expected: dict[str, list[int]] = {}
    for i, word in enumerate(words):
        nbytes = len(word.encode())
        cut = cut_seed[i] % nbytes
        pieces = clip_word(word, (cut,) if cut else ())
        if i in breaks or len(chunks[-1]) + len(pieces) > 75:
            chunks.append([])
        c = len(chunks) - 1
        start = len(chunks[-1])
        expected.setdefault(word, []).extend(c * 77 + 1 + start + j for j in range(len(pieces)))
        chunks[-1].extend(pieces)
    pt = prompt_tokens_from_clip(clip_chunks(*chunks))
    for word, positions in expected.items():
        assert find_word(pt, word) == positions
    assert {s.word: list(s.positions) for s in word_spans(pt)} == expected
