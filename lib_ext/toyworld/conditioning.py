"""Prompt → text-encoder context for the toy model, chunked and weighted as A1111's CLIP wrapper does.

Restates v1.10.1's `sd_hijack_clip.TextConditionalModel` for the toy tokenizer (one token per word, no comma
back-tracking since the toy tokenizer drops punctuation):
- `tokenize_line`: the prompt's emphasis runs (`parse_prompt_attention`) are tokenized; tokens fill chunks of 75;
  a full chunk or `BREAK` starts the next; each chunk is padded with the end token and wrapped in start/end (77).
- `encode`: each chunk goes through the encoder on its own; emphasis multiplies each token's output and then
  restores the chunk's original mean (the "Original" emphasis); the chunks are concatenated (77·k tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..prompt_attention import is_break, parse_prompt_attention
from ..seam import PromptTokens, TokenPiece
from .tokenizer import ToyTokenizer


def emphasise(z: torch.Tensor, multipliers: torch.Tensor, per_row: bool = False) -> torch.Tensor:
    """A1111's "Original" emphasis: each token's output × its weight, then the mean before weighting restored.

    z (B, T, D), multipliers (B, T). The WebUI restores the mean of the whole batch it encodes at once; `per_row`
    restores each row's own (training, where one example's context must not depend on the others). A zero mean
    after weighting leaves the weighted z as it is (the WebUI's 0/0 would be NaN).
    """
    dims = (1, 2) if per_row else tuple(range(z.dim()))
    original = z.mean(dim=dims, keepdim=True)
    z = z * multipliers[..., None]
    new = z.mean(dim=dims, keepdim=True)
    nonzero = new != 0
    # the division on a safe denominator, so no inf/NaN reaches the gradient through the unused branch
    return z * torch.where(nonzero, original / torch.where(nonzero, new, torch.ones_like(new)), torch.ones_like(new))


@dataclass
class PromptChunk:
    """One 77-token context under construction (without start/end until closed), like A1111's PromptChunk."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    pieces: list[TokenPiece] = field(default_factory=list)


@dataclass(frozen=True)
class TokenizedLine:
    chunks: tuple[PromptChunk, ...]  # closed: 77 tokens and multipliers, 75 pieces each
    token_count: int  # A1111's count: full chunks count 75, the last one its real length
    words: tuple[str, ...]


class ToyConditioner:
    """Tokenizes and encodes prompts for one toy text encoder."""

    def __init__(self, text_encoder: torch.nn.Module, tokenizer: ToyTokenizer) -> None:
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.chunk_length = tokenizer.chunk_length
        self.id_start = tokenizer.bos_id
        self.id_end = tokenizer.eos_id
        self.encoder_calls = 0  # texts encoded so far (tests check sub-prompt dedup with it)

    # -- tokens ---------------------------------------------------------------------------------------------
    def tokenize_line(self, line: str) -> TokenizedLine:
        parsed = parse_prompt_attention(line)
        chunks: list[PromptChunk] = []
        chunk = PromptChunk()
        token_count = 0
        words: list[str] = []

        def next_chunk(is_last: bool = False) -> None:
            nonlocal chunk, token_count
            token_count += len(chunk.tokens) if is_last else self.chunk_length
            to_add = self.chunk_length - len(chunk.tokens)
            if to_add > 0:
                chunk.tokens += [self.id_end] * to_add
                chunk.multipliers += [1.0] * to_add
                chunk.pieces += [TokenPiece("", None, 1.0)] * to_add
            chunk.tokens = [self.id_start, *chunk.tokens, self.id_end]
            chunk.multipliers = [1.0, *chunk.multipliers, 1.0]
            chunks.append(chunk)
            chunk = PromptChunk()

        for text, weight in parsed:
            if is_break(text, weight):
                next_chunk()
                continue
            for word in self.tokenizer.tokens(text):
                if len(chunk.tokens) == self.chunk_length:
                    next_chunk()
                chunk.tokens.append(self.tokenizer.word_to_id.get(word, self.tokenizer.unk_id))
                chunk.multipliers.append(float(weight))
                chunk.pieces.append(TokenPiece(word, len(words), float(weight)))
                words.append(word)

        if chunk.tokens or not chunks:
            next_chunk(is_last=True)
        return TokenizedLine(tuple(chunks), token_count, tuple(words))

    def prompt_tokens(self, prompt: str) -> PromptTokens:
        line = self.tokenize_line(prompt)
        return PromptTokens(
            prompt=prompt,
            words=line.words,
            chunks=tuple(tuple(c.pieces) for c in line.chunks),
            chunk_length=self.chunk_length,
        )

    # -- encoding -------------------------------------------------------------------------------------------
    def _param(self) -> torch.Tensor | None:
        return next(iter(self.text_encoder.parameters()), None)

    @torch.no_grad()
    def process_tokens(self, tokens: Sequence[Sequence[int]], multipliers: Sequence[Sequence[float]]) -> torch.Tensor:
        """One chunk position for a batch of texts: encoder output with A1111's "Original" emphasis."""
        p = self._param()
        device = p.device if p is not None else torch.device("cpu")
        ids = torch.as_tensor(tokens, dtype=torch.long, device=device)
        z = self.text_encoder(ids)
        mult = torch.as_tensor(multipliers, dtype=z.dtype, device=device)
        if bool((mult == 1).all()):
            return z  # A1111's formula is then the identity, except that it turns a zero mean into 0/0 = NaN
        return emphasise(z, mult)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """A1111's `cond_stage_model(texts)`: (len(texts), 77·k, D), shorter prompts padded with empty chunks."""
        lines = [self.tokenize_line(t) for t in texts]
        self.encoder_calls += len(texts)
        chunk_count = max(len(line.chunks) for line in lines)
        empty = self.empty_chunk()
        zs = []
        for i in range(chunk_count):
            batch = [line.chunks[i] if i < len(line.chunks) else empty for line in lines]
            zs.append(self.process_tokens([c.tokens for c in batch], [c.multipliers for c in batch]))
        return torch.hstack(zs)

    def encode(self, text: str) -> torch.Tensor:
        """One prompt's context (77·k, D), as A1111's `get_learned_conditioning` encodes each distinct prompt."""
        return self.encode_texts([text])[0]

    def empty_chunk(self) -> PromptChunk:
        n = self.chunk_length + 2
        return PromptChunk([self.id_start] + [self.id_end] * (n - 1), [1.0] * n, [TokenPiece("", None, 1.0)] * (n - 2))

    def empty_prompt(self) -> torch.Tensor:
        """`cond_stage_model_empty_prompt`: the empty prompt's one-chunk context (1, 77, D), used for padding."""
        chunk = self.empty_chunk()
        return self.process_tokens([chunk.tokens], [chunk.multipliers])
