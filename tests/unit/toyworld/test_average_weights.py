"""The checkpoint averager: means in float32, dtypes kept, mismatches refused, inputs named in the metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lib_ext.toyworld import average_weights


def _write(path: Path, scale: float, step: int = 7, meta: dict[str, str] | None = None) -> Path:
    save_file(
        {
            "w": (torch.arange(6, dtype=torch.float32).reshape(2, 3) * scale).to(torch.float16),
            "b": torch.full((3,), scale, dtype=torch.float32),
            "step": torch.tensor([step], dtype=torch.int64),
        },
        str(path),
        metadata=meta or {"format": "toyworld-sd1", "train": '{"steps": 1}'},
    )
    return path


def test_mean_of_three_keeps_dtypes_and_names_its_inputs(tmp_path: Path) -> None:
    paths = [_write(tmp_path / f"{i}.safetensors", s) for i, s in enumerate([1.0, 2.0, 6.0])]
    out = tmp_path / "soup.safetensors"
    average_weights.main([str(out), *map(str, paths)])
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        w, b, step = f.get_tensor("w"), f.get_tensor("b"), f.get_tensor("step")
    assert w.dtype == torch.float16 and b.dtype == torch.float32 and step.dtype == torch.int64
    assert torch.equal(w, (torch.arange(6.0).reshape(2, 3) * 3.0).half())
    assert torch.equal(b, torch.full((3,), 3.0))
    assert step.tolist() == [7]
    assert meta["format"] == "toyworld-sd1" and meta["train"] == '{"steps": 1}'
    named = json.loads(meta["averaged_from"])
    assert [n["file"] for n in named] == ["0.safetensors", "1.safetensors", "2.safetensors"]
    assert named[0]["sha256"] == average_weights.sha256(paths[0]) != named[1]["sha256"]


def test_float16_inputs_are_summed_in_float32(tmp_path: Path) -> None:
    # 60000 + 60000 overflows float16 (largest 65504); a float16 running sum would store inf.
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"w": torch.tensor([60000.0, -1.0], dtype=torch.float16)}, str(a))
    save_file({"w": torch.tensor([60000.0, 2.0], dtype=torch.float16)}, str(b))
    tensors, _ = average_weights.average([a, b])
    assert tensors["w"].tolist() == [60000.0, 0.5]


def test_mismatched_inputs_are_refused(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.safetensors", 1.0)
    save_file({"w": torch.zeros(2, 3, dtype=torch.float16)}, str(tmp_path / "fewer.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        average_weights.average([a, tmp_path / "fewer.safetensors"])
    save_file(
        {"w": torch.zeros(3, 2, dtype=torch.float16), "b": torch.zeros(3), "step": torch.tensor([7])},
        str(tmp_path / "shape.safetensors"),
    )
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        average_weights.average([a, tmp_path / "shape.safetensors"])
    other_step = _write(tmp_path / "step.safetensors", 1.0, step=8)
    with pytest.raises(ValueError, match="integer tensor step"):
        average_weights.average([a, other_step])
    with pytest.raises(ValueError, match="at least two"):
        average_weights.average([a])


def test_cli_refuses_to_overwrite_an_input(tmp_path: Path) -> None:
    a, b = _write(tmp_path / "a.safetensors", 1.0), _write(tmp_path / "b.safetensors", 2.0)
    before = a.read_bytes()
    with pytest.raises(SystemExit, match="must not be one of the inputs"):
        average_weights.main([str(a), str(a), str(b)])
    assert a.read_bytes() == before
    with pytest.raises(SystemExit, match="missing"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / "c.safetensors"))
        average_weights.main([str(tmp_path / "out.safetensors"), str(a), str(tmp_path / "c.safetensors")])
    assert not (tmp_path / "out.safetensors").exists()
