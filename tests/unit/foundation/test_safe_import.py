"""Another extension's `lib_ext` must never shadow ours inside the WebUI, nor ours theirs."""

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def clean_modules():
    saved = {
        k: v
        for k, v in sys.modules.items()
        if k.split(".")[0] in ("lib_ext", "promptscope_a1111", "promptscope_lib_ext")
    }
    for k in saved:
        del sys.modules[k]
    yield
    for k in [k for k in sys.modules if k.split(".")[0] in ("lib_ext", "promptscope_a1111", "promptscope_lib_ext")]:
        del sys.modules[k]
    sys.modules.update(saved)


def make_other_extension(tmp_path: Path) -> Path:
    ext = tmp_path / "other-extension"
    (ext / "lib_ext").mkdir(parents=True)
    (ext / "lib_ext" / "__init__.py").write_text(textwrap.dedent('WHO = "other"\n'))
    (ext / "lib_ext" / "seam.py").write_text('WHO = "other seam"\n')
    return ext


def import_from(folder: Path, name: str):
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def test_other_lib_ext_loaded_first_does_not_shadow_ours(tmp_path, clean_modules):
    other = import_from(make_other_extension(tmp_path), "lib_ext")
    assert other.WHO == "other"
    ours = import_from(REPO, "promptscope_a1111")
    seam = importlib.import_module("promptscope_lib_ext.seam")
    assert hasattr(seam, "BatchLayout")
    assert ours.lib.__file__ == str(REPO / "lib_ext" / "__init__.py")
    assert sys.modules["lib_ext"] is other  # theirs untouched
    assert importlib.import_module("lib_ext.seam").WHO == "other seam"


def test_ours_loaded_first_does_not_shadow_theirs(tmp_path, clean_modules):
    import_from(REPO, "promptscope_a1111")
    assert "lib_ext" not in sys.modules  # we never claim the generic name
    other = import_from(make_other_extension(tmp_path), "lib_ext")
    assert other.WHO == "other"
    assert importlib.import_module("promptscope_lib_ext.seam").BatchLayout


def test_library_never_imports_host_modules():
    offenders = []
    for path in (REPO / "lib_ext").rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped.startswith(("import modules", "from modules")) or "import lib_ext" in stripped:
                offenders.append(f"{path.relative_to(REPO)}: {stripped}")
    assert offenders == []
