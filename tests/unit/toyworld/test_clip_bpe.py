"""CLIP's BPE tokenizer restated without regex/ftfy: ids as open_clip's SimpleTokenizer gives them (values recorded
from open_clip 2.20.0 in the WebUI's venv), pieces as CLIP's pattern splits them, words decoded from their tokens."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lib_ext.toyworld.clip_bpe import ClipTokenizer, split_pieces

TOK = ClipTokenizer()

# open_clip.tokenizer.SimpleTokenizer().encode(text)
REFERENCE = {
    "a vermilion roundel and a 赤 triangle": [320, 624, 1469, 3668, 5602, 2003, 537, 320, 164, 113, 353, 14615],
    "it's 12 (red:1.3), BREAK!!": [585, 568, 272, 273, 263, 736, 281, 272, 269, 274, 2361, 2568, 748],
    "ねこ": [4813, 255, 4813, 497],
}


def test_ids_match_open_clip() -> None:
    for text, ids in REFERENCE.items():
        assert TOK.encode(text) == ids, text


def test_vocabulary_and_special_tokens() -> None:
    assert TOK.vocab_size == 49408
    assert (TOK.bos_id, TOK.eos_id) == (49406, 49407)
    assert TOK.encode("<|endoftext|>") == [49407]


def test_pieces_follow_clips_pattern() -> None:
    assert split_pieces("it's a red-ish cat, 42!") == ["it", "'s", "a", "red", "-", "ish", "cat", ",", "4", "2", "!"]
    assert split_pieces("赤い circle") == ["赤い", "circle"]
    assert split_pieces("  ") == []


def test_multi_token_words_decode_together() -> None:
    for word, n in (("vermilion", 3), ("cerulean", 3), ("roundel", 2), ("赤", 3)):
        ids = TOK.encode(word)
        assert len(ids) == n, word
        assert TOK.token_text(ids) == word
        # each piece alone is not the word (a byte-level piece of 赤 is not even a character)
        assert all(TOK.token_text([i]) != word for i in ids)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(categories=("Ll", "Lu", "Lo", "Nd")), min_size=1, max_size=12))
def test_a_run_of_letters_round_trips(word: str) -> None:
    text = TOK.clean(word)
    ids = TOK.encode(text)
    assert ids and all(0 <= i < TOK.vocab_size for i in ids)
    assert TOK.token_text(ids).replace(" ", "") == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_text_tokenizes(text: str) -> None:
    ids = TOK.encode(text)
    assert all(0 <= i < TOK.vocab_size for i in ids)
