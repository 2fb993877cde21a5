"""``ldm.models.diffusion.ddpm.LatentDiffusion`` miniature (SD1.x)."""

import torch
from torch import nn

from ldm._latent import LatentModelBase
from ldm._parts import UNetModel
from ldm.modules.attention import SpatialTransformer
from ldm.modules.encoders.modules import FrozenCLIPEmbedder


class DiffusionWrapper(nn.Module):
    def __init__(self, diffusion_model, conditioning_key="crossattn"):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.conditioning_key = conditioning_key

    def forward(self, x, t, c_concat=None, c_crossattn=None, c_adm=None):
        if self.conditioning_key == "hybrid":
            x = torch.cat([x, *c_concat], dim=1)
        return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))


class LatentDiffusion(LatentModelBase):
    is_sd1 = True

    def __init__(self, context_dim=32, model_channels=32):
        super().__init__()
        unet = UNetModel(SpatialTransformer, model_channels=model_channels, context_dim=context_dim)
        self.model = DiffusionWrapper(unet)
        self.cond_stage_model = FrozenCLIPEmbedder(width=context_dim)
        self.cond_stage_key = "txt"

    def get_learned_conditioning(self, c):
        return self.cond_stage_model(c)

    def apply_model(self, x_noisy, t, cond, return_ids=False):
        if not isinstance(cond, dict):
            cond = {"c_concat" if self.model.conditioning_key == "concat" else "c_crossattn": [cond]}
        return self.model(x_noisy, t, **cond)
