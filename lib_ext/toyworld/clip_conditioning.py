"""Prompt → context for the toy world's SD1 checkpoint, tokenized as A1111 v1.10.1's SD1 CLIP wrapper does.

`ToyConditioner` with CLIP's BPE tokenizer in place of the word-level one. `tokenize_line` restates
`sd_hijack_clip.TextConditionalModel.tokenize_line`: the emphasis runs are tokenized; tokens fill chunks of 75; when a
chunk is full and a comma came within the last 20 tokens (`comma_padding_backtrack`), the tokens after the comma
move to the next chunk; `BREAK` starts a new chunk. Words for the heatmaps come from the token strings
(`prompt_tokens_from_clip`), so a word split into several tokens, or a Japanese word split inside a character, is
one word, as in the WebUI. Textual-inversion embeddings do not exist here.
"""

from __future__ import annotations

from ..heatmaps.tokens import prompt_tokens_from_clip
from ..prompt_attention import is_break, parse_prompt_attention
from ..seam import PromptTokens, TokenPiece
from .clip_bpe import ClipTokenizer
from .conditioning import PromptChunk, TokenizedLine, ToyConditioner

COMMA_PADDING_BACKTRACK = 20  # A1111's default setting


class ClipConditioner(ToyConditioner):
    tokenizer: ClipTokenizer  # type: ignore[assignment]

    def __init__(self, text_encoder, tokenizer: ClipTokenizer) -> None:
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer  # type: ignore[assignment]
        self.chunk_length = 75
        self.id_start = tokenizer.bos_id
        self.id_end = tokenizer.eos_id
        self.comma_token = tokenizer.encoder.get(",</w>")
        self.encoder_calls = 0

    def tokenize_line(self, line: str) -> TokenizedLine:
        parsed = parse_prompt_attention(line)
        chunks: list[PromptChunk] = []
        chunk = PromptChunk()
        token_count = 0
        last_comma = -1

        def next_chunk(is_last: bool = False) -> None:
            nonlocal chunk, token_count, last_comma
            token_count += len(chunk.tokens) if is_last else self.chunk_length
            to_add = self.chunk_length - len(chunk.tokens)
            if to_add > 0:
                chunk.tokens += [self.id_end] * to_add
                chunk.multipliers += [1.0] * to_add
            chunk.tokens = [self.id_start, *chunk.tokens, self.id_end]
            chunk.multipliers = [1.0, *chunk.multipliers, 1.0]
            last_comma = -1
            chunks.append(chunk)
            chunk = PromptChunk()

        for text, weight in parsed:
            if is_break(text, weight):
                next_chunk()
                continue
            for token in self.tokenizer.encode(text):
                if token == self.comma_token:
                    last_comma = len(chunk.tokens)
                elif (
                    COMMA_PADDING_BACKTRACK
                    and len(chunk.tokens) == self.chunk_length
                    and last_comma != -1
                    and len(chunk.tokens) - last_comma <= COMMA_PADDING_BACKTRACK
                ):
                    cut = last_comma + 1
                    moved, moved_mult = chunk.tokens[cut:], chunk.multipliers[cut:]
                    chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                    next_chunk()
                    chunk.tokens, chunk.multipliers = moved, moved_mult
                if len(chunk.tokens) == self.chunk_length:
                    next_chunk()
                chunk.tokens.append(token)
                chunk.multipliers.append(float(weight))
        if chunk.tokens or not chunks:
            next_chunk(is_last=True)
        tokens = self._prompt_tokens(chunks, line)
        return TokenizedLine(tuple(chunks), token_count, tokens.words)

    def _prompt_tokens(self, chunks: list[PromptChunk], prompt: str) -> PromptTokens:
        decoder = self.tokenizer.decoder
        strings = [[(decoder[t], m) for t, m in zip(c.tokens[1:-1], c.multipliers[1:-1], strict=True)] for c in chunks]
        return prompt_tokens_from_clip(strings, None, prompt)

    def prompt_tokens(self, prompt: str) -> PromptTokens:
        line = self.tokenize_line(prompt)
        return self._prompt_tokens(list(line.chunks), prompt)

    def empty_chunk(self) -> PromptChunk:
        n = self.chunk_length + 2
        return PromptChunk([self.id_start] + [self.id_end] * (n - 1), [1.0] * n, [TokenPiece("", None, 1.0)] * (n - 2))
