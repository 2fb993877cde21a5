"""Words → token positions, aligned with the host's own tokenisation.

The host gives its token chunks (A1111: ``clip.tokenize_line()``: chunks of 75 tokens, a ``BREAK`` starts a new chunk,
emphasis already stripped into multipliers, ``<lora:…>`` tags already removed, textual-inversion embeddings occupying
several positions) as the seam's host-independent ``PromptTokens``: per chunk, its tokens without start/end as
``TokenPiece`` s, each naming the prompt word it belongs to (None for padding and punctuation). The text encoder sees
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
from dataclasses import dataclass
from functools import lru_cache

from ..seam import PromptTokens, TokenPiece

# CLIP's (SD1, SDXL) and OpenCLIP's (SD2) start/end tokens. SD2 pads with id 0 ("!"), which has no letters: no word.
SPECIAL_TOKENS = frozenset({"<|startoftext|>", "<|endoftext|>", "<start_of_text>", "<end_of_text>"})


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


@dataclass
class _Word:
    index: int
    text: str
    positions: list[int]
    is_embedding: bool


def _words(prompt_tokens: PromptTokens) -> list[_Word]:
    """The prompt's words in order of appearance, each with its positions (a word may continue into the next chunk).

    A word's text is ``prompt_tokens.words[word_index]`` (readable even when byte-level pieces are not), else the
    concatenation of its pieces' texts; an embedding's pieces all carry its name.
    """
    by_index: dict[int, _Word] = {}
    for c, chunk in enumerate(prompt_tokens.chunks):
        if len(chunk) > prompt_tokens.chunk_length:
            raise ValueError(f"chunk {c} holds {len(chunk)} tokens; a chunk holds {prompt_tokens.chunk_length}")
        for o, piece in enumerate(chunk):
            if piece.word_index is None:
                continue
            word = by_index.get(piece.word_index)
            if word is None:
                word = by_index[piece.word_index] = _Word(piece.word_index, "", [], piece.is_embedding)
            if not (piece.is_embedding and word.text):
                word.text += piece.text
            word.positions.append(prompt_tokens.position(c, o))
    for index, word in by_index.items():
        if 0 <= index < len(prompt_tokens.words) and prompt_tokens.words[index]:
            word.text = prompt_tokens.words[index]
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
    prompt: str = "",
) -> PromptTokens:
    """Build :class:`~lib_ext.seam.PromptTokens` from CLIP BPE token strings per chunk, words tied by ``</w>``.

    ``chunks[c]``: the chunk's 75 tokens without start/end (A1111: ``chunk.tokens[1:-1]`` through
    ``tokenizer.convert_ids_to_tokens``); entries may be ``(token, multiplier)``; ``<|endoftext|>`` padding and
    ``None`` are no word. ``embeddings[c]``: ``(offset, name, n_vectors)`` per textual-inversion embedding of chunk
    ``c`` (A1111's ``chunk.fixes``: ``fix.offset, fix.embedding.name, fix.embedding.vectors``); those positions become
    one word named after the embedding, whatever their placeholder tokens. A word's text is decoded from the bytes
    of all its tokens, so a Japanese word split inside a character still reads right. Words without letters or
    digits (commas, brackets) get ``word_index`` None.
    """
    out_chunks: list[tuple[TokenPiece, ...]] = []
    words: list[str] = []
    open_word: int | None = None  # a word whose last token (ending in </w>) has not come yet
    open_bytes = b""

    def close() -> None:
        nonlocal open_word, open_bytes
        if open_word is not None:
            words[open_word] = open_bytes.decode("utf-8", errors="replace")
        open_word, open_bytes = None, b""

    for c, raw in enumerate(chunks):
        tokens = [t[0] if isinstance(t, tuple) else t for t in raw]
        mults = [float(t[1]) if isinstance(t, tuple) else 1.0 for t in raw]
        emb_at: dict[int, tuple[str, int]] = {}
        for offset, name, n_vectors in embeddings[c] if embeddings and c < len(embeddings) else ():
            for o in range(offset, offset + n_vectors):
                emb_at[o] = (name, offset)
        pieces: list[TokenPiece] = []
        emb_index: dict[int, int] = {}
        for o in range(max(len(tokens), max(emb_at, default=-1) + 1)):
            mult = mults[o] if o < len(mults) else 1.0
            if o in emb_at:
                close()
                name, first = emb_at[o]
                if first not in emb_index:
                    emb_index[first] = len(words)
                    words.append(name)
                pieces.append(TokenPiece(name, emb_index[first], mult, is_embedding=True))
                continue
            token = tokens[o] if o < len(tokens) else None
            if token is None or token in SPECIAL_TOKENS:
                close()
                pieces.append(TokenPiece("", None, mult))
                continue
            data, ends = clip_token_bytes(token)
            if open_word is None:
                open_word = len(words)
                words.append("")
            open_bytes += data
            pieces.append(TokenPiece(data.decode("utf-8", errors="replace"), open_word, mult))
            if ends:
                close()
        out_chunks.append(tuple(pieces))
    close()
    empty = {i for i, t in enumerate(words) if not normalize_word(t)}
    out = tuple(
        tuple(TokenPiece(p.text, None, p.multiplier) if p.word_index in empty and not p.is_embedding else p for p in ch)
        for ch in out_chunks
    )
    return PromptTokens(prompt=prompt, words=tuple(words), chunks=out)


# ---- a tokenizer-independent splitter -------------------------------------------------------------------------------
_EXTRA_NETWORK = re.compile(r"<[^<>:]+:[^<>]*>")  # <lora:name:0.8>, <hypernet:…>, <lyco:…>
_WEIGHT = re.compile(r":\s*[-+]?(?:\d+\.?\d*|\.\d+)")  # (x:1.2), [a:b:10], "AND x :0.4"
_KEYWORD = re.compile(r"\b(?:BREAK|AND(?:_[A-Z]+)?)\b")  # BREAK, AND, AND_TOPK, AND_PERP, AND_SALT …
_ESCAPED = re.compile(r"\\([()\[\]])")
# Letters/digits of any script, joined by inner apostrophes, hyphens or underscores (sci-fi, bad_prompt_v2: an
# embedding's name stays one word; find_word matches it across the tokenizer's pieces).
_WORD = re.compile(r"[^\W_]+(?:['’_-][^\W_]+)*")


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
