"""``modules.sd_models``: model_data, load_model, reload_model_weights (each load re-hijacks and fires callbacks).

Checkpoints are fake: a ``CheckpointInfo`` names a model family ("sd1" or "sdxl") and ``load_model`` builds a
tiny random-weight model of that family (seeded, so two loads of one checkpoint give equal weights).
"""

from __future__ import annotations

import contextlib
import threading
import zlib

import torch
from modules import script_callbacks, sd_hijack, shared


class CheckpointInfo:
    def __init__(self, filename: str, kind: str = "sd1", seed: int = 0):
        self.filename = filename
        self.kind = kind
        self.seed = seed
        self.name = filename
        self.name_for_extra = filename.rsplit(".", 1)[0]
        self.model_name = self.name_for_extra
        self.hash = f"{zlib.crc32(f'{filename}|{kind}|{seed}'.encode()):08x}"
        self.sha256 = None
        self.shorthash = self.hash[:10]
        self.title = f"{filename} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"
        self.ids = [self.title, self.name, self.name_for_extra, self.model_name, self.hash]

    def register(self):
        checkpoints_list[self.title] = self
        for alias in self.ids:
            checkpoint_aliases[alias] = self


checkpoints_list: dict[str, CheckpointInfo] = {}
checkpoint_aliases: dict[str, CheckpointInfo] = {}


def get_closet_checkpoint_match(search_string):
    return checkpoint_aliases.get(search_string)


def select_checkpoint():
    info = checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
    if info is not None:
        return info
    if model_data.sd_model is not None:
        return model_data.sd_model.sd_checkpoint_info
    return next(iter(checkpoints_list.values()), None)


class SdModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False
        self.lock = threading.Lock()

    def get_sd_model(self):
        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v
        with contextlib.suppress(ValueError):
            self.loaded_sd_models.remove(v)
        if v is not None:
            self.loaded_sd_models.insert(0, v)


model_data = SdModelData()


def build_model(checkpoint_info: CheckpointInfo):
    """A random-weight model of the checkpoint's family (not hijacked yet)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(checkpoint_info.seed)
        if checkpoint_info.kind == "sdxl":
            from sgm.models.diffusion import DiffusionEngine

            model = DiffusionEngine()
        else:
            from ldm.models.diffusion.ddpm import LatentDiffusion

            model = LatentDiffusion()
    model.eval().requires_grad_(False)
    model.sd_checkpoint_info = checkpoint_info
    model.sd_model_hash = checkpoint_info.shorthash
    model.sd_model_checkpoint = checkpoint_info.filename
    return model


def get_empty_cond(sd_model):
    from modules import prompt_parser

    d = sd_model.get_learned_conditioning(prompt_parser.SdConditioning([""]))
    return d["crossattn"] if isinstance(d, dict) else d


def _on_optimization_change():
    sd_hijack.model_hijack.redo_hijack(shared.sd_model)


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    """Build, hijack (which re-applies the attention optimisation), publish, then fire on_model_loaded."""
    checkpoint_info = checkpoint_info or select_checkpoint()
    if isinstance(checkpoint_info, str):
        checkpoint_info = CheckpointInfo(f"fake-{checkpoint_info}.safetensors", kind=checkpoint_info)
    checkpoint_info.register()
    if model_data.sd_model is not None:
        sd_hijack.model_hijack.undo_hijack(model_data.sd_model)
        model_data.sd_model = None
    if not sd_hijack.optimizers:
        sd_hijack.list_optimizers()
    if "cross_attention_optimization" in shared.opts.data_labels:
        shared.opts.onchange("cross_attention_optimization", _on_optimization_change, call=False)

    sd_model = build_model(checkpoint_info)
    sd_hijack.model_hijack.hijack(sd_model)
    with torch.no_grad():
        sd_model.cond_stage_model_empty_prompt = get_empty_cond(sd_model)
    model_data.set_sd_model(sd_model)
    model_data.was_loaded_at_least_once = True
    shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title
    script_callbacks.model_loaded_callback(sd_model)
    return sd_model


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    """No-op when the selected checkpoint is already loaded (unless forced); else re-hijack and fire callbacks."""
    checkpoint_info = info or select_checkpoint()
    if sd_model is None:
        sd_model = model_data.sd_model
    current = sd_model.sd_checkpoint_info if sd_model is not None else None
    if sd_model is not None and not forced_reload and current is checkpoint_info:
        return sd_model
    if sd_model is None or checkpoint_info is None or checkpoint_info.kind != current.kind:
        return load_model(checkpoint_info)
    # same family: the WebUI loads the new weights into the existing object
    sd_hijack.model_hijack.undo_hijack(sd_model)
    fresh = build_model(checkpoint_info)
    sd_model.load_state_dict(fresh.state_dict())
    sd_model.sd_checkpoint_info = checkpoint_info
    sd_model.sd_model_hash = checkpoint_info.shorthash
    checkpoint_info.register()
    sd_hijack.model_hijack.hijack(sd_model)
    shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title
    script_callbacks.model_loaded_callback(sd_model)
    model_data.set_sd_model(sd_model)
    return sd_model


def unload_model_weights(sd_model=None, info=None):
    pass


def apply_token_merging(sd_model, token_merging_ratio):
    pass


def apply_alpha_schedule_override(sd_model, p=None):
    pass


class SkipWritingToConfig:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False
