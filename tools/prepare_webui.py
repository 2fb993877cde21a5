#!/usr/bin/env python3
"""Prepare an A1111 WebUI checkout (v1.10.x) for PromptScope's live tier, offline and on the CPU.

    python tools/prepare_webui.py /path/to/stable-diffusion-webui [--repo NAME=PATH ...]

It never copies WebUI code into this repository; everything it makes goes into the checkout you name (its venv,
repositories/, models/Stable-diffusion/) or into the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else
~/.cache/huggingface/hub). Safe to run again: finished steps are skipped.

1. The helper repositories at the commits pinned in the checkout's modules/launch_utils.py. Nothing is cloned from
   the network: a repository already under repositories/ is checked out at its pinned commit, and one that is
   missing is cloned from a local git copy given as `--repo <folder under repositories/>=<path>`. The script names
   every repository it could not find, with the URL and commit to put there.
2. A venv (default <checkout>/venv) with the checkout's own pins: torch and torchvision at the versions of
   launch_utils.py's torch command (or TORCH_COMMAND, as A1111 reads it), then requirements_versions.txt. pip uses
   its own configuration: a CPU wheel in a find-links folder if one matches the pin, else PyPI's wheel (the CUDA
   build, which runs on the CPU too). A1111's own command adds the PyTorch index (download.pytorch.org); where that
   is reachable you may set TORCH_COMMAND="pip install torch==2.1.2 torchvision==0.16.2 --extra-index-url
   https://download.pytorch.org/whl/cpu" for the smaller CPU wheel. OpenAI's `clip` (k-diffusion imports it) comes
   from the GitHub archive A1111 pins (CLIP_PACKAGE), or, when GitHub is unreachable, from PyPI's openai-clip.
3. The CLIP tokenizer and text-model config the WebUI loads by name (openai/clip-vit-large-patch14 for SD1 and
   SDXL, laion/CLIP-ViT-bigG-14-laion2B-39B-b160k for SDXL) in the Hugging Face cache, made from the BPE
   vocabulary open_clip ships (bpe_simple_vocab_16e6.txt.gz, in the venv of step 2) — no download.
4. Checkpoints in models/Stable-diffusion/: toyworld-sd1.safetensors + .yaml (the toy world's trained SD1
   checkpoint, copied from lib_ext/toyworld/weights; its tiny CLIP config is the promptscope/toyworld-clip entry of
   step 3), and random-weight ones: random-sd15.safetensors (SD1.5's architecture) and
   random-sdxl-tiny.safetensors with random-sdxl-tiny.yaml (SDXL's text encoders, conditioning and VAE; a
   narrow UNet), built by the checkout's own ldm/sgm code in the venv. Norm layers get random non-zero weights and
   biases (A1111's emphasis rescaling divides by the mean of the text encoder's output) and zero-initialised
   output layers get small random weights, so conditioning changes the picture. For SDXL also the live-preview
   decoder A1111 would download (models/VAE-approx/vaeapprox-sdxl.pt), with random weights.

Then run the live tier (README, "Live tier"):

    PROMPTSCOPE_WEBUI=/path/to/stable-diffusion-webui bash tools/live.sh
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

CHECKPOINTS = {
    "sd15": "random-sd15.safetensors",
    "sdxl": "random-sdxl-tiny.safetensors",
    "toyworld": "toyworld-sd1.safetensors",
}
# The toy world's trained SD1 checkpoint ships in this repository with its yaml; it is copied, not built.
TOYWORLD_DIR = Path(__file__).resolve().parents[1] / "lib_ext" / "toyworld" / "weights"
SDXL_TINY_YAML = "random-sdxl-tiny.yaml"
CLIP_FALLBACK = "openai-clip==1.0.1"  # PyPI's packaging of OpenAI's CLIP code, for when GitHub is unreachable
# The narrow UNet of the SDXL-shaped checkpoint (SDXL's base config with these values replaced).
SDXL_TINY_UNET = {"model_channels": "64", "num_head_channels": "32", "transformer_depth": "[1, 1, 2]"}

HF_MODELS = {
    "openai/clip-vit-large-patch14": {
        "text": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                     hidden_act="quick_gelu", projection_dim=768),
        "vision": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                       patch_size=14, image_size=224, hidden_act="quick_gelu", projection_dim=768),
        "projection_dim": 768,
        "pad_token": "<|endoftext|>",
    },
    "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k": {
        "text": dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                     hidden_act="gelu", projection_dim=1280),
        "vision": dict(hidden_size=1664, intermediate_size=8192, num_attention_heads=16, num_hidden_layers=48,
                       patch_size=14, image_size=224, hidden_act="gelu", projection_dim=1280),
        "projection_dim": 1280,
        "pad_token": "!",
    },
    # The toy world checkpoint's tiny CLIP text model (lib_ext/toyworld/ldm_model.py LdmConfig; a unit test checks
    # the numbers agree); its yaml names this entry. The vision half is never built, only read as config.
    "promptscope/toyworld-clip": {
        "text": dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=2,
                     hidden_act="quick_gelu", projection_dim=64),
        "vision": dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=1,
                       patch_size=14, image_size=224, hidden_act="quick_gelu", projection_dim=64),
        "projection_dim": 64,
        "pad_token": "<|endoftext|>",
    },
}  # fmt: skip


class Problem(Exception):
    """A step could not be done; the message says what the user must do."""


def say(message: str) -> None:
    print(f"[prepare_webui] {message}", flush=True)


# ---- 1. what the checkout pins ----------------------------------------------------------------------------------
def read_pins(webui: Path) -> tuple[list[tuple[str, str, str]], list[str], str]:
    """([(folder under repositories/, url, commit)], torch requirement specs, OpenAI clip's package URL) from
    modules/launch_utils.py."""
    source = (webui / "modules" / "launch_utils.py").read_text(encoding="utf8")
    # As in A1111, an environment variable of the name launch_utils.py reads (K_DIFFUSION_COMMIT_HASH...) wins.
    urls = {
        key: os.environ.get(env, url)
        for key, env, url in re.findall(r"(\w+)_repo = os\.environ\.get\('(\w+)', ['\"]([^'\"]+)['\"]\)", source)
    }
    commits = {
        key: os.environ.get(env, commit)
        for key, env, commit in re.findall(
            r"(\w+)_commit_hash = os\.environ\.get\('(\w+)', ['\"]([0-9a-f]{40})['\"]\)", source
        )
    }
    repos = []
    for key, folder in re.findall(r"git_clone\((\w+)_repo, repo_dir\('([^']+)'\)", source):
        if key in urls and key in commits:
            repos.append((folder, urls[key], commits[key]))
    if not repos:
        raise Problem(f"{webui}/modules/launch_utils.py names no helper repositories: is this an A1111 checkout?")
    torch_command = os.environ.get("TORCH_COMMAND")
    if torch_command:
        specs = torch_command.split()
        specs = specs[specs.index("install") + 1 :] if "install" in specs else specs
    else:
        m = re.search(r"pip install (torch==\S+) (torchvision==\S+)", source)
        if not m:
            raise Problem("could not read the torch version from modules/launch_utils.py; set TORCH_COMMAND")
        specs = [m.group(1), m.group(2)]
    m = re.search(r"clip_package = os\.environ\.get\('CLIP_PACKAGE', ['\"]([^'\"]+)['\"]\)", source)
    return repos, specs, m.group(1) if m else CLIP_FALLBACK


def git(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def prepare_repositories(webui: Path, repos: list[tuple[str, str, str]], sources: dict[str, Path]) -> list[str]:
    """Checks out every helper repository at its pin; returns what is missing (one line each)."""
    missing = []
    for folder, url, commit in repos:
        dest = webui / "repositories" / folder
        fresh = not dest.exists() and folder in sources
        if fresh:
            say(f"cloning {folder} from {sources[folder]}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "clone", "-q", "--no-checkout", str(sources[folder]), str(dest)], check=True)
        if not (dest / ".git").exists():
            missing.append(
                f"repositories/{folder}: git clone {url} {dest} && git -C {dest} checkout {commit}"
                f"   (or give a local copy: --repo {folder}=/path/to/its/git)"
            )
            continue
        try:
            skipped = checkout(dest, commit, fresh)
        except subprocess.CalledProcessError as e:
            missing.append(f"repositories/{folder}: commit {commit} is not in {dest} ({e.stderr.strip()})")
            continue
        note = f" (without {len(skipped)} files whose content the copy lacks, e.g. {skipped[0]})" if skipped else ""
        say(f"repositories/{folder} at {commit[:10]}{note}")
    return missing


def checkout(dest: Path, commit: str, fresh: bool = False) -> list[str]:
    """Checks out `commit` (`fresh`: a clone made without checkout, whose files are all written); a partial copy
    (large files listed but absent, as some mirrors keep them) is checked out without those files, which the WebUI
    does not need (sample pictures). Returns the files left out."""
    try:
        git("checkout", "-q", *(["-f"] if fresh else []), "--detach", commit, cwd=dest)
        return []
    except subprocess.CalledProcessError:
        pass
    git("update-ref", "--no-deref", "HEAD", commit, cwd=dest)
    git("read-tree", commit, cwd=dest)
    entries = [line.split("\t", 1) for line in git("ls-tree", "-r", commit, cwd=dest).splitlines()]
    blobs = [(meta.split()[2], path) for meta, path in entries if meta.split()[1] == "blob"]
    check = subprocess.run(["git", "cat-file", "--batch-check"], cwd=dest, check=True, capture_output=True, text=True,
                           input="".join(f"{sha}\n" for sha, _ in blobs))  # fmt: skip
    absent = {line.split()[0] for line in check.stdout.splitlines() if line.endswith(" missing")}
    present = [path for sha, path in blobs if sha not in absent]
    subprocess.run(["git", "checkout-index", "-f", "-z", "--stdin"], cwd=dest, check=True,
                   input="".join(f"{p}\0" for p in present), text=True)  # fmt: skip
    return [path for sha, path in blobs if sha in absent]


# ---- 2. the venv ------------------------------------------------------------------------------------------------
def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def prepare_venv(webui: Path, venv: Path, base_python: str, torch_specs: list[str], clip_url: str) -> Path:
    python = venv_python(venv)
    if not python.exists():
        say(f"creating the venv {venv} with {base_python}")
        subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    stamp = venv / ".promptscope-prepared"
    want = hashlib.sha256(
        (" ".join(torch_specs) + "\n" + (webui / "requirements_versions.txt").read_text(encoding="utf8")).encode()
    ).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want:
        say(f"venv {venv} already has the checkout's pins")
        return python
    say(f"installing {' '.join(torch_specs)} (pip's configured indexes and find-links)")
    subprocess.run([str(python), "-m", "pip", "install", *torch_specs], check=True)
    say("installing requirements_versions.txt")
    subprocess.run([str(python), "-m", "pip", "install", "-r", "requirements_versions.txt"], cwd=webui, check=True)
    # k-diffusion imports OpenAI's `clip`, which A1111 installs from a GitHub archive (CLIP_PACKAGE).
    clip_package = os.environ.get("CLIP_PACKAGE") or clip_url
    if subprocess.run([str(python), "-c", "import clip"], capture_output=True).returncode != 0:
        say(f"installing OpenAI's clip ({clip_package})")
        if subprocess.run([str(python), "-m", "pip", "install", clip_package]).returncode != 0:
            say(f"{clip_package} is not reachable; installing PyPI's packaging of the same code (openai-clip)")
            subprocess.run([str(python), "-m", "pip", "install", CLIP_FALLBACK], check=True)
    stamp.write_text(want)
    return python


# ---- 3. the Hugging Face cache ----------------------------------------------------------------------------------
def hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    return home.expanduser() / "hub"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (GPT-2's) table of a printable character for each byte, as open_clip and transformers define it."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_vocab_and_merges(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    """vocab.json and merges.txt of CLIP's tokenizer from open_clip's bpe_simple_vocab_16e6.txt.gz (the same
    vocabulary: 256 bytes, 256 bytes + </w>, 48,894 merges, start and end: 49,408 tokens)."""
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab)}, merges


def write_hf_entries(cache: Path, bpe_gz: Path) -> None:
    vocab, merges = clip_vocab_and_merges(bpe_gz)
    if len(vocab) != 49408:
        raise Problem(f"{bpe_gz} does not hold CLIP's vocabulary ({len(vocab)} tokens, not 49408)")
    for name, spec in HF_MODELS.items():
        files = {
            "vocab.json": json.dumps(vocab, ensure_ascii=False),
            "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
            "tokenizer_config.json": json.dumps(
                {
                    "unk_token": "<|endoftext|>",
                    "bos_token": "<|startoftext|>",
                    "eos_token": "<|endoftext|>",
                    "pad_token": spec["pad_token"],
                    "add_prefix_space": False,
                    "errors": "replace",
                    "do_lower_case": True,
                    "model_max_length": 77,
                    "tokenizer_class": "CLIPTokenizer",
                },
                indent=2,
            ),  # fmt: skip
            "special_tokens_map.json": json.dumps(
                {
                    "bos_token": "<|startoftext|>",
                    "eos_token": "<|endoftext|>",
                    "unk_token": "<|endoftext|>",
                    "pad_token": spec["pad_token"],
                },
                indent=2,
            ),  # fmt: skip
            "config.json": json.dumps(
                {
                    "architectures": ["CLIPModel"],
                    "model_type": "clip",
                    "projection_dim": spec["projection_dim"],
                    "logit_scale_init_value": 2.6592,
                    "initializer_factor": 1.0,
                    "text_config": {
                        "model_type": "clip_text_model",
                        "vocab_size": 49408,
                        "max_position_embeddings": 77,
                        "layer_norm_eps": 1e-05,
                        "bos_token_id": 0,
                        "eos_token_id": 2,
                        "pad_token_id": 1,
                        **spec["text"],
                    },
                    "vision_config": {
                        "model_type": "clip_vision_model",
                        "num_channels": 3,
                        "layer_norm_eps": 1e-05,
                        **spec["vision"],
                    },
                },
                indent=2,
            ),  # fmt: skip
        }
        digest = hashlib.sha1("".join(files[k] for k in sorted(files)).encode()).hexdigest()
        root = cache / ("models--" + name.replace("/", "--"))
        snapshot = root / "snapshots" / digest
        snapshot.mkdir(parents=True, exist_ok=True)
        for file, text in files.items():
            (snapshot / file).write_text(text, encoding="utf8")
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text(digest)
        say(f"Hugging Face cache: {name} (tokenizer, config) in {root}")


def find_bpe_vocabulary(python: Path) -> Path:
    code = "import os, open_clip; print(os.path.dirname(open_clip.__file__))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    folder = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else None
    path = Path(folder) / "bpe_simple_vocab_16e6.txt.gz" if folder else None
    if path is None or not path.is_file():
        raise Problem(f"open_clip's BPE vocabulary is not in the venv ({python}): {out.stderr.strip()[-500:]}")
    return path


# ---- 4. random-weight checkpoints ---------------------------------------------------------------------------------
# Runs in the WebUI's venv (it has torch, omegaconf, open_clip, transformers) with the checkout's ldm and sgm.
GENERATOR = r"""
import os, sys
import torch

webui, kind, config_path, out_path, seed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
repos = os.path.join(webui, "repositories")
sys.path[:0] = [os.path.join(repos, "stable-diffusion-stability-ai"), os.path.join(repos, "generative-models")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import open_clip
import transformers
from omegaconf import OmegaConf
from safetensors.torch import save_file

# Text encoders are built from their configs (random weights), never downloaded.
_create = open_clip.create_model_and_transforms
open_clip.create_model_and_transforms = lambda *a, pretrained=None, **k: _create(*a, pretrained=None, **k)
transformers.CLIPTextModel.from_pretrained = classmethod(
    lambda cls, name, *a, **k: cls(transformers.CLIPTextConfig.from_pretrained(name))
)

if kind == "sd15":
    from ldm.util import instantiate_from_config
else:
    from sgm.util import instantiate_from_config

torch.manual_seed(seed)
config = OmegaConf.load(config_path)
model = instantiate_from_config(config.model)
gen = torch.Generator().manual_seed(seed)
norms = (torch.nn.LayerNorm, torch.nn.GroupNorm)
with torch.no_grad():
    for module in model.modules():
        if isinstance(module, norms) and getattr(module, "weight", None) is not None:
            module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=gen))
            module.bias.copy_(0.2 + 0.1 * torch.randn(module.bias.shape, generator=gen))
    for name, param in model.named_parameters():
        if param.dim() > 1 and not param.any():  # zero_module() outputs: the UNet would ignore its input
            param.copy_(0.02 * torch.randn(param.shape, generator=gen))
state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
keep = ("betas", "alphas")  # the noise schedule stays float32; weights are stored in half precision
state = {k: v.half() if v.is_floating_point() and not any(s in k for s in keep) else v for k, v in state.items()}
save_file(state, out_path + ".part", metadata={"promptscope": f"random weights, seed {seed}, {kind}"})
os.replace(out_path + ".part", out_path)
print(f"{out_path}: {sum(v.numel() for v in state.values()) / 1e6:.0f} M values")
"""


# A1111's default live preview ("Approx NN") needs a small decoder per model family; SD1's ships with the WebUI,
# SDXL's (vaeapprox-sdxl.pt) is downloaded on first use. Offline, a random-weight one of its shape (modules/
# sd_vae_approx.py VAEApprox: eight convolutions) stands in, so previews work (meaningless, as the model is).
VAE_APPROX_SDXL = "vaeapprox-sdxl.pt"
VAE_APPROX = r"""
import os, sys
import torch

out, seed = sys.argv[1], int(sys.argv[2])
torch.manual_seed(seed)
shapes = [(4, 8, 7), (8, 16, 5), (16, 32, 3), (32, 64, 3), (64, 32, 3), (32, 16, 3), (16, 8, 3), (8, 3, 3)]
state = {}
for i, (cin, cout, k) in enumerate(shapes, 1):
    conv = torch.nn.Conv2d(cin, cout, (k, k))
    state[f"conv{i}.weight"], state[f"conv{i}.bias"] = conv.weight.detach(), conv.bias.detach()
torch.save(state, out + ".part")
os.replace(out + ".part", out)
"""


def sdxl_tiny_yaml(webui: Path) -> str:
    base = (webui / "repositories" / "generative-models" / "configs" / "inference" / "sd_xl_base.yaml").read_text(
        encoding="utf8"
    )
    for key, value in SDXL_TINY_UNET.items():
        base, n = re.subn(rf"(\n\s+{key}: )[^\n#]+", rf"\g<1>{value}", base, count=1)
        if n != 1:
            raise Problem(f"sd_xl_base.yaml has no {key}: cannot derive the tiny SDXL config")
    base = base.replace("use_checkpoint: True", "use_checkpoint: False")
    return "# SDXL's base config with a narrow UNet (tools/prepare_webui.py of PromptScope)\n" + base


def copy_if_changed(src: Path, dest: Path) -> None:
    if not src.is_file():
        raise Problem(f"{src} is missing: the toy-world checkpoint ships with PromptScope (git lfs? a partial clone?)")
    if dest.is_file() and dest.read_bytes() == src.read_bytes():
        say(f"{dest} is up to date")
        return
    say(f"copying {src.name} to {dest}")
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dest)


def prepare_checkpoints(webui: Path, python: Path, kinds: list[str], seed: int) -> None:
    folder = webui / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        out = folder / CHECKPOINTS[kind]
        if kind == "toyworld":
            copy_if_changed(TOYWORLD_DIR / CHECKPOINTS[kind], out)
            copy_if_changed((TOYWORLD_DIR / CHECKPOINTS[kind]).with_suffix(".yaml"), out.with_suffix(".yaml"))
            continue
        if kind == "sd15":
            config = webui / "configs" / "v1-inference.yaml"
        else:
            config = folder / SDXL_TINY_YAML
            config.write_text(sdxl_tiny_yaml(webui), encoding="utf8")
        if kind == "sdxl":
            approx = webui / "models" / "VAE-approx" / VAE_APPROX_SDXL
            if not approx.exists():
                say(f"building {approx} (random weights: the live preview decoder A1111 would download)")
                approx.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run([str(python), "-c", VAE_APPROX, str(approx), str(seed)], check=True)
        if out.exists():
            say(f"{out} exists")
            continue
        say(f"building {out} (random weights, seed {seed})")
        env = {**os.environ, "PYTHONPATH": ""}
        subprocess.run([str(python), "-c", GENERATOR, str(webui), kind, str(config), str(out), str(seed)],
                       cwd=webui, env=env, check=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("webui", type=Path, help="the A1111 WebUI checkout (v1.10.x)")
    ap.add_argument("--repo", action="append", default=[], metavar="FOLDER=PATH",
                    help="a local git copy of a helper repository, by its folder under repositories/")  # fmt: skip
    ap.add_argument("--venv", type=Path, help="default: <checkout>/venv (where A1111 and the live tier look)")
    ap.add_argument("--python", default=getattr(sys, "_base_executable", sys.executable),
                    help="the interpreter the venv is made from (A1111 v1.10 supports 3.10 and 3.11)")  # fmt: skip
    ap.add_argument("--models", default="sd15,sdxl,toyworld",
                    help="which checkpoints to put in models/Stable-diffusion (sd15, sdxl: random weights; toyworld: "
                         "the trained toy-world SD1 checkpoint)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-venv", action="store_true", help="use the venv as it is (no pip)")
    args = ap.parse_args(argv)

    webui = args.webui.expanduser().resolve()
    if not (webui / "launch.py").is_file() or not (webui / "modules" / "launch_utils.py").is_file():
        print(f"{webui} is not an A1111 WebUI checkout (no launch.py / modules/launch_utils.py)", file=sys.stderr)
        return 2
    sources = {}
    for item in args.repo:
        folder, _, path = item.partition("=")
        if not path:
            print(f"--repo wants FOLDER=PATH, not {item!r}", file=sys.stderr)
            return 2
        sources[folder.strip()] = Path(path).expanduser().resolve()
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in CHECKPOINTS]
    if unknown:
        print(f"--models: unknown {unknown}; known: {', '.join(CHECKPOINTS)}", file=sys.stderr)
        return 2
    try:
        repos, torch_specs, clip_url = read_pins(webui)
        missing = prepare_repositories(webui, repos, sources)
        venv = (args.venv or webui / "venv").expanduser().absolute()
        python = venv_python(venv) if args.skip_venv else prepare_venv(webui, venv, args.python, torch_specs, clip_url)
        write_hf_entries(hf_hub_cache(), find_bpe_vocabulary(python))
        if missing:
            raise Problem(
                "these helper repositories are missing (no network clone here); put them in place and run again:\n  "
                + "\n  ".join(missing)
            )
        prepare_checkpoints(webui, python, kinds, args.seed)
    except Problem as e:
        print(f"[prepare_webui] NOT READY: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"[prepare_webui] NOT READY: {' '.join(map(str, e.cmd))[:300]} failed ({e.returncode})", file=sys.stderr)
        return 1
    python_note = "" if venv == webui / "venv" else f" PROMPTSCOPE_WEBUI_PYTHON={venv_python(venv)}"
    say("ready. Run the live tier (SD1, then the SDXL-shaped checkpoint):")
    print(f"\n    PROMPTSCOPE_WEBUI={webui}{python_note} bash tools/live.sh\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
