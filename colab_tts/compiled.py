"""The compiled decode step: ``T2SModel.decode_step`` under torch.compile, CUDA graphs on a GPU.

Pass it as ``step_fn`` to ``T2SRunner(..., cache="static", fixed_shape=True)``: a fixed-shape static
cache makes every step the same shapes, so one captured graph replays every token. GPT-SoVITS's own
CUDA-graph path does the same by hand (RVC-Boss/GPT-SoVITS GPT_SoVITS/AR/models/t2s_model_cudagraph.py
@08d627c).
"""

from __future__ import annotations

import torch


def compiled_step(model):
    """``model.decode_step`` under torch.compile: ``mode="reduce-overhead"`` (CUDA graphs) on a GPU.

    The first calls compile (seconds to minutes); only later steps are faster.
    """
    mode = "reduce-overhead" if model.device.type == "cuda" else "default"
    return torch.compile(model.decode_step, mode=mode, dynamic=False)
