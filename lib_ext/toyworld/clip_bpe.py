"""CLIP's byte-level BPE tokenizer (what the WebUI's `CLIPTokenizer` does for SD1), without `regex` or `ftfy`.

The toy world's LDM checkpoint runs in the WebUI through its own CLIP path; the toy host must split prompts into the
same token ids, so this restates CLIP's tokenizer: NFC, whitespace collapsed, lower case, then CLIP's pattern
(start/end tokens, English contractions, runs of letters, single digits, runs of other non-space characters), each
piece as UTF-8 bytes mapped to printable characters and merged by the 48,894 ranked BPE merges. `regex`'s \\p{L} and
\\p{N} are read from `unicodedata` categories. ftfy's repairs of broken text (mojibake) are not restated.
"""

from __future__ import annotations

import functools
import gzip
import re
import unicodedata
from pathlib import Path

VOCAB_FILE = Path(__file__).with_name("clip_vocab") / "bpe_simple_vocab_16e6.txt.gz"
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
_CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")
_WHITESPACE = re.compile(r"\s+")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table of one printable character per byte (printable bytes map to themselves)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _is_letter(c: str) -> bool:
    return unicodedata.category(c)[0] == "L"


def _is_number(c: str) -> bool:
    return unicodedata.category(c)[0] == "N"


def split_pieces(text: str) -> list[str]:
    """CLIP's `re.findall(pattern, text)`: the pieces BPE runs on, in order."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        special = next((s for s in (START_TOKEN, END_TOKEN) if text.startswith(s, i)), None)
        if special:
            out.append(special)
            i += len(special)
            continue
        if c == "'":
            tail = next((t for t in _CONTRACTIONS if text.startswith(t, i + 1)), None)
            if tail:
                out.append("'" + tail)
                i += 1 + len(tail)
                continue
        if _is_letter(c):
            j = i + 1
            while j < n and _is_letter(text[j]):
                j += 1
        elif _is_number(c):
            j = i + 1
        elif not c.isspace():
            j = i + 1
            while j < n and not (text[j].isspace() or _is_letter(text[j]) or _is_number(text[j])):
                j += 1
        else:
            i += 1
            continue
        out.append(text[i:j])
        i = j
    return out


class ClipTokenizer:
    """ids of CLIP's 49,408-token vocabulary; `decoder` maps ids back to their byte-character strings."""

    def __init__(self, vocab_file: Path = VOCAB_FILE) -> None:
        lines = gzip.open(vocab_file).read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [START_TOKEN, END_TOKEN]
        self.encoder: dict[str, int] = {t: i for i, t in enumerate(vocab)}
        self.decoder: dict[int, str] = dict(enumerate(vocab))
        self.ranks: dict[tuple[str, str], int] = {m: i for i, m in enumerate(merges)}  # type: ignore[misc]
        self.bos_id = self.encoder[START_TOKEN]
        self.eos_id = self.encoder[END_TOKEN]
        self.vocab_size = len(vocab)
        self._bpe = functools.lru_cache(maxsize=65536)(self._bpe_uncached)

    def _bpe_uncached(self, piece: str) -> tuple[str, ...]:
        word = (*piece[:-1], piece[-1] + "</w>")
        while len(word) > 1:
            pairs = {(word[k], word[k + 1]) for k in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, 1 << 30))
            if best not in self.ranks:
                break
            merged: list[str] = []
            k = 0
            while k < len(word):
                if k < len(word) - 1 and (word[k], word[k + 1]) == best:
                    merged.append(word[k] + word[k + 1])
                    k += 2
                else:
                    merged.append(word[k])
                    k += 1
            word = tuple(merged)
        return word

    @staticmethod
    def clean(text: str) -> str:
        return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip().lower()

    def encode(self, text: str) -> list[int]:
        """Token ids of a text, without start/end tokens (as the WebUI asks with add_special_tokens=False)."""
        ids: list[int] = []
        for piece in split_pieces(self.clean(text)):
            if piece in (START_TOKEN, END_TOKEN):
                ids.append(self.encoder[piece])
                continue
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(mapped))
        return ids

    def token_text(self, ids: list[int]) -> str:
        """The text of consecutive tokens, decoded together (a multi-byte character may span several tokens)."""
        words = "".join(self.decoder[i] for i in ids).split("</w>")
        raw = b" ".join(bytes(self.byte_decoder[c] for c in w if c in self.byte_decoder) for w in words)
        return raw.decode("utf-8", errors="replace").strip()
