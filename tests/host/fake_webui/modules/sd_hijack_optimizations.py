"""``modules.sd_hijack_optimizations``: attention implementations assigned to ``CrossAttention.forward``.

Like the WebUI, ``apply()`` and ``undo()`` assign functions to the CLASS attribute of both
``ldm.modules.attention.CrossAttention`` and ``sgm.modules.attention.CrossAttention``; any class-level patch an
extension made there is overwritten.
"""

from __future__ import annotations

import ldm.modules.attention
import sgm.modules.attention
import torch
from modules import shared


def attention_CrossAttention_forward(self, x, context=None, mask=None, **kwargs):
    """The "no optimisation" forward (``modules.hypernetworks.hypernetwork.attention_CrossAttention_forward``)."""
    h = self.heads
    q = self.to_q(x)
    context = x if context is None else context
    k = self.to_k(context)
    v = self.to_v(context)
    b, n = q.shape[0], q.shape[1]
    q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
    sim = q @ k.transpose(-1, -2) * self.scale
    out = (sim.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, -1)
    return self.to_out(out)


def scaled_dot_product_attention_forward(self, x, context=None, mask=None, **kwargs):
    batch_size, sequence_length, inner_dim = x.shape
    h = self.heads
    q_in = self.to_q(x)
    context = x if context is None else context
    k_in = self.to_k(context)
    v_in = self.to_v(context)
    head_dim = q_in.shape[-1] // h
    q = q_in.view(batch_size, -1, h, head_dim).transpose(1, 2)
    k = k_in.view(batch_size, -1, h, head_dim).transpose(1, 2)
    v = v_in.view(batch_size, -1, h, head_dim).transpose(1, 2)
    dtype = q.dtype
    if shared.opts.upcast_attn:
        q, k, v = q.float(), k.float(), v.float()
    hidden = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False)
    hidden = hidden.transpose(1, 2).reshape(batch_size, -1, h * head_dim).to(dtype)
    hidden = self.to_out[0](hidden)
    return self.to_out[1](hidden)


def scaled_dot_product_no_mem_attention_forward(self, x, context=None, mask=None, **kwargs):
    return scaled_dot_product_attention_forward(self, x, context, mask)


def _assign(forward):
    ldm.modules.attention.CrossAttention.forward = forward
    sgm.modules.attention.CrossAttention.forward = forward


class SdOptimization:
    name: str | None = None
    label: str | None = None
    cmd_opt: str | None = None
    priority: int = 0

    def title(self):
        return self.name if self.label is None else f"{self.name} - {self.label}"

    def is_available(self):
        return True

    def apply(self):
        pass

    def undo(self):
        _assign(attention_CrossAttention_forward)


class SdOptimizationSdpNoMem(SdOptimization):
    name = "sdp-no-mem"
    label = "scaled dot product without memory efficient attention"
    cmd_opt = "opt_sdp_no_mem_attention"
    priority = 80

    def apply(self):
        _assign(scaled_dot_product_no_mem_attention_forward)


class SdOptimizationSdp(SdOptimizationSdpNoMem):
    name = "sdp"
    label = "scaled dot product"
    cmd_opt = "opt_sdp_attention"
    priority = 70

    def apply(self):
        _assign(scaled_dot_product_attention_forward)


def list_optimizers(res):
    res.extend([SdOptimizationSdpNoMem(), SdOptimizationSdp()])
