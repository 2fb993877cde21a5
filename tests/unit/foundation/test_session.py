import pytest
import torch

from lib_ext.attention_sites import find_cross_attention
from lib_ext.seam import BatchLayout, DenoiseStep, JobInfo, PromptTokens, RowRole, SamplingContext
from lib_ext.session import SamplingSession


class Attn(torch.nn.Module):
    def __init__(self, dim: int, ctx: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = torch.nn.Linear(dim, dim, bias=False)
        self.to_k = torch.nn.Linear(ctx, dim, bias=False)
        self.to_v = torch.nn.Linear(ctx, dim, bias=False)
        self.to_out = torch.nn.ModuleList([torch.nn.Linear(dim, dim)])

    def forward(self, x, context=None):
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        return self.to_out[0](torch.softmax(q @ k.transpose(1, 2), -1) @ v)


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn1 = torch.nn.Linear(4, 4)
        self.attn2 = Attn(4, 6)


class TinyUNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.input_blocks = torch.nn.ModuleList([Block()])
        self.output_blocks = torch.nn.ModuleList([Block(), Block()])

    def forward(self, x, context):
        for b in [*self.input_blocks, *self.output_blocks]:
            x = x + b.attn2(x, context)
        return x


def tokenize(prompt: str) -> PromptTokens:
    return PromptTokens(prompt, tuple(prompt.split()), ())


class Recorder:
    name = "recorder"

    def __init__(self, fail_in_begin: bool = False) -> None:
        self.rows_seen: list[list[RowRole] | None] = []
        self.ended: list[bool] = []
        self.fail_in_begin = fail_in_begin

    def begin_sampling(self, ctx: SamplingContext) -> None:
        for site in find_cross_attention(ctx.unet):
            h = site.module.register_forward_hook(lambda m, a, o: self.rows_seen.append(ctx.current_rows()))
            ctx.patches.add_handle(h, key=("rec", site.name))
        ctx.step_hooks.append(lambda step: step.default_combine() * 0 + 42)
        if self.fail_in_begin:
            raise RuntimeError("feature broke while installing")

    def end_sampling(self, ctx: SamplingContext, ok: bool) -> None:
        self.ended.append(ok)


def hooks_of(unet: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in unet.modules())


def test_find_cross_attention_names_blocks():
    sites = find_cross_attention(TinyUNet())
    assert [s.short_name for s in sites] == ["IN00", "OUT00", "OUT01"]
    assert [s.block for s in sites] == ["down", "up", "up"]
    assert all(s.heads == 2 for s in sites)


def test_session_attributes_rows_and_restores_everything():
    unet = TinyUNet()
    layout = BatchLayout.from_weights([[1.0, 0.5], [1.0]])
    rec = Recorder()
    job = JobInfo(prompts=["a", "b"], negative_prompts=["", ""], seeds=[1, 2])
    x = torch.randn(5, 3, 4)
    ctx_t = torch.randn(5, 2, 6)
    with SamplingSession([rec], job, unet, layout, tokenize) as session:
        session.begin_step(layout, 0)
        unet(x[:2], ctx_t[:2])  # sliced calls, as A1111 with batch_cond_uncond off
        unet(x[2:], ctx_t[2:])
        step = DenoiseStep(x, torch.randn(5, 3, 4), torch.ones(2), layout, 7.0, 0, 1, "x0")
        assert torch.all(session.combine(step) == 42)
        assert hooks_of(unet) > 0
    assert rec.rows_seen[:3] == [[RowRole(0, 0, False), RowRole(0, 1, False)]] * 3
    assert rec.rows_seen[3] == [RowRole(1, 0, False), RowRole(0, -1, True), RowRole(1, -1, True)]
    assert rec.ended == [True]
    assert hooks_of(unet) == 0
    assert SamplingSession.open_sessions() == []


def test_session_restores_on_exception_and_on_failing_feature():
    unet = TinyUNet()
    layout = BatchLayout.from_weights([[1.0]])
    rec = Recorder()
    with pytest.raises(ValueError), SamplingSession([rec], JobInfo(["a"], [""], [0]), unet, layout, tokenize):
        raise ValueError("sampler raised")
    assert rec.ended == [False] and hooks_of(unet) == 0

    bad = Recorder(fail_in_begin=True)
    with pytest.raises(RuntimeError), SamplingSession([bad], JobInfo(["a"], [""], [0]), unet, layout, tokenize):
        pass
    assert bad.ended == [False] and hooks_of(unet) == 0


def test_rebind_follows_a_new_unet_and_restores_both():
    first, second = TinyUNet(), TinyUNet()
    layout = BatchLayout.from_weights([[1.0]])
    with SamplingSession([], JobInfo(["a"], [""], [0]), first, layout, tokenize) as s:
        s.rebind_unet(second)
        s.begin_step(layout, 0)
        second(torch.randn(2, 3, 4), torch.randn(2, 2, 6))
        assert s.rows_run() == 2
    assert hooks_of(first) == 0 and hooks_of(second) == 0


def test_a_raising_step_hook_is_dropped_with_a_message():
    unet = TinyUNet()
    layout = BatchLayout.from_weights([[1.0]])

    def bad(step):
        raise ZeroDivisionError("bug in a feature")

    x = torch.randn(2, 3, 4)
    with SamplingSession([], JobInfo(["a"], [""], [0]), unet, layout, tokenize) as s:
        s.ctx.step_hooks.append(bad)
        step = DenoiseStep(x, torch.randn(2, 3, 4), torch.ones(1), layout, 7.0, 0, 1, "x0")
        assert s.combine(step) is None
        assert s.ctx.step_hooks == []
    assert any("bug in a feature" in e for e in s.errors)
