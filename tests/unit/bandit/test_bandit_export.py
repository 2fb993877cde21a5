"""Export: captions, kohya layout, and that no name can escape the chosen folder."""

import hashlib
import os
from pathlib import Path

import pytest

from lib_ext.bandit.export import (
    clean_caption,
    export_kohya_dataset,
    export_negative_set,
    export_stats,
    safe_child,
    validate_name,
)


@pytest.mark.parametrize(
    ("prompt", "caption"),
    [
        ("a (cat:1.2), [dog], ((best quality)), <lora:foo:0.8> photo", "a cat, dog, best quality, photo"),
        ("<lora:a:1><hypernet:b:0.5>portrait", "portrait"),
        ("a cat AND_TOPK red hat :0.4 AND blue sky:0.5", "a cat, red hat, blue sky"),
        (r"\(title\) [a:b:0.5] BREAK z", "(title) b, z"),
        ("[x|y] painting", "x, y painting"),
        ("masterpiece, (a (b:1.1) c:0.9), [[x]]", "masterpiece, a b c, x"),
        ("(unbalanced, cat", "unbalanced, cat"),
        ("[remove::0.3] keep", "remove keep"),
        ("12:30 time", "12:30 time"),
        ("a cat :0.8", "a cat"),  # A1111 reads a trailing ':w' as the weight of the (only) AND part
    ],
)
def test_clean_caption(prompt, caption):
    assert clean_caption(prompt) == caption


@pytest.mark.parametrize(
    "bad",
    [
        "..",
        ".",
        "",
        "a/b",
        "a\\b",
        "/etc",
        "C:evil",
        "x\x00y",
        "tab\tname",
        "trailing.",
        " lead",
        "NUL",
        "con.txt",
        "a" * 200,
        "../../escape",
    ],
)
def test_unsafe_names_rejected(tmp_path, bad):
    with pytest.raises(ValueError):
        validate_name(bad)
    with pytest.raises(ValueError):
        safe_child(tmp_path, bad)
    with pytest.raises(ValueError):
        export_kohya_dataset([], tmp_path, bad, "sks", "cat")
    with pytest.raises(ValueError):
        export_kohya_dataset([], tmp_path, "ok", bad, "cat")
    with pytest.raises(ValueError):
        export_kohya_dataset([], tmp_path, "ok2", "sks", bad)
    with pytest.raises(ValueError):
        export_negative_set([], tmp_path, bad)
    with pytest.raises(ValueError):
        export_stats([], tmp_path, bad)
    assert not any(Path(tmp_path).parent.glob("escape*"))


def test_non_string_name_rejected(tmp_path):
    with pytest.raises(ValueError, match="string"):
        validate_name(3)


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_symlink_escape_rejected(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        safe_child(root, "link")


def _image(tmp_path, i, prompt, content=None):
    p = tmp_path / "src" / f"img{i}.PNG"
    p.parent.mkdir(exist_ok=True)
    data = content or f"image {i}".encode()
    p.write_bytes(data)
    return {"id": i, "seed": 100 + i, "prompt": prompt, "path": str(p), "sha256": hashlib.sha256(data).hexdigest()}


def test_kohya_layout_missing_and_changed_files(tmp_path):
    imgs = [_image(tmp_path, i, f"a (cat:1.{i})") for i in range(3)]
    Path(imgs[1]["path"]).unlink()
    Path(imgs[2]["path"]).write_bytes(b"edited")
    rep = export_kohya_dataset(imgs, tmp_path / "out", "set1", "sks", "cat", repeats=15)
    folder = tmp_path / "out" / "set1" / "15_sks cat"
    assert rep["image_dir"] == str(folder.resolve())
    assert sorted(p.name for p in folder.iterdir()) == ["000000_100.png", "000000_100.txt"]
    assert (folder / "000000_100.txt").read_text() == "sks, a cat\n"
    assert {s["reason"] for s in rep["skipped"]} == {"file missing", "file changed (SHA-256 differs)"}
    # Refuses to write into a non-empty folder unless asked.
    with pytest.raises(ValueError, match="not empty"):
        export_kohya_dataset(imgs[:1], tmp_path / "out", "set1", "sks", "cat", repeats=15)
    export_kohya_dataset(imgs[:1], tmp_path / "out", "set1", "sks", "cat", repeats=15, overwrite=True)


@pytest.mark.parametrize("repeats", [0, -1, 1.5, True, 10_001])
def test_repeats_validated(tmp_path, repeats):
    with pytest.raises(ValueError, match="repeats"):
        export_kohya_dataset([], tmp_path, "x", "sks", "cat", repeats=repeats)


def test_trigger_with_space_rejected(tmp_path):
    with pytest.raises(ValueError, match="spaces"):
        export_kohya_dataset([], tmp_path, "x", "two words", "cat")


def test_negative_set_captions(tmp_path):
    imgs = [_image(tmp_path, 1, "ugly (hands:1.4)")]
    rep = export_negative_set(imgs, tmp_path, "neg", include_prompt=False)
    assert Path(rep["image_dir"]).name == "1_wrong"
    assert (Path(rep["image_dir"]) / "000001_101.txt").read_text() == "wrong\n"
    rep = export_negative_set(imgs, tmp_path, "neg2", trigger="broken", repeats=3)
    assert (Path(rep["image_dir"]) / "000001_101.txt").read_text() == "broken, ugly hands\n"
    assert Path(rep["image_dir"]).name == "3_broken"
