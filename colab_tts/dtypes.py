"""dtype names and their sizes: one home, below the GPU catalog and the model specs that both use them."""

from __future__ import annotations

from ._checks import choose

DTYPES = ("float32", "float16", "bfloat16")
_DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32", "torch.float32": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16", "torch.float16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16", "torch.bfloat16": "bfloat16",
}

def dtype_name(dtype) -> str:
    """Canonical name ("float16", ...) of a dtype given as a string alias or a torch.dtype."""
    if dtype is not None and type(dtype).__name__ == "dtype" and type(dtype).__module__ == "torch":
        dtype = str(dtype)
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be a string such as 'float16' or a torch dtype, got {type(dtype).__name__}")
    key = dtype.strip().lower()
    if key not in _DTYPE_ALIASES:
        choose(key, DTYPES + ("auto",), "dtype")
    return _DTYPE_ALIASES[key]


def torch_dtype(dtype):
    """The torch.dtype for a dtype name or alias."""
    import torch

    return getattr(torch, dtype_name(dtype))


DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
