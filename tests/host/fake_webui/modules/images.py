"""``modules.images``: grid building and ``save_image`` with the before/after image-saved callbacks."""

import math
import os

from modules import paths, script_callbacks
from PIL import Image, PngImagePlugin

saved_files: list[str] = []


def image_grid(imgs, batch_size=1, rows=None):
    if rows is None:
        rows = batch_size if batch_size > 1 else math.floor(math.sqrt(len(imgs)))
        rows = max(1, rows)
    cols = math.ceil(len(imgs) / rows)
    params = script_callbacks.ImageGridLoopParams(imgs, cols, rows)
    script_callbacks.image_grid_callback(params)
    w, h = imgs[0].size
    grid = Image.new("RGB", size=(params.cols * w, params.rows * h), color="black")
    for i, img in enumerate(params.imgs):
        grid.paste(img, box=(i % params.cols * w, i // params.cols * h))
    return grid


def save_image(
    image,
    path,
    basename,
    seed=None,
    prompt=None,
    extension="png",
    info=None,
    short_filename=False,
    no_prompt=False,
    grid=False,
    pnginfo_section_name="parameters",
    p=None,
    existing_info=None,
    forced_filename=None,
    suffix="",
    save_to_dirs=None,
):
    """Write ``<path>/<counter>-<seed><suffix>.<ext>`` with the infotext in PNG text; returns (fullfn, None)."""
    path = path or os.path.join(paths.data_path, "outputs")
    os.makedirs(path, exist_ok=True)
    counter = len([f for f in os.listdir(path) if f.endswith("." + extension)])
    fullfn = os.path.join(path, f"{forced_filename or f'{counter:05}-{seed}'}{suffix}.{extension}")
    pnginfo = existing_info or {}
    if info is not None:
        pnginfo[pnginfo_section_name] = info
    params = script_callbacks.ImageSaveParams(image, p, fullfn, pnginfo)
    script_callbacks.before_image_saved_callback(params)
    image, fullfn, info = params.image, params.filename, params.pnginfo.get(pnginfo_section_name, None)
    meta = PngImagePlugin.PngInfo()
    for k, v in params.pnginfo.items():
        meta.add_text(k, str(v))
    image.save(fullfn, pnginfo=meta)
    saved_files.append(fullfn)
    image.already_saved_as = fullfn
    script_callbacks.image_saved_callback(params)
    return fullfn, None


def resize_image(resize_mode, im, width, height, upscaler_name=None):
    """Mode 0 ("just resize") with no upscaler, LANCZOS, as the WebUI with its default settings; other modes are
    treated as mode 0."""
    return im.resize((width, height), resample=Image.LANCZOS)


def flatten(img, bgcolor):
    """RGBA -> RGB over ``bgcolor``."""
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background
    return img.convert("RGB")
