"""Fake text encoders (``ldm.modules.encoders.modules``): a hashing word tokenizer and a tiny embedder.

Token ids look like CLIP's (start 49406, end 49407, comma 267) so chunk layouts read the same as on the real host.
"""

import re
import zlib
from typing import ClassVar

import torch
from torch import nn

# Words of letters (any script), single digits, single other marks — CLIP splits text into such words as well.
_word = re.compile(r"[^\W\d_]+|[0-9]|[^\sa-z0-9]")


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (GPT-2's) table: one printable character per byte; the symbols its byte-level BPE tokens are made of."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


class FakeCLIPTokenizer:
    """Word-level tokenizer for ASCII: one token per word / digit / punctuation mark; ids are stable hashes.

    A word with other characters is tokenized byte-level as CLIP does: its UTF-8 bytes as CLIP's byte symbols, cut
    into tokens of two symbols (the last ending in ``</w>``), so a character of three bytes (猫) is split between
    tokens that do not decode on their own. ``byte_decoder`` maps the symbols back, as transformers' CLIPTokenizer.
    """

    bos_token_id = 49406
    eos_token_id = 49407
    pad_token_id = 49407
    vocab_size = 49408

    byte_encoder: ClassVar[dict[int, str]] = _bytes_to_unicode()
    byte_decoder: ClassVar[dict[str, int]] = {v: k for k, v in byte_encoder.items()}

    def __init__(self):
        self.decoder = {self.bos_token_id: "<|startoftext|>", self.eos_token_id: "<|endoftext|>", 267: ",</w>"}
        self.encoder = {v: k for k, v in self.decoder.items()}

    def _id(self, key: str) -> int:
        found = self.encoder.get(key)
        if found is None:
            whole = key.removesuffix("</w>") if key.endswith("</w>") else key + " "  # a word's id: hash of the word
            found = 1000 + zlib.crc32(whole.encode("utf8")) % 48000
            self.encoder[key] = found
            self.decoder.setdefault(found, key)
        return found

    def pieces(self, word: str) -> list[str]:
        if word.isascii():
            return [word + "</w>"]
        symbols = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
        parts = [symbols[i : i + 2] for i in range(0, len(symbols), 2)]
        return [*parts[:-1], parts[-1] + "</w>"]

    def token_id(self, word: str) -> int:
        return self._id(word + "</w>")

    def encode(self, text: str) -> list[int]:
        return [self._id(piece) for w in _word.findall(text.lower()) for piece in self.pieces(w)]

    def __call__(self, texts, truncation=False, add_special_tokens=False, **kwargs):
        if isinstance(texts, str):
            texts = [texts]
        ids = [self.encode(t) for t in texts]
        if add_special_tokens:
            ids = [[self.bos_token_id, *x, self.eos_token_id] for x in ids]
        return {"input_ids": ids}

    def get_vocab(self):
        return dict(self.encoder)

    def convert_ids_to_tokens(self, ids):
        return [self.decoder.get(int(i), "<unk>") for i in ids]

    def decode(self, ids):
        words = [t[:-4] if t.endswith("</w>") else t for t in self.convert_ids_to_tokens(ids)]
        return " ".join(words)


class _Output:
    def __init__(self, last_hidden_state, pooler_output):
        self.last_hidden_state = last_hidden_state
        self.pooler_output = pooler_output
        self.hidden_states = [last_hidden_state]


class FakeTextTransformer(nn.Module):
    """Token + position embedding, one position-wise MLP; pooled = the row of the first end token."""

    def __init__(self, width: int, max_positions: int = 77 * 8):
        super().__init__()
        self.token_embedding = nn.Embedding(FakeCLIPTokenizer.vocab_size, width)
        self.position_embedding = nn.Embedding(max_positions, width)
        self.mlp = nn.Sequential(nn.Linear(width, width * 2), nn.GELU(), nn.Linear(width * 2, width))
        self.final_layer_norm = nn.LayerNorm(width)
        # a real text encoder's hidden states do not average to zero; emphasis divides by that mean
        nn.init.normal_(self.final_layer_norm.bias, mean=0.5, std=0.5)

    def forward(self, input_ids, **kwargs):
        pos = torch.arange(input_ids.shape[1]) % self.position_embedding.num_embeddings
        x = self.token_embedding(input_ids) + self.position_embedding(pos)[None]
        z = self.final_layer_norm(x + self.mlp(x))
        end_pos = (input_ids == FakeCLIPTokenizer.eos_token_id).int().argmax(dim=1)
        pooled = z[torch.arange(z.shape[0]), end_pos]
        return _Output(z, pooled)


class FrozenCLIPEmbedder(nn.Module):
    """What the WebUI wraps with ``FrozenCLIPEmbedderWithCustomWords`` at hijack time."""

    def __init__(self, width: int = 32, layer: str = "last"):
        super().__init__()
        self.tokenizer = FakeCLIPTokenizer()
        self.transformer = FakeTextTransformer(width)
        self.layer = layer
        self.width = width
        self.max_length = 77
        self.return_pooled = False
        self.input_key = "txt"
        self.legacy_ucg_val = None


class FrozenOpenCLIPEmbedder2(FrozenCLIPEmbedder):
    """SDXL's second text encoder: returns the pooled vector as well."""

    def __init__(self, width: int = 32):
        super().__init__(width, layer="penultimate")
        self.return_pooled = True
