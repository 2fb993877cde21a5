"""Peers' own code for the comparison tests: read from a checkout (or a bare git directory) that an environment
variable names, never committed here. Unset: the test skips and says which repository to point it at."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def peer_source(env: str, repository: str, path: str) -> str:
    """The text of `path` in the checkout named by `env` (a work tree, or HEAD of a git directory)."""
    root = os.environ.get(env)
    if not root:
        pytest.skip(f"{env} is not set (a checkout of {repository})")
    file = Path(root) / path
    if file.is_file():
        return file.read_text(encoding="utf-8")
    out = subprocess.run(["git", "-C", root, "show", f"HEAD:{path}"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        pytest.fail(f"{env}={root} holds no {path}: {out.stderr.strip()}")
    return out.stdout
