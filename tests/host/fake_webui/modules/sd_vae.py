"""``modules.sd_vae``: a VAE change re-hijacks the model and fires ``on_model_loaded`` (as v1.10.1 does)."""

from modules import script_callbacks, sd_hijack, shared

loaded_vae_file = None
unspecified = object()


def get_loaded_vae_name():
    return None if loaded_vae_file is None else str(loaded_vae_file)


def get_loaded_vae_hash():
    return None


def reload_vae_weights(sd_model=None, vae_file=unspecified):
    """Switch to ``vae_file`` (a name; None = the checkpoint's own; default: ``opts.sd_vae``). No-op if loaded."""
    global loaded_vae_file
    if not sd_model:
        sd_model = shared.sd_model
    if vae_file is unspecified:  # resolve from the setting, as resolve_vae() does
        vae_file = None if shared.opts.sd_vae in ("Automatic", "None", None) else shared.opts.sd_vae
    if loaded_vae_file == vae_file:
        return None
    sd_hijack.model_hijack.undo_hijack(sd_model)
    loaded_vae_file = vae_file
    sd_hijack.model_hijack.hijack(sd_model)
    script_callbacks.model_loaded_callback(sd_model)
    return sd_model
