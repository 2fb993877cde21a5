"""``sgm.models.diffusion.DiffusionEngine`` miniature (SDXL) with the methods the WebUI adds in sd_models_xl."""

import torch
from ldm._latent import LatentModelBase
from ldm._parts import UNetModel, timestep_embedding
from ldm.modules.encoders.modules import FrozenCLIPEmbedder, FrozenOpenCLIPEmbedder2
from torch import nn

from sgm.modules.attention import SpatialTransformer

SIZE_EMB = 16


class GeneralConditioner(nn.Module):
    """Text embedders (crossattn = their outputs side by side) + pooled text and size embedding (vector)."""

    def __init__(self, width_l, width_g):
        super().__init__()
        self.embedders = nn.ModuleList([FrozenCLIPEmbedder(width_l, layer="hidden"), FrozenOpenCLIPEmbedder2(width_g)])

    def forward(self, batch, force_zero_embeddings=None):
        force_zero_embeddings = force_zero_embeddings or []
        crossattn, pooled = [], []
        for embedder in self.embedders:
            out = embedder(batch[embedder.input_key])
            if isinstance(out, tuple):
                out, pool = out
                if embedder.input_key in force_zero_embeddings:
                    pool = torch.zeros_like(pool)
                pooled.append(pool)
            if embedder.input_key in force_zero_embeddings:
                out = torch.zeros_like(out)
            crossattn.append(out)
        sizes = torch.cat(
            [batch["original_size_as_tuple"], batch["crop_coords_top_left"], batch["target_size_as_tuple"]], 1
        )
        size_emb = timestep_embedding(sizes.flatten(), 2).reshape(sizes.shape[0], -1)  # 6 scalars x 2
        size_emb = nn.functional.pad(size_emb, (0, SIZE_EMB - size_emb.shape[1]))
        return {"crossattn": torch.cat(crossattn, dim=2), "vector": torch.cat([*pooled, size_emb], dim=1)}

    def get_token_count(self, text):
        for embedder in self.embedders:
            if hasattr(embedder, "process_texts"):
                return embedder.process_texts([text])[1]
        return 0

    def get_target_prompt_token_count(self, token_count):
        for embedder in self.embedders:
            if hasattr(embedder, "get_target_prompt_token_count"):
                return embedder.get_target_prompt_token_count(token_count)
        return token_count


class OpenAIWrapper(nn.Module):
    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.conditioning_key = "crossattn"

    def forward(self, x, t, c, **kwargs):
        x = torch.cat((x, *c.get("concat", [])), dim=1)
        return self.diffusion_model(x, timesteps=t, context=c.get("crossattn"), y=c.get("vector"), **kwargs)


class DiffusionEngine(LatentModelBase):
    is_sdxl = True

    def __init__(self, width_l=16, width_g=32, model_channels=32):
        super().__init__()
        unet = UNetModel(
            SpatialTransformer,
            model_channels=model_channels,
            context_dim=width_l + width_g,
            depth=(0, 2),
            adm_in_channels=width_g + SIZE_EMB,
        )
        self.model = OpenAIWrapper(unet)
        self.conditioner = GeneralConditioner(width_l, width_g)
        self.cond_stage_key = "txt"

    def get_learned_conditioning(self, batch):
        # as modules/sd_models_xl.py: empty negative prompts are zeroed, sizes come from the SdConditioning
        width = getattr(batch, "width", 1024) or 1024
        height = getattr(batch, "height", 1024) or 1024
        is_negative = getattr(batch, "is_negative_prompt", False)
        n = len(batch)
        conds = {
            "txt": batch,
            "original_size_as_tuple": torch.tensor([height, width], dtype=torch.float32).repeat(n, 1),
            "crop_coords_top_left": torch.zeros(n, 2),
            "target_size_as_tuple": torch.tensor([height, width], dtype=torch.float32).repeat(n, 1),
        }
        force_zero = ["txt"] if is_negative and all(x == "" for x in batch) else []
        return self.conditioner(conds, force_zero_embeddings=force_zero)

    def apply_model(self, x, t, cond):
        return self.model(x, t, cond)
