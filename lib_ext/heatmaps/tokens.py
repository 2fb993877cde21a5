"""Words → token positions, aligned with the host's own tokenisation.

The host gives its token chunks (A1111: ``clip.tokenize_line()``: chunks of 75 tokens, a ``BREAK`` starts a new chunk,
emphasis already stripped into multipliers, ``<lora:…>`` tags already removed, textual-inversion embeddings occupying
several positions) as a host-independent :class:`PromptTokens`: per chunk, the chunk's real tokens (no start/end
token, no padding) as :class:`TokenPiece` s, each saying which word of the prompt it belongs to. The text encoder sees
each chunk as 77 tokens (start + 75 + end), chunks concatenated: chunk ``c`` offset ``o`` is context position
``c·77 + 1 + o``, which is the key index in the captured maps.

:func:`prompt_tokens_from_clip` builds it from CLIP BPE token strings (``"monkey</w>"``, byte-level for non-ASCII
text), :func:`word_spans` lists the words with all their positions, :func:`find_word` looks one up (a word of several
tokens, every occurrence, a run of words such as ``"red circle"`` or ``"1girl"`` → ``1`` ``girl``), and
:func:`prompt_words` is a tokenizer-independent splitter giving "every word of the prompt" as default words to show.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

CHUNK_TOKENS = 75
CHUNK_CONTEXT = 77
SPECIAL_TOKENS = frozenset({"<|startoftext|>", "<|endoftext|>"})


@dataclass(frozen=True)
class TokenPiece:
    """One token of a chunk: its text, the index of the prompt word it belongs to (None: not a word, e.g. a comma)."""

    text: str
    word_index: int | None
    is_embedding: bool = False


@dataclass(frozen=True)
class PromptTokens:
    """The host's tokenisation of one (sub-)prompt. ``word_texts`` may name words whose pieces don't concatenate
    into readable text (byte-level BPE pieces of a Japanese word)."""

    chunks: list[list[TokenPiece]]
    word_texts: dict[int, str] = field(default_factory=dict)

    @property
    def context_length(self) -> int:
        return CHUNK_CONTEXT * max(1, len(self.chunks))


@dataclass(frozen=True)
class WordSpan:
    word: str
    positions: tuple[int, ...]
    occurrences: int = 1
    is_embedding: bool = False


class WordNotFound(LookupError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def context_position(chunk: int, offset: int) -> int:
    if not 0 <= offset < CHUNK_TOKENS:
        raise ValueError(f"offset {offset} is outside a chunk of {CHUNK_TOKENS} tokens")
    return chunk * CHUNK_CONTEXT + 1 + offset


@dataclass
class _Word:
    index: int
    text: str
    positions: list[int]
    is_embedding: bool


def _words(prompt_tokens: PromptTokens) -> list[_Word]:
    """The prompt's words in order of appearance, each with its positions (a word may continue into the next chunk)."""
    by_index: dict[int, _Word] = {}
    for c, chunk in enumerate(prompt_tokens.chunks):
        if len(chunk) > CHUNK_TOKENS:
            raise ValueError(f"chunk {c} holds {len(chunk)} tokens; a chunk holds at most {CHUNK_TOKENS}")
        for o, piece in enumerate(chunk):
            if piece.word_index is None:
                continue
            word = by_index.get(piece.word_index)
            if word is None:
                word = by_index[piece.word_index] = _Word(piece.word_index, "", [], piece.is_embedding)
            if not (piece.is_embedding and word.text):  # an embedding's pieces all carry its name
                word.text += piece.text
            word.positions.append(context_position(c, o))
    for index, text in prompt_tokens.word_texts.items():
        if index in by_index:
            by_index[index].text = text
    return [w for w in by_index.values() if normalize_word(w.text)]


def normalize_word(text: str) -> str:
    """The comparison key of a word: NFKC, case-folded, letters and digits only (any script)."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def word_spans(prompt_tokens: PromptTokens) -> list[WordSpan]:
    """One span per distinct word (case-insensitive), with the positions of all its occurrences, in prompt order."""
    spans: dict[str, tuple[str, list[int], int, bool]] = {}
    for word in _words(prompt_tokens):
        key = normalize_word(word.text)
        text, positions, count, emb = spans.get(key, (word.text.strip(), [], 0, word.is_embedding))
        spans[key] = (text, positions + word.positions, count + 1, emb)
    return [WordSpan(t, tuple(sorted(p)), n, e) for t, p, n, e in spans.values()]


def find_word(prompt_tokens: PromptTokens, query: str) -> list[int]:
    """Positions of every occurrence of ``query``: a word, an embedding's name, or a run of consecutive words
    (compared without spaces, so "1girl" finds the two words ``1`` ``girl``). Raises :class:`WordNotFound`."""
    target = normalize_word(query)
    words = _words(prompt_tokens)
    if not target:
        raise WordNotFound(f"{query!r} holds no letters or digits to look for")
    keys = [normalize_word(w.text) for w in words]
    positions: list[int] = []
    for start in range(len(words)):
        run = ""
        for end in range(start, len(words)):
            run += keys[end]
            if not target.startswith(run):
                break
            if run == target:
                for w in words[start : end + 1]:
                    positions.extend(w.positions)
                break
    if not positions:
        known = ", ".join(dict.fromkeys(w.text.strip() for w in words)) or "(none)"
        raise WordNotFound(f"{query!r} is not in the prompt; its words are: {known}")
    return sorted(set(positions))


# ---- CLIP byte-level BPE --------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of CLIP's / GPT-2's ``bytes_to_unicode`` table: the printable character standing for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def clip_token_bytes(token: str) -> tuple[bytes, bool]:
    """(bytes, ends a word) of one CLIP BPE token string such as ``"monkey</w>"``."""
    ends = token.endswith("</w>")
    body = token[:-4] if ends else token
    decoder = _byte_decoder()
    return bytes(decoder.get(ch, ord("?") if ord(ch) > 255 else ord(ch)) for ch in body), ends


def prompt_tokens_from_clip(
    chunks: Sequence[Sequence[str | tuple[str, float] | None]],
    embeddings: Sequence[Sequence[tuple[int, str, int]]] | None = None,
) -> PromptTokens:
    """Build :class:`PromptTokens` from CLIP BPE token strings per chunk.

    ``chunks[c]``: the chunk's tokens without start/end (A1111: ``chunk.tokens[1:-1]`` converted to strings; trailing
    ``<|endoftext|>`` padding is dropped; entries may be ``(token, multiplier)``; ``None`` is no word).
    ``embeddings[c]``: ``(offset, name, n_vectors)`` per textual-inversion embedding of chunk ``c`` (A1111's
    ``chunk.fixes``: ``(fix.offset, fix.embedding.name, fix.embedding.vectors)``); those positions become one word
    named after the embedding, whatever their placeholder tokens.
    """
    out_chunks: list[list[TokenPiece]] = []
    word_texts: dict[int, str] = {}
    next_index = 0
    open_word: int | None = None  # a word whose last token (ending in </w>) has not come yet
    open_bytes = b""

    def close() -> None:
        nonlocal open_word, open_bytes
        if open_word is not None:
            word_texts[open_word] = open_bytes.decode("utf-8", errors="replace")
        open_word, open_bytes = None, b""

    for c, raw in enumerate(chunks):
        tokens = [t[0] if isinstance(t, tuple) else t for t in raw]
        while tokens and tokens[-1] in SPECIAL_TOKENS:
            tokens.pop()
        emb_at: dict[int, tuple[str, int]] = {}
        for offset, name, n_vectors in embeddings[c] if embeddings and c < len(embeddings) else ():
            for o in range(offset, offset + n_vectors):
                emb_at[o] = (name, offset)
        pieces: list[TokenPiece] = []
        emb_index: dict[int, int] = {}
        for o in range(max(len(tokens), max(emb_at, default=-1) + 1)):
            if o in emb_at:
                close()
                name, first = emb_at[o]
                if first not in emb_index:
                    emb_index[first] = next_index
                    next_index += 1
                pieces.append(TokenPiece(name, emb_index[first], is_embedding=True))
                continue
            token = tokens[o] if o < len(tokens) else None
            if token is None or token in SPECIAL_TOKENS:
                close()
                pieces.append(TokenPiece(token or "", None))
                continue
            data, ends = clip_token_bytes(token)
            if open_word is None:
                open_word = next_index
                next_index += 1
            open_bytes += data
            pieces.append(TokenPiece(data.decode("utf-8", errors="replace"), open_word))
            if ends:
                close()
        out_chunks.append(pieces)
    close()
    # Words without letters or digits (commas, brackets) are no words to show.
    empty = {i for i, t in word_texts.items() if not normalize_word(t)}
    out_chunks = [
        [TokenPiece(p.text, None) if p.word_index in empty and not p.is_embedding else p for p in chunk]
        for chunk in out_chunks
    ]
    return PromptTokens(out_chunks, {i: t for i, t in word_texts.items() if i not in empty})


# ---- a tokenizer-independent splitter -------------------------------------------------------------------------------
_EXTRA_NETWORK = re.compile(r"<[^<>:]+:[^<>]*>")  # <lora:name:0.8>, <hypernet:…>, <lyco:…>
_WEIGHT = re.compile(r":\s*[-+]?(?:\d+\.?\d*|\.\d+)")  # (x:1.2), [a:b:10], "AND x :0.4"
_KEYWORD = re.compile(r"\b(?:BREAK|AND(?:_[A-Z]+)?)\b")  # BREAK, AND, AND_TOPK, AND_PERP, AND_SALT …
_ESCAPED = re.compile(r"\\([()\[\]])")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")  # letters/digits of any script, with inner apostrophes


def prompt_words(prompt: str) -> list[str]:
    """Every distinct word of a prompt, in order: emphasis ``(x:1.2)`` ``[x]``, schedules ``[a:b:10]``,
    alternations ``[a|b]``, ``<lora:…>`` tags, ``BREAK`` and ``AND``-family keywords removed."""
    text = _EXTRA_NETWORK.sub(" ", prompt)
    text = _ESCAPED.sub(r"\1", text)
    text = _WEIGHT.sub(" ", text)
    text = _KEYWORD.sub(" ", text)
    words: dict[str, str] = {}
    for match in _WORD.finditer(text):
        word = match.group(0)
        words.setdefault(normalize_word(word), word)
    return [w for k, w in words.items() if k]
