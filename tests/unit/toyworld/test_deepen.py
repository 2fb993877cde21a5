"""`deepen`: one more res block per level, the same output to the last bit, and a run that trains on from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lib_ext.toyworld.deepen import deepen, main
from lib_ext.toyworld.ldm_model import ClipTextModel, LdmConfig, LdmUNet
from lib_ext.toyworld.ldm_weights import export_checkpoint_file, load_ldm_toyworld, webui_yaml


def _trained_like(cfg: LdmConfig, seed: int) -> LdmUNet:
    """A UNet whose zero-initialised convolutions are not zero any more, as after training."""
    torch.manual_seed(seed)
    unet = LdmUNet(cfg)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return unet.eval()


@pytest.mark.parametrize("blocks", [1, 2])
def test_the_deeper_unet_computes_what_the_source_computes(blocks: int) -> None:
    unet = _trained_like(LdmConfig(num_res_blocks=blocks), seed=blocks)
    deep = deepen(unet).eval()
    assert deep.cfg.num_res_blocks == blocks + 1
    assert (
        len(deep.input_blocks) == len(unet.input_blocks) + 3 and len(deep.output_blocks) == len(unet.output_blocks) + 3
    )
    x, t, ctx = torch.randn(2, 4, 32, 32), torch.tensor([20, 900]), torch.randn(2, 154, 64)
    with torch.no_grad():
        assert torch.equal(deep(x, t, ctx), unet(x, t, ctx))
    # the new blocks are real blocks: a nudge to one of them changes the output
    with torch.no_grad():
        deep.output_blocks[1][0].out_layers[3].weight.add_(0.01)
        assert not torch.equal(deep(x, t, ctx), unet(x, t, ctx))


def test_a_misplaced_block_would_show() -> None:
    """The identity test can fail: with the new up block last in its level (the obvious place), the level's old
    last block pops the wrong skip."""
    unet = _trained_like(LdmConfig(), seed=3)
    deep = deepen(unet).eval()
    deep.output_blocks[-2], deep.output_blocks[-1] = deep.output_blocks[-1], deep.output_blocks[-2]
    x, t, ctx = torch.randn(1, 4, 32, 32), torch.tensor([500]), torch.randn(1, 77, 64)
    with torch.no_grad():
        assert not torch.allclose(deep(x, t, ctx), unet(x, t, ctx), atol=1e-4)


def test_cli_writes_a_deeper_checkpoint_the_loaders_and_train_ldm_take(tmp_path: Path) -> None:
    from lib_ext.toyworld.train_ldm import main as train_main

    cfg = LdmConfig()
    torch.manual_seed(5)
    te, unet = ClipTextModel(cfg), _trained_like(cfg, seed=5)
    src, out = tmp_path / "src.safetensors", tmp_path / "deep.safetensors"
    export_checkpoint_file(src, te, unet, cfg, {"steps": 30, "minutes": 2.0})
    main([str(out), str(src)])
    te2, deep, cfg2, info = load_ldm_toyworld(out)
    assert cfg2.num_res_blocks == 2 and info["deepened_from"] == "src.safetensors" and info["steps"] == 30
    assert "num_res_blocks: 2" in out.with_suffix(".yaml").read_text() == webui_yaml(cfg2)
    _, src_unet, _, _ = load_ldm_toyworld(src)
    x, t, ctx = torch.randn(1, 4, 32, 32), torch.tensor([400]), torch.randn(1, 77, 64)
    with torch.no_grad():  # both read back from fp16, so the identity holds on the stored weights too
        assert torch.equal(deep(x, t, ctx), src_unet(x, t, ctx))
    for a, b in zip(te2.state_dict().values(), load_ldm_toyworld(src)[0].state_dict().values(), strict=True):
        assert torch.equal(a, b)

    # train_ldm takes the architecture from the file it starts from, and resumes its own state
    trained, ckpt = tmp_path / "t.safetensors", tmp_path / "t.pt"
    common = ["--batch", "2", "--warmup", "1", "--threads", "1", "--out", str(trained), "--ckpt", str(ckpt)]
    train_main(["--init-from", str(out), "--max-steps", "31", *common])
    train_main(["--resume", "--max-steps", "32", *common])
    with safe_open(str(trained), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["config"])["num_res_blocks"] == 2 and json.loads(meta["train"])["steps"] == 32
    with pytest.raises(SystemExit, match="new file"):
        main([str(src), str(src)])
