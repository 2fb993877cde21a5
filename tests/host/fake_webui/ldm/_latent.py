"""Pieces common to the fake SD1 and SDXL model objects: noise schedule and a fixed linear "VAE"."""

import contextlib

import torch
from torch import nn


def scaled_linear_alphas_cumprod(n=1000, beta_start=0.00085, beta_end=0.012):
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


class FakeVAE(nn.Module):
    """8x down/up-sampling with fixed 1x1 colour maps; decode(encode(img)) is close to a blurred img."""

    def __init__(self, latent_channels=4):
        super().__init__()
        g = torch.Generator().manual_seed(1234)
        enc = torch.randn(latent_channels, 3, generator=g) * 0.5
        self.register_buffer("enc", enc)
        self.register_buffer("dec", torch.linalg.pinv(enc))
        self.dtype = torch.float32

    def encode(self, x):
        x = nn.functional.avg_pool2d(x, 8)
        return torch.einsum("lc,bchw->blhw", self.enc, x)

    def decode(self, z):
        x = torch.einsum("cl,blhw->bchw", self.dec, z)
        return torch.tanh(nn.functional.interpolate(x, scale_factor=8, mode="nearest"))


class _Posterior:
    def __init__(self, z):
        self.z = z

    def sample(self):
        return self.z

    def mode(self):
        return self.z


class LatentModelBase(nn.Module):
    """Attributes and methods the WebUI reads on every checkpoint object, whatever its family."""

    parameterization = "eps"
    latent_channels = 4
    is_sdxl = False
    is_sd1 = False
    is_sd2 = False
    is_sd3 = False
    is_ssd = False
    is_sdxl_inpaint = False
    lowvram = False

    def __init__(self):
        super().__init__()
        self.register_buffer("alphas_cumprod", scaled_linear_alphas_cumprod())
        self.first_stage_model = FakeVAE(self.latent_channels)
        self.sd_checkpoint_info = None
        self.sd_model_hash = None
        self.sd_model_checkpoint = None
        self.cond_stage_model_empty_prompt = None

    @contextlib.contextmanager
    def ema_scope(self, context=None):
        yield None

    def decode_first_stage(self, z):
        return self.first_stage_model.decode(z)

    def encode_first_stage(self, x):
        return _Posterior(self.first_stage_model.encode(x))

    def get_first_stage_encoding(self, encoder_posterior):
        if isinstance(encoder_posterior, _Posterior):
            return encoder_posterior.sample()
        return encoder_posterior
