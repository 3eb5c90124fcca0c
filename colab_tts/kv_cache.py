"""How big vLLM's KV cache will be, predicted before vLLM starts.

vLLM gives the KV cache what is left of ``total memory x gpu_memory_utilization`` after the
weights, the activation peak of one profile forward pass, memory outside torch (CUDA context,
cuBLAS, NCCL) and, from v0.21, an estimate of CUDA-graph memory. The cache is cut into pages of
``2 x block_size x kv_heads x head_dim x dtype bytes`` per layer (shared/facts.md;
vllm/v1/core/kv_cache_utils.py ``get_num_blocks``). ``plan_vllm`` redoes that sum.

The KV arithmetic (``kv_bytes_per_token``, ``kv_blocks``) is exact: tests compare it with real
vLLM. The GPU-side terms are a physical model whose few constants were fitted to published vLLM
logs (tests/data/vllm_logs.json; see ``GpuOverheads``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from . import quantization as quant
from ._checks import fraction, positive
from .hardware import DTYPE_BYTES, GIB, GPUS, GpuSpec, dtype_name, get_gpu, resolve_dtype
from .models import ModelSpec

BLOCK_SIZE = 16
# Orpheus: SNAC 24 kHz frames of 2048 samples, 7 LLM tokens per frame (shared/facts.md).
ORPHEUS_TOKENS_PER_SECOND = 24000 / 2048 * 7
LATEST_VLLM = "0.32.0"
# vLLM's kv_cache_dtype names (vllm/config/cache.py CacheDType), with our aliases
_VLLM_KV_DTYPES = {"auto": "auto", "float16": "float16", "fp16": "float16", "half": "float16", "bfloat16": "bfloat16",
                   "bf16": "bfloat16", "fp8": "fp8", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"}
_KV_DTYPES = {"auto": None, "float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2, "float32": 4,
              "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


# --- the exact part: bytes and blocks ------------------------------------------------------------

def _spec(model) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, str):
        return ModelSpec.known(model)
    if isinstance(model, dict):
        return ModelSpec.from_config(model)
    raise TypeError(f"model must be a ModelSpec, a known name such as 'orpheus-3b' or a config dict, "
                    f"got {type(model).__name__}")


def _kv_dtype_bytes(kv_dtype) -> int:
    key = dtype_name(kv_dtype) if not isinstance(kv_dtype, str) else kv_dtype.strip().lower()
    if key not in _KV_DTYPES or _KV_DTYPES[key] is None:
        raise ValueError(f"Unknown kv_dtype {kv_dtype!r}: use one of float16, bfloat16, float32, fp8")
    return _KV_DTYPES[key]


def kv_heads_per_rank(spec: ModelSpec, tensor_parallel_size: int = 1) -> int:
    """KV heads each GPU holds: split when TP divides them, replicated when TP is a multiple of them."""
    positive(tensor_parallel_size, "tensor_parallel_size", integer=True)
    tp, kv = tensor_parallel_size, spec.num_kv_heads
    if spec.num_attention_heads % tp or (kv % tp if tp <= kv else tp % kv):
        ok = [d for d in range(1, 2 * kv + 1) if spec.num_attention_heads % d == 0 and (kv % d == 0 or d % kv == 0)]
        raise ValueError(f"tensor_parallel_size={tp} does not divide {spec.name}'s {kv} KV heads "
                         f"({spec.num_attention_heads} attention heads): use one of {ok}")
    return max(1, kv // tp)


def kv_bytes_per_token(spec, kv_dtype="float16", tensor_parallel_size: int = 1) -> int:
    """KV-cache bytes one token takes on one GPU: 2 (K and V) x layers x kv_heads x head_dim x bytes."""
    spec = _spec(spec)
    heads = kv_heads_per_rank(spec, tensor_parallel_size)
    return 2 * spec.num_layers * heads * spec.head_dim * _kv_dtype_bytes(kv_dtype)


def page_bytes(spec, kv_dtype="float16", tensor_parallel_size: int = 1, block_size: int = BLOCK_SIZE) -> int:
    """One block of one layer, as vLLM allocates it: 2 x block_size x kv_heads x head_dim x bytes."""
    spec = _spec(spec)
    positive(block_size, "block_size", integer=True)
    heads = kv_heads_per_rank(spec, tensor_parallel_size)
    return 2 * block_size * heads * spec.head_dim * _kv_dtype_bytes(kv_dtype)


def kv_blocks(available_bytes, spec, kv_dtype="float16", tensor_parallel_size: int = 1,
              block_size: int = BLOCK_SIZE) -> int:
    """Blocks vLLM makes from ``available_bytes``: available // page // layers (tokens = blocks x block_size)."""
    positive(available_bytes, "available_bytes", allow_zero=True)
    spec = _spec(spec)
    return int(available_bytes // page_bytes(spec, kv_dtype, tensor_parallel_size, block_size) // spec.num_layers)


def logged_kv_tokens(num_blocks: int, max_model_len: int, block_size: int = BLOCK_SIZE) -> int:
    """The "KV cache size: N tokens" vLLM V1 prints: requests that fit x max_model_len.

    A request holds whole blocks (ceil(max_model_len / block_size)), so N equals num_blocks x
    block_size only when max_model_len is a multiple of the block size (vllm/v1/core/kv_cache_utils.py
    ``get_kv_cache_capacity``).
    """
    positive(num_blocks, "num_blocks", integer=True, allow_zero=True)
    positive(max_model_len, "max_model_len", integer=True)
    per_request = -(-max_model_len // block_size)
    return int(num_blocks / per_request * max_model_len)


def max_model_len_for_audio(seconds, tokens_per_second=ORPHEUS_TOKENS_PER_SECOND, prompt_tokens: int = 128) -> int:
    """max_model_len for ``seconds`` of audio: prompt + seconds x tokens/s, rounded up to a 16-token block.

    Orpheus makes 82.03 tokens per second of audio (7 tokens per 2048-sample SNAC frame at 24 kHz);
    128 prompt tokens cover the special tokens, the voice name and about 80 words of text.
    """
    positive(seconds, "seconds")
    positive(tokens_per_second, "tokens_per_second")
    positive(prompt_tokens, "prompt_tokens", integer=True, allow_zero=True)
    tokens = prompt_tokens + math.ceil(seconds * tokens_per_second)
    return -(-tokens // BLOCK_SIZE) * BLOCK_SIZE


def audio_seconds_for_tokens(tokens: int, tokens_per_second=ORPHEUS_TOKENS_PER_SECOND, prompt_tokens: int = 128):
    """The inverse: seconds of audio one request of ``tokens`` can hold."""
    return max(0.0, (tokens - prompt_tokens) / tokens_per_second)


# --- the fitted part: what the GPU spends besides weights and KV ---------------------------------

@dataclass(frozen=True)
class GpuOverheads:
    """The GPU-side constants, each a physical quantity, fitted to published logs.

    - ``act_units``: live activation tensors per batched token in the profile forward, in units of
      (hidden + intermediate / TP) x dtype bytes. The MLP holds its input, the residual and the
      hidden state (3 x hidden) beside gate_up (2 x intermediate) and its product (1 x intermediate):
      3. Measured: the slope of peak memory against max_model_len in vllm#10517 (Llama-3.1-8B,
      3090, V0: 0.92 GiB per 9000 tokens) gives 3.0.
    - ``sampler_copies``: fp32 [max_num_seqs, vocab] tensors alive in the dummy sampler pass
      (logits, sorted values + int64 indices, softmax, cumsum, probs, logprobs, ...). Orpheus#109
      (1.44 GiB at 256 x 156,940) gives 9.6, vllm#10511 (1.26 GiB at 256 x 128,256) 10.3: 10.
    - ``non_torch_gib``: CUDA context, cuBLAS/NCCL buffers outside torch's allocator. Logs print
      -0.12 to 0.35 GiB on consumer and L40S cards (1.79 on an H100). With the two constants
      above held at their measured values, 0.10 minimises the worst error over the cases in
      tests/data/vllm_logs.json (``python benchmarks/kv_planner.py --fit`` redoes the search).
      Fitting the sampler too would lower the worst error to 3%, but by trading the two against
      each other (6 copies, 0.44 GiB), values the logs that print the components contradict;
      we keep the measured sampler instead.
    - ``cudagraph_gib``: the CUDA-graph pool vLLM >= 0.21 estimates and subtracts. Published
      estimates for dense and hybrid models: 0.09, 0.26, 0.36 and 0.58 GiB (club-3090#434,
      vllm#30515, gpustack/runner#251, wtdcode/vllm-backport#34): 0.3.

    The peak of the profile run is the larger of the forward pass and the sampler pass (the
    forward's temporaries are freed before sampling): in vllm#10517 peak memory is proportional
    to the profile length with no sampler offset.
    """

    act_units: float = 3.0
    sampler_copies: float = 10.0
    non_torch_gib: float = 0.10
    cudagraph_gib: float = 0.3


DEFAULT_OVERHEADS = GpuOverheads()


def _version(v) -> tuple[int, int, int]:
    if v is None:
        v = LATEST_VLLM
    if isinstance(v, tuple):
        return tuple(v) + (0,) * (3 - len(v))
    if not isinstance(v, str):
        raise TypeError(f"vllm_version must be a string such as '0.8.3', got {type(v).__name__}")
    parts = []
    for p in v.strip().lstrip("v").split(".")[:3]:
        digits = re.match(r"\d+", p)  # "1rc2" -> 1, "0+cu128" -> 0
        if not digits:
            break
        parts.append(int(digits.group()))
    if not parts:
        raise ValueError(f"vllm_version {v!r} is not a version: use e.g. '0.8.3' or '0.11.0'")
    return tuple(parts) + (0,) * (3 - len(parts))


@dataclass
class VllmPlan:
    """What vLLM will do with ``model`` on ``gpu``: the memory budget, the KV cache it gets, and why."""

    model: ModelSpec
    gpu: GpuSpec
    dtype: str
    kv_cache_dtype: str
    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    profile_tokens: int
    tensor_parallel_size: int
    enforce_eager: bool
    vllm_version: str
    v0: bool
    budget_gib: float
    weights_gib: float
    activation_gib: float
    non_torch_gib: float
    cudagraph_gib: float
    kv_cache_gib: float
    num_blocks: int
    block_size: int
    kv_bytes_per_token: int
    engine_settings: dict
    warnings: list[str] = field(default_factory=list)
    inputs: dict = field(default_factory=dict, repr=False)  # plan_vllm's arguments, to re-plan other lengths
    quantization: str | None = None  # weight scheme (colab_tts.quantization)

    @property
    def kv_cache_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def max_concurrency(self) -> float:
        """How many requests of max_model_len tokens fit in the KV cache at once."""
        return self.kv_cache_tokens / self.max_model_len

    @property
    def fits(self) -> bool:
        return self.num_blocks > 0 and self.kv_cache_tokens >= self.max_model_len

    @property
    def unreserved_gib(self) -> float:
        return self.gpu.memory_gib - self.budget_gib

    def largest_max_model_len(self) -> int:
        """The largest max_model_len vLLM accepts with these settings."""
        return _largest_fitting_len(self)

    def message(self) -> str:
        """One line: fits, or what to change."""
        if self.fits:
            return (f"fits: {self.kv_cache_tokens:,} KV tokens, {self.max_concurrency:.2f} requests of "
                    f"{self.max_model_len:,} tokens at once")
        best = self.largest_max_model_len()
        return (f"max_model_len={self.max_model_len:,} does not fit: the KV cache holds {self.kv_cache_tokens:,} "
                f"tokens on {self.gpu.name} at gpu_memory_utilization={self.gpu_memory_utilization}. "
                f"Use max_model_len <= {best:,} (or raise gpu_memory_utilization, or use a bigger GPU).")

    def engine_kwargs(self) -> dict:
        """Arguments for ``vllm.LLM(**kwargs)`` / ``AsyncEngineArgs(**kwargs)`` (model id not included)."""
        return dict(self.engine_settings)

    def breakdown(self) -> list[dict]:
        """The budget as rows (part, GiB) for a table or a stacked bar."""
        return [
            {"part": "weights", "GiB": self.weights_gib},
            {"part": "activations (profile run)", "GiB": self.activation_gib},
            {"part": "non-torch (CUDA context, NCCL)", "GiB": self.non_torch_gib},
            {"part": "CUDA graphs (estimate)", "GiB": self.cudagraph_gib},
            {"part": "KV cache", "GiB": self.kv_cache_gib},
            {"part": f"unreserved (1 - gmu = {1 - self.gpu_memory_utilization:.2f})", "GiB": self.unreserved_gib},
        ]

    def explain(self) -> str:
        """A readable breakdown of the sum vLLM does."""
        g, m = self.gpu, self.model
        lines = [
            f"{m.name} on {g.name} ({g.memory_gib:.2f} GiB), vLLM {self.vllm_version} "
            f"({'V0' if self.v0 else 'V1'} engine), TP={self.tensor_parallel_size}",
            f"  budget = {g.memory_gib:.2f} GiB x gpu_memory_utilization {self.gpu_memory_utilization} "
            f"= {self.budget_gib:.2f} GiB",
            f"  - {'weights (' + (self.quantization or self.dtype) + ')':<36}{self.weights_gib:7.2f} GiB",
            f"  - activations ({self.profile_tokens:,}-token profile run) {self.activation_gib:7.2f} GiB",
            f"  - non-torch memory                    {self.non_torch_gib:7.2f} GiB",
            f"  - CUDA graphs                         {self.cudagraph_gib:7.2f} GiB",
            f"  = KV cache                            {self.kv_cache_gib:7.2f} GiB",
            f"  KV per token: 2 x {m.num_layers} layers x {kv_heads_per_rank(m, self.tensor_parallel_size)} "
            f"kv heads x {m.head_dim} x {_kv_dtype_bytes(self.kv_cache_dtype)} B = "
            f"{self.kv_bytes_per_token / 1024:g} KiB",
            f"  blocks = {self.num_blocks:,} of {self.block_size} tokens = {self.kv_cache_tokens:,} tokens",
            f"  max_model_len {self.max_model_len:,} -> {self.max_concurrency:.2f} requests at once",
        ]
        lines += [f"  warning: {w}" for w in self.warnings if w != self.message()]
        lines.append("  " + self.message())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"VllmPlan({self.model.name} on {self.gpu.name}, {self.dtype}, gmu={self.gpu_memory_utilization}, "
                f"max_model_len={self.max_model_len:,}: weights {self.weights_gib:.2f} GiB, KV {self.kv_cache_gib:.2f} "
                f"GiB = {self.kv_cache_tokens:,} tokens, fits={self.fits})")

    __str__ = explain


def _resolve_model_dtype(spec: ModelSpec, gpu: GpuSpec, dtype, version=(0, 32, 0)) -> tuple[str, list[str]]:
    warnings = []
    if isinstance(dtype, str) and dtype.strip().lower() == "auto":
        wanted = spec.config.get("torch_dtype") or spec.config.get("dtype") or "float16"
        wanted = dtype_name(wanted)
        if wanted == "float32":  # vLLM runs fp32 checkpoints in half precision unless asked
            wanted = "bfloat16" if gpu.bf16 else "float16"
    else:
        wanted = dtype_name(dtype)
    choice = resolve_dtype(wanted, gpu)
    if choice.dtype != wanted:
        warnings.append(choice.reason)
        if version < (0, 9, 0):  # shared/facts.md: the automatic fp16 fallback arrived around v0.9
            warnings.append(f"vLLM {'.'.join(map(str, version))} raises on bfloat16 here instead of falling back: "
                            "pass dtype='float16' (engine_kwargs() does)")
    return choice.dtype, warnings


def _defaults(gpu: GpuSpec, version, v0: bool, max_model_len: int, server: bool) -> tuple[int, int, bool]:
    """vLLM's default (max_num_batched_tokens, max_num_seqs, chunked prefill) for this version and GPU."""
    if v0:  # chunked prefill only by default for long-context models
        if max_model_len > 32768:
            return (2048 if version >= (0, 8, 0) else 512), 256, True
        return max(max_model_len, 2048), 256, False
    big = gpu.memory_gib >= 70 and "a100" not in gpu.name.lower()
    tokens = (8192 if server else 16384) if big else (2048 if server else 8192)
    return tokens, (1024 if big else 256), True


def _weights_bytes(spec: ModelSpec, dtype: str, tp: int) -> float:
    bytes_ = DTYPE_BYTES[dtype]
    padded_vocab = -(-spec.vocab_size // 64) * 64  # vLLM pads embeddings to a multiple of 64
    params = spec.num_params + (padded_vocab - spec.vocab_size) * spec.hidden_size * (
        1 if spec.tie_word_embeddings else 2)
    rope_cache = spec.max_position_embeddings * spec.head_dim * bytes_  # cos/sin table, a torch buffer
    return params * bytes_ / tp + rope_cache


def _plan(spec, gpu, *, gpu_memory_utilization, dtype, max_model_len, max_num_seqs, max_num_batched_tokens,
          tensor_parallel_size, enforce_eager, kv_cache_dtype, vllm_version, server, overheads,
          quantization=None) -> VllmPlan:
    tp = tensor_parallel_size
    version = _version(vllm_version)
    # Below 0.10 the published logs run V0 even on Ampere (Orpheus-TTS#115: "Initializing a V0 LLM engine
    # (v0.8.3)" on an RTX 4070 Ti); GPUs below CC 8.0 stayed on V0 until 0.10.2 (shared/facts.md).
    v0 = version < ((0, 10, 2) if gpu.compute_capability < (8, 0) else (0, 10, 0))
    resolved, warnings = _resolve_model_dtype(spec, gpu, dtype, version)
    kv_dtype = resolved if kv_cache_dtype == "auto" else kv_cache_dtype
    warnings += quant.check_kv_cache_dtype(kv_dtype, gpu, version) + quant.check_scheme(quantization, gpu, version)
    default_tokens, default_seqs, chunked = _defaults(gpu, version, v0, max_model_len, server)
    seqs = max_num_seqs if max_num_seqs is not None else default_seqs
    tokens = max_num_batched_tokens if max_num_batched_tokens is not None else default_tokens
    if not chunked and tokens < max_model_len:
        tokens = max_model_len  # V0 without chunked prefill must fit a whole prompt in one batch
    dbytes = DTYPE_BYTES[resolved]
    o = overheads
    weights = _weights_bytes(spec, resolved, tp) + quant.weight_bytes_delta(spec, resolved, quantization, tp)
    forward = tokens * dbytes * o.act_units * (spec.hidden_size + spec.intermediate_size / tp)
    sampler = o.sampler_copies * min(seqs, tokens) * spec.vocab_size * 4
    activation = max(forward, sampler)
    non_torch = o.non_torch_gib * GIB
    graphs = o.cudagraph_gib * GIB if not enforce_eager and version >= (0, 21, 0) else 0.0
    budget = gpu.memory_gib * GIB * gpu_memory_utilization
    available = budget - weights - activation - non_torch - graphs
    if weights > budget:
        need = weights + activation + non_torch + graphs + kv_bytes_per_token(spec, kv_dtype, tp) * max_model_len
        fit = [k for k, g in GPUS.items() if g.memory_gib * gpu_memory_utilization * GIB >= need]
        raise ValueError(
            f"{spec.name} does not fit on {gpu.name} at all: its {quantization or resolved} weights ({weights / GIB:.2f} GiB) "
            f"exceed the {budget / GIB:.2f} GiB budget (gpu_memory_utilization={gpu_memory_utilization}) by "
            f"{(weights - budget) / GIB:.2f} GiB. Catalog GPUs that fit it with max_model_len={max_model_len:,}: "
            f"{', '.join(fit) or 'none'}; or use tensor parallelism or a quantized checkpoint.")
    if not enforce_eager and version < (0, 21, 0):
        warnings.append("CUDA graphs are captured after the KV cache is sized and come out of the "
                        f"(1 - gpu_memory_utilization) = {(1 - gpu_memory_utilization) * gpu.memory_gib:.2f} GiB slice")
    blocks = kv_blocks(max(0.0, available), spec, kv_dtype, tp, BLOCK_SIZE)
    settings = {
        "dtype": resolved,
        "gpu_memory_utilization": gpu_memory_utilization,
        "max_model_len": max_model_len,
        "max_num_seqs": seqs,
        "tensor_parallel_size": tp,
        "enforce_eager": enforce_eager,
    }
    if max_num_batched_tokens is not None:
        settings["max_num_batched_tokens"] = max_num_batched_tokens
    if kv_cache_dtype != "auto":
        settings["kv_cache_dtype"] = kv_cache_dtype
    if quantization is not None:
        settings["quantization"] = quantization
    return VllmPlan(
        model=spec, gpu=gpu, dtype=resolved, kv_cache_dtype=kv_dtype,
        gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, max_num_seqs=seqs,
        max_num_batched_tokens=tokens, profile_tokens=tokens, tensor_parallel_size=tp,
        enforce_eager=enforce_eager, vllm_version=".".join(map(str, version)), v0=v0,
        budget_gib=budget / GIB, weights_gib=weights / GIB, activation_gib=activation / GIB,
        non_torch_gib=non_torch / GIB, cudagraph_gib=graphs / GIB,
        kv_cache_gib=blocks * page_bytes(spec, kv_dtype, tp) * spec.num_layers / GIB,
        num_blocks=blocks, block_size=BLOCK_SIZE, kv_bytes_per_token=kv_bytes_per_token(spec, kv_dtype, tp),
        engine_settings=settings, warnings=warnings, quantization=quantization,
    )


def plan_vllm(model, gpu, *, gpu_memory_utilization=0.9, dtype="auto", max_model_len=None, max_num_seqs=None,
              max_num_batched_tokens=None, tensor_parallel_size=1, enforce_eager=False, kv_cache_dtype="auto",
              vllm_version=None, strict=False, server=False, overheads: GpuOverheads = DEFAULT_OVERHEADS,
              quantization=None) -> VllmPlan:
    """Predict vLLM's KV cache for ``model`` (ModelSpec, known name or config dict) on ``gpu``.

    ``vllm_version`` picks the engine's behaviour (None = the latest, < 0.10 = the V0 engine).
    With tensor parallelism every rank holds 1/TP of the weights and KV heads; vLLM takes the
    smallest block count over ranks, and the ranks here are identical, so that is every rank's.
    ``server=True`` uses the OpenAI server's batch defaults instead of ``vllm.LLM``'s. With
    ``strict=True`` a max_model_len that does not fit raises ValueError naming the largest that does.
    ``quantization`` (None, "awq", "gptq", "fp8", "bitsandbytes") narrows the linear layers
    (colab_tts.quantization); it and an fp8 ``kv_cache_dtype`` are checked against the compute
    capabilities vLLM allows them on.
    """
    spec = _spec(model)
    quantization = quant.scheme_name(quantization)
    gpu = get_gpu(gpu)
    gmu = fraction(gpu_memory_utilization, "gpu_memory_utilization")
    if max_model_len is None:
        max_model_len = spec.max_position_embeddings
    positive(max_model_len, "max_model_len", integer=True)
    if max_num_seqs is not None:
        positive(max_num_seqs, "max_num_seqs", integer=True)
    if max_num_batched_tokens is not None:
        positive(max_num_batched_tokens, "max_num_batched_tokens", integer=True)
    kv_heads_per_rank(spec, tensor_parallel_size)
    if not isinstance(kv_cache_dtype, str):
        raise TypeError("kv_cache_dtype must be a string such as 'auto' or 'fp8'")
    kv_cache_dtype = _VLLM_KV_DTYPES.get(kv_cache_dtype.strip().lower())
    if kv_cache_dtype is None:
        raise ValueError(f"Unknown kv_dtype for vLLM: use one of {', '.join(sorted(set(_VLLM_KV_DTYPES.values())))}")
    plan = _plan(spec, gpu, gpu_memory_utilization=gmu, dtype=dtype, max_model_len=max_model_len,
                 max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                 tensor_parallel_size=tensor_parallel_size, enforce_eager=bool(enforce_eager),
                 kv_cache_dtype=kv_cache_dtype, vllm_version=vllm_version, server=bool(server),
                 overheads=overheads, quantization=quantization)
    plan.inputs = dict(gpu_memory_utilization=gmu, dtype=dtype, max_num_seqs=max_num_seqs,
                       max_num_batched_tokens=max_num_batched_tokens, tensor_parallel_size=tensor_parallel_size,
                       enforce_eager=bool(enforce_eager), kv_cache_dtype=kv_cache_dtype, vllm_version=vllm_version,
                       server=bool(server), overheads=overheads, quantization=quantization)
    if not plan.fits:
        warn = plan.message()
        if strict:
            raise ValueError(warn)
        plan.warnings.append(warn)
    return plan


def lowest_gmu_for(model, gpu, step: float = 0.01, **plan_kwargs) -> float | None:
    """The lowest gpu_memory_utilization (on a ``step`` grid) at which the plan fits; None if even 1.0 does not."""
    positive(step, "step")
    n = int(round(1 / step))
    for i in range(1, n + 1):
        gmu = round(i * step, 4)
        try:
            if plan_vllm(model, gpu, gpu_memory_utilization=gmu, **plan_kwargs).fits:
                return gmu
        except ValueError:  # the weights alone exceed this budget
            continue
    return None


def _largest_fitting_len(plan: VllmPlan) -> int:
    """Largest L with capacity(L) >= L. In V0 the profile run grows with L, so search, don't just read it off."""
    def capacity(length: int) -> int:
        try:
            return _plan(plan.model, plan.gpu, max_model_len=length, **plan.inputs).kv_cache_tokens
        except ValueError:
            return 0

    lo, hi = 0, max(plan.max_model_len, capacity(1))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if capacity(mid) >= mid:
            lo = mid
        else:
            hi = mid - 1
    return lo


# --- checking the model against published logs -------------------------------------------------

def plan_published_case(case: dict, models: dict | None = None, overheads: GpuOverheads = DEFAULT_OVERHEADS
                        ) -> VllmPlan:
    """Re-run one published log's settings (a case of tests/data/vllm_logs.json) through plan_vllm.

    The GPU is the catalog entry with the memory the log printed; ``models`` maps extra model
    names to {"config": {...}} (the file's own "models" table).
    """
    models = models or {}
    name = case["model"]
    spec = (ModelSpec.from_config(models[name]["config"], name=name) if name in models else ModelSpec.known(name))
    try:
        base = get_gpu(case["gpu"])
        cc = base.compute_capability
    except ValueError:
        cc = tuple(case.get("compute_capability", (8, 0)))
    gpu = GpuSpec(case["gpu"], tuple(case.get("compute_capability", cc)), case["gpu_memory_gib"], 1.0, 1.0,
                  source=case.get("url", ""))
    return plan_vllm(spec, gpu, vllm_version=case.get("vllm_version"), overheads=overheads, **case["settings"])


def published_error(case: dict, plan: VllmPlan) -> float:
    """Relative error of the plan against what the log reported (tokens, or KV GiB)."""
    if "reported_tokens" in case:
        return plan.kv_cache_tokens / case["reported_tokens"] - 1
    return plan.kv_cache_gib / case["reported_kv_gib"] - 1


# --- does a whole TTS system fit: weights + KV for one request + the rest -----------------------

@dataclass(frozen=True)
class Deployment:
    """One TTS system as this project runs it: its decoder, how fast it makes tokens, what else it loads.

    ``measured_total_gib``, where a run-time measurement exists, replaces the sum: the other stages
    are then what the measurement leaves after the decoder's weights and KV cache.
    """

    label: str
    model: str
    tokens_per_second: float | None  # None: budget the decoder's whole context
    other_gib: float
    source: str
    measured_total_gib: float | None = None
    prompt_tokens: int = 128


def _gb(gigabytes: float) -> float:
    return gigabytes * 1e9 / GIB


DEPLOYMENTS = (
    Deployment("Orpheus 3B + SNAC", "orpheus-3b", ORPHEUS_TOKENS_PER_SECOND, 19.8e6 * 2 / GIB,
               "SNAC 24 kHz decoder, 19.8 M params in fp16 (shared/facts.md)"),
    Deployment("GPT-SoVITS v2 (GPT stage)", "gpt-sovits-v2-t2s", 25.0, 0.0,
               "GPT stage only; 25 semantic tokens per second (shared/facts.md)"),
    Deployment("IndexTTS-2 (whole pipeline)", "indextts2-gpt", 50.0, 0.0,
               "5.48 GB measured in half precision without the emotion model on an RTX 4090 (shared/facts.md)",
               measured_total_gib=_gb(5.48)),
    Deployment("MetaVoice-1B (whole pipeline)", "metavoice-1b", None, 0.0,
               "~20 GB seen at run time on an RTX 4090 (shared/facts.md; its README later asks 12 GB)",
               measured_total_gib=_gb(20.0)),
)


def fit_rows(seconds: float = 30, dtype: str = "float16", gpus=None, deployments=DEPLOYMENTS,
             overheads: GpuOverheads = DEFAULT_OVERHEADS) -> list[dict]:
    """For each covered system: decoder weights + KV for one request of ``seconds`` + runtime + other stages.

    Runtime = the prefill activations of one prompt, one sampler pass and the non-torch constant
    (plan_vllm's physical model with a batch of one). Each GPU column shows the share of its memory
    the total takes, or OOM; "fits on" lists the GPUs with room.
    """
    positive(seconds, "seconds")
    dtype = dtype_name(dtype)
    specs = {k: get_gpu(k) for k in (list(GPUS) if gpus is None else list(gpus))}
    rows = []
    for d in deployments:
        spec = ModelSpec.known(d.model)
        tokens = (spec.max_position_embeddings if d.tokens_per_second is None
                  else min(spec.max_position_embeddings,
                           max_model_len_for_audio(seconds, d.tokens_per_second, d.prompt_tokens)))
        weights = spec.weight_bytes(dtype) / GIB
        kv = kv_bytes_per_token(spec, dtype) * tokens / GIB
        dbytes = DTYPE_BYTES[dtype]
        runtime = (d.prompt_tokens * dbytes * overheads.act_units * (spec.hidden_size + spec.intermediate_size)
                   + overheads.sampler_copies * spec.vocab_size * 4) / GIB + overheads.non_torch_gib
        other = d.other_gib if d.measured_total_gib is None else max(0.0, d.measured_total_gib - weights - kv)
        total = weights + kv + runtime + other
        row = {"system": d.label, "tokens": tokens, "weights GiB": weights, "KV GiB": kv,
               "runtime GiB": runtime, "other GiB": other, "total GiB": total}
        for key, gpu in specs.items():
            row[key] = f"{total / gpu.memory_gib:.0%}" if total <= gpu.memory_gib else "OOM"
        row["fits on"] = ", ".join(k for k, g in specs.items() if total <= g.memory_gib) or "none"
        rows.append(row)
    return rows


def __getattr__(name):  # fit_vllm lives in colab_tts.kv_fit, which imports this module
    if name == "fit_vllm":
        from .kv_fit import fit_vllm

        return fit_vllm
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
