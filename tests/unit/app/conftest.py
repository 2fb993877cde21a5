"""The app tests' host: the toy host on a tiny random model (fast; the pictures mean nothing)."""

from __future__ import annotations

import pytest
import torch

from lib_ext.toyworld.host import ToyHost
from lib_ext.toyworld.model import ToyConfig, ToyTextEncoder, ToyUNet
from lib_ext.toyworld.tokenizer import ToyTokenizer


@pytest.fixture
def host() -> ToyHost:
    tok = ToyTokenizer()
    cfg = ToyConfig(vocab_size=tok.vocab_size, text_dim=16, channels=(8, 16, 16), attn_heads=(1, 2, 2), time_dim=32)
    torch.manual_seed(0)
    return ToyHost(ToyTextEncoder(cfg), ToyUNet(cfg), tok)
