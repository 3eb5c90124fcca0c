"""Lower precision for the GPT stage: one transform, ``prepare_model``, applied to a model before decoding.

Floating dtypes are chosen on the GPU's compute capability through ``hardware.resolve_dtype`` (bfloat16
below CC 8.0, e.g. on a T4, becomes float16), never through ``torch.cuda.is_bf16_supported()``, which
answers True on a T4 because recent PyTorch emulates bfloat16 there. "int8" is PyTorch's dynamic
quantization of the Linear layers: a CPU-only path.
"""

from __future__ import annotations

import warnings

import torch

from . import devices, hardware

INT8_REASON = "int8: dynamic quantization of the Linear layers (CPU only, lossy: tokens may differ)"


def choose_dtype(dtype="auto", device=None, gpu=None) -> hardware.DtypeChoice:
    """The dtype ``prepare_model`` would use for ``dtype`` on ``device``, and why.

    On CUDA the GPU comes from ``gpu`` or ``hardware.detect()`` (its compute capability decides);
    on the CPU any dtype is taken as asked. "int8" is returned as is on the CPU and refused elsewhere.
    """
    device = devices.resolve_device(device)
    if isinstance(dtype, str) and dtype.strip().lower() == "int8":
        if device.type != "cpu":
            raise ValueError("dtype='int8' (dynamic quantization) runs on the CPU only; on a GPU use 'auto' "
                             "(float16 on a T4, bfloat16 from Ampere on)")
        return hardware.DtypeChoice("int8", INT8_REASON)
    if device.type == "cuda" and gpu is None:
        gpu = hardware.detect().gpu
    return hardware.resolve_dtype(dtype, gpu if device.type == "cuda" else None)


def prepare_model(model, dtype="float32", device=None, gpu=None):
    """``model`` on ``device`` in ``dtype`` ("float32", "float16", "bfloat16", "auto" or "int8").

    Returns the model and the reason for its dtype (``choose_dtype``).
    """
    device = devices.resolve_device(device)
    choice = choose_dtype(dtype, device, gpu)
    if choice.dtype == "int8":
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
            model = quantize_dynamic(model.float().to(device), {torch.nn.Linear}, dtype=torch.qint8)
        return model, choice.reason
    return model.to(device=device, dtype=hardware.torch_dtype(choice.dtype)), choice.reason
