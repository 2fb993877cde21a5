"""Exports: liked images as a kohya-ss dataset, disliked ones as a "negative LoRA" set, per-arm statistics.

Every name that becomes a path component (export name, trigger, class) is validated so that nothing can
escape the folder the user chose: no separators, no `.`/`..`, no NUL or control characters, no absolute or
drive paths, no Windows-reserved names; and the final path is checked to resolve inside the root.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .store import sha256_file

_FORBIDDEN = set('/\\<>:"|?*')
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
MAX_NAME = 120


def validate_name(name: Any, what: str = "name") -> str:
    """A single, portable path component, or ValueError saying what is wrong with it."""
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string, got {type(name).__name__}")
    if name == "":
        raise ValueError(f"{what} must not be empty")
    if "\x00" in name:
        raise ValueError(f"{what} must not contain a NUL character")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"{what} must not contain control characters")
    if name in (".", ".."):
        raise ValueError(f"{what} must not be '.' or '..'")
    bad = sorted(_FORBIDDEN.intersection(name))
    if bad:
        raise ValueError(f"{what} must not contain path separators or {''.join(sorted(_FORBIDDEN))!r}: found {bad}")
    if os.path.isabs(name):
        raise ValueError(f"{what} must not be an absolute path")
    if name != name.strip() or name.endswith("."):
        raise ValueError(f"{what} must not start or end with spaces or end with a dot")
    if name.split(".")[0].upper() in _RESERVED:
        raise ValueError(f"{what} {name!r} is a reserved device name on Windows")
    if len(name) > MAX_NAME:
        raise ValueError(f"{what} is longer than {MAX_NAME} characters")
    return name


def safe_child(root: str | os.PathLike, *names: str) -> Path:
    """root/names… after validating each name and checking the resolved path stays inside root (symlinks too)."""
    base = Path(root).resolve()
    path = base
    for n in names:
        path = path / validate_name(n)
    resolved = path.resolve()
    if os.path.commonpath([base, resolved]) != str(base):
        raise ValueError(f"{path} resolves outside the export folder {base}")
    return resolved


# ---- captions ---------------------------------------------------------------------------------------------------
_WEIGHT_TAIL = re.compile(r"^(.*?):\s*[-+]?(?:\d+\.?\d*|\.\d+)\s*$", re.S)
_EXTRA_NETWORK = re.compile(r"<[^<>]*>")
_COMPOSABLE = re.compile(r"\bAND(?:_[A-Z]+)?\b")


def _match(s: str, i: int, open_c: str, close_c: str) -> int:
    """Index of the bracket closing s[i] (escapes skipped), or -1."""
    depth = 0
    j = i
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return -1


def _split_top(s: str, sep: str) -> list[str]:
    parts, depth, cur, j = [], 0, [], 0
    while j < len(s):
        c = s[j]
        if c == "\\" and j + 1 < len(s):
            cur.append(s[j : j + 2])
            j += 2
            continue
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        j += 1
    parts.append("".join(cur))
    return parts


def _strip_emphasis(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i : i + 2])
            i += 2
            continue
        if c in "([":
            close = _match(s, i, c, ")" if c == "(" else "]")
            if close < 0:  # unbalanced: drop the bracket, keep the text
                i += 1
                continue
            inner = s[i + 1 : close]
            if c == "(":
                m = _WEIGHT_TAIL.match(inner) if len(_split_top(inner, ":")) > 1 else None
                out.append(_strip_emphasis(m.group(1) if m else inner))
            else:
                alts = _split_top(inner, "|")
                if len(alts) > 1:  # [a|b] alternation: both contribute
                    out.append(", ".join(_strip_emphasis(a) for a in alts))
                else:
                    parts = _split_top(inner, ":")
                    if len(parts) == 3:  # [from:to:when] → what the image mostly shows
                        out.append(_strip_emphasis(parts[1] or parts[0]))
                    elif len(parts) == 2:  # [x:when] / [x::when]
                        out.append(_strip_emphasis(parts[0]))
                    else:
                        out.append(_strip_emphasis(inner))
            i = close + 1
            continue
        if c in ")]":
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def clean_caption(prompt: str) -> str:
    """A1111 prompt → plain caption: `<lora:…>`-style tags, weights `(x:1.2)`, `(x)`, `[x]`, prompt editing,
    BREAK and composable `AND …:w` are removed; escaped brackets become literal ones."""
    text = _EXTRA_NETWORK.sub(" ", prompt)
    pieces = []
    for part in _COMPOSABLE.split(text):
        m = _WEIGHT_TAIL.match(part.strip())
        if m and part.count("(") == part.count(")"):  # a trailing ':0.4' of an AND part (not inside brackets)
            part = m.group(1)
        pieces.append(part)
    text = ", ".join(pieces)
    text = re.sub(r"\bBREAK\b", ",", text)
    text = _strip_emphasis(text)
    text = re.sub(r"\\([()\[\]\\])", r"\1", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*,[\s,]*", ", ", text)
    return text.strip(" ,")


# ---- dataset folders --------------------------------------------------------------------------------------------
def _prepare(folder: Path, overwrite: bool) -> None:
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise ValueError(f"export folder {folder} exists and is not empty (choose another name or allow overwrite)")
    folder.mkdir(parents=True, exist_ok=True)


def _copy_with_captions(
    images: Iterable[dict], folder: Path, caption_of, verify_hash: bool
) -> tuple[list[dict], list[dict]]:
    written, skipped = [], []
    for img in images:
        src = Path(img["path"])
        if not src.is_file():
            skipped.append({"image_id": img["id"], "path": str(src), "reason": "file missing"})
            continue
        if verify_hash and img.get("sha256") and sha256_file(src) != img["sha256"]:
            skipped.append({"image_id": img["id"], "path": str(src), "reason": "file changed (SHA-256 differs)"})
            continue
        stem = f"{int(img['id']):06d}_{int(img['seed'])}"
        dst = folder / (stem + src.suffix.lower())
        shutil.copy2(src, dst)
        (folder / (stem + ".txt")).write_text(caption_of(img) + "\n", encoding="utf-8")
        written.append({"image_id": img["id"], "file": str(dst)})
    return written, skipped


def _check_repeats(repeats: Any) -> int:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 10_000:
        raise ValueError(f"repeats must be an integer from 1 to 10000, got {repeats!r}")
    return repeats


def export_kohya_dataset(
    images: Sequence[dict],
    dest_root: str | os.PathLike,
    name: str,
    trigger: str,
    class_token: str,
    repeats: int = 10,
    overwrite: bool = False,
    verify_hash: bool = True,
) -> dict[str, Any]:
    """Copy images to `<dest_root>/<name>/<repeats>_<trigger> <class>/` with a `.txt` caption each
    (`trigger, cleaned prompt`), the layout of kohya-ss/sd-scripts' DreamBooth-style datasets."""
    validate_name(trigger, "trigger word")
    validate_name(class_token, "class word")
    if " " in trigger:
        raise ValueError("trigger word must not contain spaces (kohya reads '<repeats>_<trigger> <class>')")
    sub = f"{_check_repeats(repeats)}_{trigger} {class_token}"
    root = safe_child(dest_root, name)
    folder = safe_child(root, sub)
    _prepare(root, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    written, skipped = _copy_with_captions(
        images, folder, lambda im: ", ".join(x for x in (trigger, clean_caption(im["prompt"])) if x), verify_hash
    )
    return {"folder": str(root), "image_dir": str(folder), "written": written, "skipped": skipped}


def export_negative_set(
    images: Sequence[dict],
    dest_root: str | os.PathLike,
    name: str,
    trigger: str = "wrong",
    repeats: int = 1,
    include_prompt: bool = True,
    overwrite: bool = False,
    verify_hash: bool = True,
) -> dict[str, Any]:
    """Disliked images as a "negative LoRA" set (Max Woolf's "wrong" LoRA): `<name>/<repeats>_<trigger>/`,
    captions `wrong, <prompt>`. Which ratings go in is the caller's choice (taste is not the same as broken)."""
    validate_name(trigger, "trigger word")
    root = safe_child(dest_root, name)
    folder = safe_child(root, f"{_check_repeats(repeats)}_{trigger}")
    _prepare(root, overwrite)
    folder.mkdir(parents=True, exist_ok=True)

    def caption(im: dict) -> str:
        return ", ".join(x for x in (trigger, clean_caption(im["prompt"]) if include_prompt else "") if x)

    written, skipped = _copy_with_captions(images, folder, caption, verify_hash)
    return {"folder": str(root), "image_dir": str(folder), "written": written, "skipped": skipped}


STATS_COLUMNS = (
    "arm_id", "label", "prompt", "negative", "retired", "n", "likes", "dislikes",
    "alpha", "beta", "mean", "ci_low", "ci_high", "p_best",
)  # fmt: skip


def export_stats(
    rows: Sequence[dict], dest_root: str | os.PathLike, name: str, meta: dict | None = None, overwrite: bool = False
) -> dict[str, str]:
    """Per-arm statistics as `<name>/arm_stats.csv` and `<name>/arm_stats.json`."""
    root = safe_child(dest_root, name)
    csv_path, json_path = root / "arm_stats.csv", root / "arm_stats.json"
    if not overwrite and (csv_path.exists() or json_path.exists()):
        raise ValueError(f"statistics already exported in {root} (choose another name or allow overwrite)")
    root.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=STATS_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    json_path.write_text(
        json.dumps({"meta": meta or {}, "arms": list(rows)}, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return {"csv": str(csv_path), "json": str(json_path)}
