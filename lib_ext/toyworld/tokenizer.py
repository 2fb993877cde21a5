"""A CLIP-like word-level tokenizer for the toy world's closed vocabulary.

Like CLIP: a start token, an end token, 77-token contexts (75 word tokens + start + end), padded with the end token.
Unlike CLIP's BPE: one token per word, unknown words map to one unknown token, punctuation is dropped.
"""

from __future__ import annotations

import re

from .vocab import COLORS, FILLER_WORDS, SHAPES

CONTEXT_LENGTH = 77
CHUNK_LENGTH = CONTEXT_LENGTH - 2

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
UNKNOWN_TOKEN = "<|unk|>"

_WORD_RE = re.compile(r"[a-z0-9]+")


class ToyTokenizer:
    def __init__(self) -> None:
        words = [START_TOKEN, END_TOKEN, UNKNOWN_TOKEN, *FILLER_WORDS, *COLORS, *SHAPES]
        if len(set(words)) != len(words):
            raise ValueError("duplicate word in the toy vocabulary")
        self.id_to_word: list[str] = words
        self.word_to_id: dict[str, int] = {w: i for i, w in enumerate(words)}
        self.bos_id = self.word_to_id[START_TOKEN]
        self.eos_id = self.word_to_id[END_TOKEN]
        self.pad_id = self.eos_id  # CLIP pads with the end token
        self.unk_id = self.word_to_id[UNKNOWN_TOKEN]
        self.vocab_size = len(words)
        self.context_length = CONTEXT_LENGTH
        self.chunk_length = CHUNK_LENGTH

    def tokens(self, text: str) -> list[str]:
        """Lower-cased words; whitespace and punctuation separate them and are dropped."""
        return _WORD_RE.findall(text.lower())

    def encode_words(self, text: str) -> list[int]:
        """Token ids of the words, without start/end tokens."""
        return [self.word_to_id.get(w, self.unk_id) for w in self.tokens(text)]

    def decode(self, ids: list[int]) -> list[str]:
        return [self.id_to_word[i] for i in ids]

    def context(self, ids_75: list[int]) -> list[int]:
        """One 77-id context: start, up to 75 word ids, end, then end tokens as padding."""
        if len(ids_75) > CHUNK_LENGTH:
            raise ValueError(f"a context holds at most {CHUNK_LENGTH} word tokens, got {len(ids_75)}")
        ids = [self.bos_id, *ids_75, self.eos_id]
        return ids + [self.pad_id] * (CONTEXT_LENGTH - len(ids))

    def __call__(self, text: str) -> list[int]:
        """The 77-id context of a short text (truncated to 75 words)."""
        return self.context(self.encode_words(text)[:CHUNK_LENGTH])
