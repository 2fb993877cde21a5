"""CPU-only stand-ins for ``modules.devices``."""

import contextlib

import torch

cpu = torch.device("cpu")
device = cpu
device_interrogate = cpu
device_gfpgan = cpu
device_esrgan = cpu
device_codeformer = cpu
dtype = torch.float32
dtype_vae = torch.float32
dtype_unet = torch.float32
dtype_inference = torch.float32
unet_needs_upcast = False
fp8 = False


def autocast(disable: bool = False):
    return contextlib.nullcontext()


def without_autocast(disable: bool = False):
    return contextlib.nullcontext()


def torch_gc() -> None:
    pass


def torch_npu_set_device() -> None:
    pass


def cond_cast_unet(x):
    return x


def cond_cast_float(x):
    return x


class NansException(Exception):
    pass


def test_for_nans(x, where) -> None:
    if torch.isnan(x).all():
        raise NansException(f"A tensor with all NaNs was produced in {where}.")
