"""``modules.shared``: opts, state, cmd_opts and the ``sd_model`` module property of v1.10.1."""

import argparse
import os
import sys

from modules import options, paths, shared_state

cmd_opts = argparse.Namespace(
    api=False,
    nowebui=False,
    skip_install=True,
    no_prompt_history=False,
    disable_opt_split_attention=False,
    xformers=False,
    force_enable_xformers=False,
    opt_sdp_attention=False,
    opt_sdp_no_mem_attention=False,
    opt_split_attention_v1=False,
    freeze_settings=False,
    hide_ui_dir_config=False,
    embeddings_dir=paths.data_path + "/embeddings",
    data_dir=paths.data_path,
    ui_settings_file=paths.data_path + "/config.json",
    lowvram=False,
    medvram=False,
)

OptionInfo = options.OptionInfo
OptionHTML = options.OptionHTML
options_section = options.options_section

batch_cond_uncond = True  # legacy field; the live switch is opts.batch_cond_uncond
parallel_processing_allowed = True
demo = None
device = "cpu"
hypernetworks: dict = {}
loaded_hypernetworks: list = []
face_restorers: list = []
sd_upscalers: list = []
xformers_available = False
settings_components: dict = {}

latent_upscale_default_mode = "Latent"
latent_upscale_modes = {
    "Latent": {"mode": "bilinear", "antialias": False},
    "Latent (antialiased)": {"mode": "bilinear", "antialias": True},
    "Latent (bicubic)": {"mode": "bicubic", "antialias": False},
    "Latent (nearest)": {"mode": "nearest", "antialias": False},
}

# defaults of v1.10.1 for every setting the double reads
_defaults = {
    "samples_save": True,
    "samples_format": "png",
    "grid_save": True,
    "grid_format": "png",
    "grid_extended_filename": False,
    "grid_only_if_multiple": True,
    "return_grid": True,
    "save_incomplete_images": False,
    "outdir_samples": "",
    "outdir_grids": "",
    "enable_pnginfo": True,
    "face_restoration": False,
    "tiling": False,
    "sd_model_checkpoint": None,
    "sd_vae": "Automatic",
    "emphasis": "Original",
    "comma_padding_backtrack": 20,
    "CLIP_stop_at_last_layers": 1,
    "randn_source": "GPU",
    "sdxl_crop_top": 0,
    "sdxl_crop_left": 0,
    "initial_noise_multiplier": 1.0,
    "img2img_extra_noise": 0.0,
    "img2img_fix_steps": False,
    "img2img_background_color": "#ffffff",
    "img2img_color_correction": False,
    "save_init_img": False,
    "upscaler_for_img2img": None,
    "cross_attention_optimization": "Automatic",
    "s_min_uncond": 0.0,
    "s_min_uncond_all": False,
    "token_merging_ratio": 0.0,
    "token_merging_ratio_img2img": 0.0,
    "token_merging_ratio_hr": 0.0,
    "pad_cond_uncond": False,
    "pad_cond_uncond_v0": False,
    "persistent_cond_cache": True,
    "batch_cond_uncond": True,
    "hires_fix_use_firstpass_conds": False,
    "use_old_scheduling": False,
    "add_model_name_to_info": True,
    "add_model_hash_to_info": True,
    "add_vae_name_to_info": True,
    "add_vae_hash_to_info": True,
    "add_user_name_to_info": False,
    "add_version_to_infotext": True,
    "live_previews_enable": True,
    "live_preview_content": "Prompt",
    "show_progress_every_n_steps": 10,
    "eta_ddim": 0.0,
    "eta_ancestral": 1.0,
    "eta_noise_seed_delta": 0,
    "always_discard_next_to_last_sigma": False,
    "sgm_noise_multiplier": False,
    "skip_early_cond": 0.0,
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": 0.0,
    "s_noise": 1.0,
    "upcast_attn": False,
    "enable_quantization": False,
    "sd_vae_decode_method": "Full",
    "sd_vae_encode_method": "Full",
    "overlay_inpaint": True,
    "return_mask": False,
    "return_mask_composite": False,
    "save_mask": False,
    "save_mask_composite": False,
    "inpainting_mask_weight": 1.0,
    "textual_inversion_add_hashes_to_infotext": True,
    "use_old_emphasis_implementation": False,
    "infotext_skip_pasting": [],
    "infotext_styles": "Ignore",
    "memmon_poll_rate": 0,
    "enable_console_prompts": False,
    "hide_samplers": [],
    "sd_checkpoints_limit": 1,
    "refiner_switch_by_sample_steps": False,
    "save_images_before_highres_fix": False,
    "disable_extra_networks": False,
}


def _make_opts() -> options.Options:
    # output folders follow paths.data_path at the time of the reset (the fixture points it at tmp_path)
    outputs = os.path.join(paths.data_path, "outputs")
    folders = {
        "outdir_txt2img_samples": os.path.join(outputs, "txt2img-images"),
        "outdir_img2img_samples": os.path.join(outputs, "img2img-images"),
        "outdir_txt2img_grids": os.path.join(outputs, "txt2img-grids"),
        "outdir_img2img_grids": os.path.join(outputs, "img2img-grids"),
    }
    return options.Options({k: OptionInfo(v) for k, v in {**_defaults, **folders}.items()}, set())


opts: options.Options = _make_opts()
state = shared_state.State()


class _TotalTqdm:
    def reset(self):
        pass

    def update(self):
        pass

    def updateTotal(self, new_total):
        pass

    def clear(self):
        pass


total_tqdm = _TotalTqdm()


class _StyleDatabase:
    """No saved styles: prompts pass through unchanged, as with an empty styles.csv."""

    def apply_styles_to_prompt(self, prompt, styles):
        return prompt

    def apply_negative_styles_to_prompt(self, prompt, styles):
        return prompt

    def extract_styles_from_prompt(self, prompt, negative_prompt):
        return [], prompt, negative_prompt


prompt_styles = _StyleDatabase()


def reset() -> None:
    """Restore fresh settings and state in place (test helper; not in the WebUI).

    In place because WebUI modules bind ``from modules.shared import opts, state`` at import time."""
    fresh = _make_opts()
    opts.data_labels = fresh.data_labels
    opts.data = fresh.data
    state.__dict__.clear()
    state.__init__()


class Shared(sys.modules[__name__].__class__):
    """As in v1.10.1, ``shared.sd_model`` is a property backed by ``sd_models.model_data``."""

    @property
    def sd_model(self):
        import modules.sd_models

        return modules.sd_models.model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        import modules.sd_models

        modules.sd_models.model_data.set_sd_model(value)


sys.modules[__name__].__class__ = Shared
