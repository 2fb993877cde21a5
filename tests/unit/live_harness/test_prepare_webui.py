"""tools/prepare_webui.py without a WebUI: pins read from a launch_utils.py written the way A1111 v1.10.1 writes it,
helper repositories checked out from local git copies (also partial ones), the CLIP vocabulary conversion, the
Hugging Face cache layout and the tiny SDXL config. With PROMPTSCOPE_WEBUI set, the pins of that checkout too."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[3] / "tools" / "prepare_webui.py"


@pytest.fixture(scope="module")
def prep():
    spec = importlib.util.spec_from_file_location("prepare_webui", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


LAUNCH_UTILS = """
def prepare_environment():
    url = os.environ.get('TORCH_INDEX_URL', "https://download.pytorch.org/whl/cu121")
    torch_command = os.environ.get('TORCH_COMMAND', f"pip install torch==2.1.2 torchvision==0.16.2 --index {url}")
    clip_package = os.environ.get('CLIP_PACKAGE', "https://example.invalid/CLIP/archive/abc.zip")
    k_diffusion_repo = os.environ.get('K_DIFFUSION_REPO', 'https://example.invalid/k-diffusion.git')
    blip_repo = os.environ.get('BLIP_REPO', 'https://example.invalid/BLIP.git')
    k_diffusion_commit_hash = os.environ.get('K_DIFFUSION_COMMIT_HASH', "%s")
    blip_commit_hash = os.environ.get('BLIP_COMMIT_HASH', "%s")
    git_clone(k_diffusion_repo, repo_dir('k-diffusion'), "K-diffusion", k_diffusion_commit_hash)
    git_clone(blip_repo, repo_dir('BLIP'), "BLIP", blip_commit_hash)
"""


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path: Path) -> tuple[str, str]:
    """A repository with two commits; returns (first, second)."""
    path.mkdir(parents=True)
    git("init", "-q", cwd=path)
    (path / "code.py").write_text("v = 1\n")
    git("add", ".", cwd=path)
    git("commit", "-q", "-m", "one", cwd=path)
    first = git("rev-parse", "HEAD", cwd=path)
    (path / "code.py").write_text("v = 2\n")
    git("commit", "-q", "-am", "two", cwd=path)
    return first, git("rev-parse", "HEAD", cwd=path)


def test_pins_and_repositories_from_local_copies(prep, tmp_path, monkeypatch):
    for name in ("TORCH_COMMAND", "K_DIFFUSION_COMMIT_HASH", "BLIP_COMMIT_HASH", "K_DIFFUSION_REPO", "BLIP_REPO"):
        monkeypatch.delenv(name, raising=False)
    kd_first, _ = make_repo(tmp_path / "src" / "kd")
    webui = tmp_path / "webui"
    (webui / "modules").mkdir(parents=True)
    (webui / "modules" / "launch_utils.py").write_text(LAUNCH_UTILS % (kd_first, "b" * 40))
    repos, torch_specs, clip = prep.read_pins(webui)
    assert repos == [("k-diffusion", "https://example.invalid/k-diffusion.git", kd_first),
                     ("BLIP", "https://example.invalid/BLIP.git", "b" * 40)]  # fmt: skip
    assert torch_specs == ["torch==2.1.2", "torchvision==0.16.2"]
    assert clip == "https://example.invalid/CLIP/archive/abc.zip"
    missing = prep.prepare_repositories(webui, repos, {"k-diffusion": tmp_path / "src" / "kd"})
    assert (webui / "repositories" / "k-diffusion" / "code.py").read_text() == "v = 1\n"  # the pinned commit
    assert len(missing) == 1 and "repositories/BLIP" in missing[0] and "b" * 40 in missing[0]
    assert "--repo BLIP=" in missing[0]
    monkeypatch.setenv("BLIP_COMMIT_HASH", "c" * 40)  # A1111's own override variables are honoured
    assert prep.read_pins(webui)[0][1] == ("BLIP", "https://example.invalid/BLIP.git", "c" * 40)
    monkeypatch.setenv("TORCH_COMMAND", "pip install torch==2.1.2+cpu torchvision==0.16.2+cpu")
    assert prep.read_pins(webui)[1] == ["torch==2.1.2+cpu", "torchvision==0.16.2+cpu"]


def test_partial_copy_is_checked_out_without_its_absent_files(prep, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    git("init", "-q", cwd=src)
    (src / "code.py").write_text("x = 1\n")
    (src / "big.png").write_bytes(b"\x89PNG" + bytes(range(256)) * 10)
    git("add", ".", cwd=src)
    git("commit", "-q", "-m", "one", cwd=src)
    commit = git("rev-parse", "HEAD", cwd=src)
    dest = tmp_path / "dest"
    shutil.copytree(src / ".git", dest / ".git")  # fresh commits are loose objects: one can be left out
    blob = git("rev-parse", f"{commit}:big.png", cwd=dest)
    (dest / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    assert prep.checkout(dest, commit, fresh=True) == ["big.png"]
    assert (dest / "code.py").read_text() == "x = 1\n" and not (dest / "big.png").exists()
    assert git("rev-parse", "HEAD", cwd=dest) == commit


def test_clip_vocabulary_and_hf_cache_layout(prep, tmp_path):
    # A stand-in for open_clip's bpe_simple_vocab_16e6.txt.gz: a header line, then one merge per line.
    n_merges = 49152 - 256 - 2
    merges = [f"m{i} x</w>" for i in range(n_merges)]
    bpe = tmp_path / "bpe.txt.gz"
    bpe.write_bytes(gzip.compress(("#version\n" + "\n".join(merges) + "\nignored after\n").encode()))
    vocab, read = prep.clip_vocab_and_merges(bpe)
    assert len(vocab) == 49408 and read == merges
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["m0x</w>"] == 512
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    prep.write_hf_entries(tmp_path / "hub", bpe)
    root = tmp_path / "hub" / "models--openai--clip-vit-large-patch14"
    snapshot = root / "snapshots" / (root / "refs" / "main").read_text()
    config = json.loads((snapshot / "config.json").read_text())
    assert config["text_config"]["hidden_size"] == 768 and config["text_config"]["vocab_size"] == 49408
    assert (snapshot / "merges.txt").read_text().splitlines()[1] == "m0 x</w>"
    assert json.loads((snapshot / "vocab.json").read_text()) == vocab
    big = tmp_path / "hub" / "models--laion--CLIP-ViT-bigG-14-laion2B-39B-b160k"
    assert json.loads(next((big / "snapshots").iterdir()).joinpath("config.json").read_text())["projection_dim"] == 1280
    short = tmp_path / "short.txt.gz"
    short.write_bytes(gzip.compress(b"#version\na b\n"))
    with pytest.raises(prep.Problem, match="49408"):
        prep.write_hf_entries(tmp_path / "hub2", short)


def test_tiny_sdxl_config(prep, tmp_path):
    base = tmp_path / "repositories" / "generative-models" / "configs" / "inference"
    base.mkdir(parents=True)
    (base / "sd_xl_base.yaml").write_text(
        "model:\n  params:\n    network_config:\n      params:\n        use_checkpoint: True\n"
        "        model_channels: 320\n        num_head_channels: 64\n"
        "        transformer_depth: [1, 2, 10]  # note\n        context_dim: 2048\n"
    )
    text = prep.sdxl_tiny_yaml(tmp_path)
    assert "model_channels: 64\n" in text and "num_head_channels: 32\n" in text
    assert "transformer_depth: [1, 1, 2]" in text and "context_dim: 2048" in text and "use_checkpoint: False" in text
    (base / "sd_xl_base.yaml").write_text("model: {}\n")
    with pytest.raises(prep.Problem, match="model_channels"):
        prep.sdxl_tiny_yaml(tmp_path)


def test_pins_of_the_live_checkout(prep):
    webui = os.environ.get("PROMPTSCOPE_WEBUI", "").strip()
    if not webui:
        pytest.skip("set PROMPTSCOPE_WEBUI to an A1111 checkout to read its pins")
    repos, torch_specs, clip = prep.read_pins(Path(webui))
    assert {folder for folder, _url, _commit in repos} >= {"stable-diffusion-stability-ai", "generative-models",
                                                          "k-diffusion", "BLIP"}  # fmt: skip
    assert torch_specs[0].startswith("torch==") and clip


def test_not_a_checkout_is_refused(prep, tmp_path, capsys):
    assert prep.main([str(tmp_path)]) == 2
    assert "not an A1111 WebUI checkout" in capsys.readouterr().err
