"""Neo's UnetPatcher and KModel (test double; the methods PromptScope and Rescale CFG use)."""

import copy

import torch


class KModel(torch.nn.Module):
    """x0 prediction around an eps UNet: x0 = x − σ·eps(x / sqrt(σ² + 1), t)."""

    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs):
        from backend.sampling.sampling_function import UNET_CALLS

        UNET_CALLS.append((list((transformer_options or {}).get("cond_or_uncond", [])), int(x.shape[0])))
        sigma = t.view(-1, *([1] * (x.dim() - 1)))
        xc = x / (sigma**2 + 1) ** 0.5
        extra = {k: v for k, v in kwargs.items() if k == "y"}
        eps = self.diffusion_model(xc, t * 10, context=c_crossattn, **extra).float()
        return x - sigma * eps


class UnetPatcher:
    def __init__(self, model):
        self.model = model
        self.model_options = {"transformer_options": {}}

    def clone(self):
        n = UnetPatcher(self.model)
        n.model_options = copy.copy(self.model_options)
        n.model_options["transformer_options"] = dict(self.model_options.get("transformer_options", {}))
        for key in ("conditioning_modifiers", "sampler_pre_cfg_function", "sampler_post_cfg_function"):
            if key in n.model_options:
                n.model_options[key] = list(n.model_options[key])
        return n

    def append_model_option(self, k, v, ensure_uniqueness=False):
        self.model_options.setdefault(k, [])
        if ensure_uniqueness and v in self.model_options[k]:
            return
        self.model_options[k].append(v)

    def add_conditioning_modifier(self, modifier, ensure_uniqueness=False):
        self.append_model_option("conditioning_modifiers", modifier, ensure_uniqueness)

    def add_sampler_pre_cfg_function(self, modifier, ensure_uniqueness=False):
        self.append_model_option("sampler_pre_cfg_function", modifier, ensure_uniqueness)

    def disable_model_cfg1_optimization(self):
        self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_cfg_function(self, sampler_cfg_function, disable_cfg1_optimization=False):
        self.model_options["sampler_cfg_function"] = sampler_cfg_function
        if disable_cfg1_optimization:
            self.disable_model_cfg1_optimization()

    def set_model_sampler_post_cfg_function(self, post_cfg_function, disable_cfg1_optimization=False):
        previous = self.model_options.get("sampler_post_cfg_function", [])
        self.model_options["sampler_post_cfg_function"] = [*previous, post_cfg_function]
        if disable_cfg1_optimization:
            self.disable_model_cfg1_optimization()

    def set_model_unet_function_wrapper(self, unet_wrapper_function):
        self.model_options["model_function_wrapper"] = unet_wrapper_function
