"""``modules.sd_hijack``: wraps text encoders and (re)applies the attention optimisation on every model load."""

from __future__ import annotations

import ldm.modules.attention
import sgm.modules.attention
from modules import errors, script_callbacks, sd_hijack_clip, sd_hijack_optimizations, shared

optimizers: list = []
current_optimizer = None


def list_optimizers():
    new = script_callbacks.list_optimizers_callback()
    sd_hijack_optimizations.list_optimizers(new)  # the WebUI registers its own through a builtin callback
    new = sorted([x for x in new if x.is_available()], key=lambda x: x.priority, reverse=True)
    optimizers.clear()
    optimizers.extend(new)


def apply_optimizations(option=None):
    global current_optimizer
    undo_optimizations()
    if not optimizers:
        current_optimizer = None
        return ""
    if current_optimizer is not None:
        current_optimizer.undo()
        current_optimizer = None
    selection = option or shared.opts.cross_attention_optimization
    if selection == "Automatic":
        matching = next(
            iter([x for x in optimizers if x.cmd_opt and getattr(shared.cmd_opts, x.cmd_opt, False)]), optimizers[0]
        )
    else:
        matching = next(iter([x for x in optimizers if x.title() == selection]), None)
    if selection == "None" or selection == "Automatic" and shared.cmd_opts.disable_opt_split_attention:
        matching = None
    elif matching is None:
        matching = optimizers[0]
    if matching is not None:
        matching.apply()
        current_optimizer = matching
        return current_optimizer.name
    return ""


def undo_optimizations():
    forward = sd_hijack_optimizations.attention_CrossAttention_forward
    ldm.modules.attention.CrossAttention.forward = forward
    sgm.modules.attention.CrossAttention.forward = forward


class StableDiffusionModelHijack:
    fixes = None
    layers = None
    circular_enabled = False
    clip = None
    optimization_method = None

    def __init__(self):
        self.extra_generation_params = {}
        self.comments = []

    def apply_optimizations(self, option=None):
        try:
            self.optimization_method = apply_optimizations(option)
        except Exception as e:
            errors.display(e, "applying cross attention optimization")
            undo_optimizations()

    def hijack(self, m):
        conditioner = getattr(m, "conditioner", None)
        if conditioner:
            text_models = []
            for i, embedder in enumerate(conditioner.embedders):
                typename = type(embedder).__name__
                if typename == "FrozenCLIPEmbedder":
                    conditioner.embedders[i] = sd_hijack_clip.FrozenCLIPEmbedderForSDXLWithCustomWords(embedder, self)
                    text_models.append(conditioner.embedders[i])
                elif typename == "FrozenOpenCLIPEmbedder2":
                    conditioner.embedders[i] = sd_hijack_clip.FrozenOpenCLIPEmbedder2WithCustomWords(embedder, self)
                    text_models.append(conditioner.embedders[i])
            m.cond_stage_model = text_models[0] if len(text_models) == 1 else conditioner
        elif type(m.cond_stage_model).__name__ == "FrozenCLIPEmbedder":
            m.cond_stage_model = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(m.cond_stage_model, self)

        self.apply_optimizations()
        self.clip = m.cond_stage_model
        self.layers = list(m.modules())

    def undo_hijack(self, m):
        conditioner = getattr(m, "conditioner", None)
        if conditioner:
            for i, embedder in enumerate(conditioner.embedders):
                if isinstance(embedder, sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords):
                    conditioner.embedders[i] = embedder.wrapped
            if hasattr(m, "cond_stage_model"):
                delattr(m, "cond_stage_model")
        elif isinstance(m.cond_stage_model, sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords):
            m.cond_stage_model = m.cond_stage_model.wrapped
        undo_optimizations()
        self.layers = None
        self.clip = None

    def apply_circular(self, enable):
        self.circular_enabled = enable

    def clear_comments(self):
        self.comments = []
        self.extra_generation_params = {}

    def get_prompt_lengths(self, text):
        if self.clip is None:
            return "-", "-"
        if hasattr(self.clip, "get_token_count"):
            token_count = self.clip.get_token_count(text)
        else:
            _, token_count = self.clip.process_texts([text])
        return token_count, self.clip.get_target_prompt_token_count(token_count)

    def redo_hijack(self, m):
        self.undo_hijack(m)
        self.hijack(m)


model_hijack = StableDiffusionModelHijack()
