"""The toy world as a Stable Diffusion 1.x checkpoint: ldm's UNetModel, a CLIP text model and an AutoencoderKL.

The modules below carry the state-dict names and the maths of the classes the WebUI builds from the checkpoint's
yaml (`ldm.modules.diffusionmodules.openaimodel.UNetModel`, transformers' `CLIPTextModel` inside ldm's
`FrozenCLIPEmbedder`, `ldm.models.autoencoder.AutoencoderKL`), so the same tensors run unmodified in A1111 and in
the toy host. Only the sizes are tiny (`LdmConfig`).

The autoencoder is constructed, not trained (`vae_state_dict`): its encoder averages each 8×8 pixel block and its
decoder repeats a latent pixel over an 8×8 block, latent channels 0–2 = RGB in [-1, 1], channel 3 = 0. The WebUI's
fixed 8× factor and 4 channels hold, and the UNet works on the toy world's 32×32 pictures. Two tricks make ldm's
layers exact there: every GroupNorm group on the main path holds (v, −v, K, −K), so its mean is 0 and its variance
≈ K²/2 whatever the image (K = 100: relative error ≤ 5e-5); and SiLU(a) − SiLU(−a) = a, so the last convolution
after the norm's SiLU reads v back exactly. Residual branches and attention outputs are zero, so those blocks are
identities.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .model import CrossAttention, Downsample, ToyUNet, Upsample  # ldm's, as the word-level UNet


@dataclass
class LdmConfig:
    # UNet (ldm UNetModel arguments)
    in_channels: int = 4
    model_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    num_head_channels: int = 16
    # attn1 of the 32×32 level attends to the text instead of 1024² pixel pairs (ldm's disable_self_attentions):
    # self-attention there cost most of a CPU training step.
    disable_self_attentions: tuple[bool, ...] = (True, False, False)
    # CLIP text model (transformers CLIPTextConfig)
    vocab_size: int = 49408
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 256
    max_positions: int = 77
    # AutoencoderKL (ldm ddconfig): 4 levels = the WebUI's 8× factor; 128 channels = 32 groups of (v, −v, K, −K)
    vae_channels: int = 128
    image_size: int = 32  # latent size the model was trained at (256×256 pixels)
    # v-prediction: at high noise the target is about −x0, whose mean (the dark background) a bias can give; an
    # ε-model must predict the noise's per-channel mean, which its last GroupNorm (32 groups of 32 channels = one
    # channel each) removes, so its pictures came out on a random background tint.
    prediction: str = "v"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["disable_self_attentions"] = list(self.disable_self_attentions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LdmConfig:
        d = {"prediction": "eps", **d}
        d["channel_mult"] = tuple(d["channel_mult"])
        d["disable_self_attentions"] = tuple(d["disable_self_attentions"])
        return cls(**d)


# ----------------------------------------------------------------------------------------------- UNet


class GroupNorm32(nn.GroupNorm):
    """ldm's normalization(): 32 groups, computed in float32."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb_layers(emb).type(x.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, disable_self_attn: bool) -> None:
        super().__init__()
        self.disable_self_attn = disable_self_attn
        self.attn1 = CrossAttention(dim, context_dim if disable_self_attn else None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x), context=context if self.disable_self_attn else None) + x
        x = self.attn2(self.norm2(x), context=context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """ldm's SpatialTransformer with 1×1-convolution projections (SD1's use_linear=False), depth 1."""

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int, disable_self_attn: bool) -> None:
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, context_dim, disable_self_attn)]
        )
        self.proj_out = nn.Conv2d(inner, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.proj_in(self.norm(x))
        h = h.flatten(2).transpose(1, 2)  # (b, hw, c): row-major, like SD
        for block in self.transformer_blocks:
            h = block(h, context)
        h = h.transpose(1, 2).reshape(b, -1, hh, ww)
        return self.proj_out(h) + x


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class LdmUNet(nn.Module):
    """ldm's UNetModel (use_spatial_transformer, legacy=False, attention at every level); predicts what
    `LdmConfig.prediction` names (v for the shipped checkpoint)."""

    def __init__(self, cfg: LdmConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mc = cfg.model_channels
        emb_dim = mc * 4
        self.model_channels = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def transformer(ch: int, level: int) -> SpatialTransformer:
            heads = ch // cfg.num_head_channels
            return SpatialTransformer(
                ch, heads, cfg.num_head_channels, cfg.text_dim, cfg.disable_self_attentions[level]
            )

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        chans = [mc]
        ch = mc
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.input_blocks.append(
                    TimestepEmbedSequential(ResBlock(ch, emb_dim, mult * mc), transformer(mult * mc, level))
                )
                ch = mult * mc
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                chans.append(ch)
        heads = ch // cfg.num_head_channels
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_dim, ch),
            SpatialTransformer(ch, heads, cfg.num_head_channels, cfg.text_dim, False),
            ResBlock(ch, emb_dim, ch),
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers: list[nn.Module] = [ResBlock(ch + chans.pop(), emb_dim, mult * mc)]
                ch = mult * mc
                layers.append(transformer(ch, level))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(mc, cfg.in_channels, 3, padding=1))
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    # ldm's UNet pass and the attn2 list are the word-level UNet's (same block layout and module names)
    forward = ToyUNet.forward
    cross_attention_modules = ToyUNet.cross_attention_modules


# ----------------------------------------------------------------------------------------------- CLIP text model


class ClipAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q = (self.q_proj(x) * self.scale).view(b, n, self.heads, -1).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.heads, -1).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.heads, -1).transpose(1, 2)
        sim = q @ k.transpose(-1, -2)
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        sim = sim.masked_fill(causal, torch.finfo(sim.dtype).min)
        out = (sim.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(out)


class ClipMlp(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, inner)
        self.fc2 = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(h * torch.sigmoid(1.702 * h))  # quick_gelu, CLIP ViT-L/14's activation


class ClipEncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, inner: int) -> None:
        super().__init__()
        self.self_attn = ClipAttention(dim, heads)
        self.layer_norm1 = nn.LayerNorm(dim)
        self.mlp = ClipMlp(dim, inner)
        self.layer_norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Embeddings(nn.Module):
    def __init__(self, cfg: LdmConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_dim)
        self.position_embedding = nn.Embedding(cfg.max_positions, cfg.text_dim)
        self.register_buffer("position_ids", torch.arange(cfg.max_positions)[None], persistent=True)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.01)


class _Encoder(nn.Module):
    def __init__(self, cfg: LdmConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [ClipEncoderLayer(cfg.text_dim, cfg.text_heads, cfg.text_intermediate) for _ in range(cfg.text_layers)]
        )


class _TextModel(nn.Module):
    def __init__(self, cfg: LdmConfig) -> None:
        super().__init__()
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.text_dim)


class ClipTextModel(nn.Module):
    """transformers' CLIPTextModel (causal, quick_gelu) for ids (B, n ≤ 77) → hidden states (B, n, D).

    `clip_skip` as the WebUI's "Clip skip": 1 = the last layer's output; n > 1 = the output n−1 layers earlier, put
    through the final LayerNorm."""

    def __init__(self, cfg: LdmConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_model = _TextModel(cfg)

    def forward(self, ids: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
        tm = self.text_model
        n = ids.shape[1]
        x = tm.embeddings.token_embedding(ids.long()) + tm.embeddings.position_embedding(
            tm.embeddings.position_ids[:, :n]
        )
        states = [x]
        for layer in tm.encoder.layers:
            x = layer(x)
            states.append(x)
        return tm.final_layer_norm(states[-max(1, clip_skip)])


# ----------------------------------------------------------------------------------------------- autoencoder

VAE_K = 100.0  # the constant channels' value; see the module docstring
VAE_LEVELS = 4  # 3 down/up-samplings: the WebUI's 8× factor
LATENT_CHANNELS = 4
VAE_LOGVAR = -30.0  # ldm clamps log-variance at -30: the sampled latent is the mean (std e^-15)


def _centre_tap(conv: nn.Conv2d, pairs: list[tuple[int, int, float]], bias: dict[int, float] | None = None) -> None:
    """Sets a 3×3 convolution to out[o] = Σ w·in[i] at the same pixel (+ bias)."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for o, i, w in pairs:
            conv.weight[o, i, 1, 1] = w
        for o, b in (bias or {}).items():
            conv.bias[o] = b


def vae_state_dict(cfg: LdmConfig) -> dict[str, torch.Tensor]:
    """The AutoencoderKL tensors (ldm names, without the `first_stage_model.` prefix) of the constructed autoencoder:
    ddconfig ch=cfg.vae_channels, ch_mult=[1]*4, num_res_blocks=0, attn_resolutions=[], z_channels=4, embed_dim=4."""
    ch, k = cfg.vae_channels, VAE_K
    if ch % 32 or ch // 32 < 4:
        raise ValueError("the autoencoder needs groups of 4 channels: vae_channels = 128")
    gamma = k / math.sqrt(2.0)  # undoes the group std ≈ K/√2
    sd: dict[str, torch.Tensor] = {}

    def zeros(name: str, *shape: int) -> torch.Tensor:
        sd[name] = torch.zeros(shape)
        return sd[name]

    def conv(name: str, cin: int, cout: int, size: int) -> nn.Conv2d:
        c = nn.Conv2d(cin, cout, size)
        with torch.no_grad():
            c.weight.zero_()
            c.bias.zero_()
        sd[f"{name}.weight"], sd[f"{name}.bias"] = c.weight.data, c.bias.data
        return c

    def norm(name: str, v_groups: int) -> None:
        sd[f"{name}.weight"] = torch.ones(ch)
        sd[f"{name}.bias"] = torch.zeros(ch)

    def identity_resblock(name: str) -> None:
        norm(f"{name}.norm1", 0)
        conv(f"{name}.conv1", ch, ch, 3)
        norm(f"{name}.norm2", 0)
        conv(f"{name}.conv2", ch, ch, 3)  # zero: the block returns its input

    def identity_attn(name: str) -> None:
        norm(f"{name}.norm", 0)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", ch, ch, 1)  # proj_out zero: the block returns its input

    def spread(c: nn.Conv2d, inputs: int) -> None:
        """conv_in: group g = (x_g, −x_g, K, −K) for g < inputs, else (0, 0, K, −K)."""
        pairs, bias = [], {}
        for g in range(ch // 4):
            if g < inputs:
                pairs += [(4 * g, g, 1.0), (4 * g + 1, g, -1.0)]
            bias[4 * g + 2], bias[4 * g + 3] = k, -k
        _centre_tap(c, pairs, bias)

    def read_out(prefix: str, c: nn.Conv2d, outputs: int, bias: dict[int, float] | None = None) -> None:
        """norm_out scaled back to v; conv_out = SiLU(v) − SiLU(−v) = v."""
        w = torch.zeros(ch)
        for g in range(outputs):
            w[4 * g] = w[4 * g + 1] = gamma
        sd[f"{prefix}.norm_out.weight"] = w
        sd[f"{prefix}.norm_out.bias"] = torch.zeros(ch)
        _centre_tap(c, [p for g in range(outputs) for p in ((g, 4 * g, 1.0), (g, 4 * g + 1, -1.0))], bias)

    # Encoder: pixels → (mean, logvar) at 1/8 size.
    spread(conv("encoder.conv_in", 3, ch, 3), 3)
    for level in range(VAE_LEVELS - 1):
        c = conv(f"encoder.down.{level}.downsample.conv", ch, ch, 3)
        with torch.no_grad():  # pad (0,1,0,1), stride 2: taps (0,0),(0,1),(1,0),(1,1) = the 2×2 block's mean
            for i in range(ch):
                c.weight[i, i, :2, :2] = 0.25
    identity_resblock("encoder.mid.block_1")
    identity_attn("encoder.mid.attn_1")
    identity_resblock("encoder.mid.block_2")
    read_out("encoder", conv("encoder.conv_out", ch, 2 * LATENT_CHANNELS, 3), 3,
             {LATENT_CHANNELS + i: VAE_LOGVAR for i in range(LATENT_CHANNELS)})  # fmt: skip
    # Decoder: latent → pixels, each latent pixel repeated over 8×8.
    spread(conv("decoder.conv_in", LATENT_CHANNELS, ch, 3), 3)
    identity_resblock("decoder.mid.block_1")
    identity_attn("decoder.mid.attn_1")
    identity_resblock("decoder.mid.block_2")
    for level in range(VAE_LEVELS):
        identity_resblock(f"decoder.up.{level}.block.0")
        if level:
            c = conv(f"decoder.up.{level}.upsample.conv", ch, ch, 3)
            _centre_tap(c, [(i, i, 1.0) for i in range(ch)])
    read_out("decoder", conv("decoder.conv_out", ch, 3, 3), 3)
    q = conv("quant_conv", 2 * LATENT_CHANNELS, 2 * LATENT_CHANNELS, 1)
    pq = conv("post_quant_conv", LATENT_CHANNELS, LATENT_CHANNELS, 1)
    with torch.no_grad():
        q.weight[:, :, 0, 0] = torch.eye(2 * LATENT_CHANNELS)
        pq.weight[:, :, 0, 0] = torch.eye(LATENT_CHANNELS)
    del zeros
    return {name: t.detach().clone().contiguous() for name, t in sd.items()}


def vae_ddconfig(cfg: LdmConfig) -> dict:
    """The ldm `ddconfig` of `vae_state_dict` (resolution is nominal: ldm only uses it for attention levels)."""
    return {
        "double_z": True,
        "z_channels": LATENT_CHANNELS,
        "resolution": cfg.image_size * 8,
        "in_channels": 3,
        "out_ch": 3,
        "ch": cfg.vae_channels,
        "ch_mult": [1] * VAE_LEVELS,
        "num_res_blocks": 0,
        "attn_resolutions": [],
        "dropout": 0.0,
    }


def latent_from_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """What the constructed encoder computes: (B, 3, 8h, 8w) in [-1, 1] → (B, 4, h, w) latent (8×8 means, 0)."""
    rgb = F.avg_pool2d(pixels, 8)
    return torch.cat([rgb, torch.zeros_like(rgb[:, :1])], dim=1)


def pixels_from_latent(latent: torch.Tensor, scale: int = 8) -> torch.Tensor:
    """What the constructed decoder computes: latent channels 0–2 repeated over scale×scale pixels."""
    rgb = latent[:, :3]
    return rgb if scale == 1 else F.interpolate(rgb, scale_factor=scale, mode="nearest")
