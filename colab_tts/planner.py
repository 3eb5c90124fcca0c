"""The planner's sum and its plan: how big vLLM's KV cache will be, predicted before vLLM starts.

Layers, each importing only those before it: the GPU catalog (``hardware``), the model spec (``models``), the
weight formats (``quantization``), the memory budget (``vllm_plan.MemoryBudget``), the plan (this module:
``plan_vllm`` and ``VllmPlan``), the fit (``kv_fit.fit_vllm``); ``kv_cache`` is the public face of all of them.


vLLM gives the KV cache what is left of ``total memory x gpu_memory_utilization`` after the weights,
the peak of one profile run (the forward pass over ``max_num_batched_tokens`` tokens, or the sampler's
warm-up over ``max_num_seqs x vocab`` logits, whichever is larger), memory outside torch (CUDA context,
cuBLAS, NCCL) and, from v0.20, an estimate of CUDA-graph memory (vllm-project/vllm
vllm/v1/worker/gpu_worker.py ``determine_available_memory`` @v0.32.0). The cache is cut into pages of
``2 x block_size x kv_heads x head_dim x dtype bytes`` per layer (vllm/v1/core/kv_cache_utils.py
``get_num_blocks``). ``plan_vllm`` redoes that sum; the terms that moved between releases live in
``colab_tts.vllm_versions``, each with the release that changed it.

The KV arithmetic (``kv_bytes_per_token``, ``kv_blocks``) is exact: tests compare it with real vLLM. The
GPU-side terms are a physical model whose constants (``GpuOverheads``) are fitted to or checked by published vLLM
logs, except the CUDA-graph estimate (plans that use it say "not validated"); ``colab_tts.lessons.kv_sizing``
checks the model against the logs, leave-one-out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import quantization as quant
from . import vllm_versions as versions
from ._checks import fraction, positive
from .cited import value as cited_value
from .hardware import DTYPE_BYTES, GPUS, GpuSpec, dtype_name, get_gpu, pick_dtype, resolve_dtype
from .models import ModelSpec
from .units import GIB, MIB
from .vllm_plan import MemoryBudget

BLOCK_SIZE = 16
# Orpheus: 7 LLM tokens per 2048-sample SNAC frame at 24 kHz, in tokens per second of audio (the cited figure
# snac_decode.TOKENS_PER_SECOND reads; read here too so the planner does not import numpy)
ORPHEUS_TOKENS_PER_SECOND = cited_value("orpheus.tokens_per_second")
LATEST_VLLM = versions.LATEST
# The CUDA context a process creates on its first CUDA call (cited: cuda.context_mb, pytorch/pytorch#109888):
# vLLM's start-up check sees the free memory after its own context exists.
CUDA_CONTEXT_GIB = cited_value("cuda.context_mb") * MIB / GIB
# vLLM's kv_cache_dtype names (vllm/config/cache.py CacheDType), with our aliases
_VLLM_KV_DTYPES = {"auto": "auto", "float16": "float16", "fp16": "float16", "half": "float16", "bfloat16": "bfloat16",
                   "bf16": "bfloat16", "fp8": "fp8", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"}
_KV_DTYPES = {"auto": None, "float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2, "float32": 4,
              "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}



# --- the plan: what vLLM will do, and what to change -------------------------------------------

class PlanInvariantError(AssertionError):
    """A plan term outside what the card allows (negative, or above the card): a bug in the planner, such as a
    units slip, never bad input. Raised where a plan is built instead of printing an impossible plan."""


# Terms that can never exceed the card, whatever the arguments: plan_vllm refuses (ValueError) the
# arguments that would push them there (weights beyond the budget, a profile run beyond the card).
_CARD_BOUNDED = ("budget_gib", "weights_gib", "activation_gib", "forward_gib", "sampler_gib", "non_torch_gib",
                 "cudagraph_gib", "kv_cache_gib", "other_gib")
_SLACK_GIB = 1e-6  # float rounding of byte sums, far below any real slip


def check_terms(plan: VllmPlan) -> None:
    """Raise PlanInvariantError naming the term when a plan is impossible on its own card."""
    card = plan.gpu.memory_gib

    def fail(why: str):
        raise PlanInvariantError(f"planner bug: {why} in the plan for {plan.model.name} on {plan.gpu.name} "
                                 f"({card:.2f} GiB, gpu_memory_utilization={plan.gpu_memory_utilization})")

    for name in _CARD_BOUNDED:
        value = getattr(plan, name)
        if not math.isfinite(value) or value < 0:
            fail(f"{name} = {value!r} GiB is negative or not a number")
        if value > card + _SLACK_GIB:
            fail(f"{name} = {value:.2f} GiB exceeds the card's {card:.2f} GiB")
    if plan.num_blocks < 0:
        fail(f"num_blocks = {plan.num_blocks} is negative")
    if plan.budget_gib > card * plan.gpu_memory_utilization + _SLACK_GIB:
        fail(f"budget_gib = {plan.budget_gib:.2f} GiB exceeds {card:.2f} GiB x gpu_memory_utilization")
    if plan.weights_gib > plan.budget_gib + _SLACK_GIB:
        fail(f"weights_gib = {plan.weights_gib:.2f} GiB exceeds budget_gib = {plan.budget_gib:.2f} GiB")
    spent = plan.weights_gib + plan.activation_gib + plan.non_torch_gib + plan.cudagraph_gib + plan.kv_cache_gib
    if plan.num_blocks and spent > plan.budget_gib + _SLACK_GIB:
        fail(f"weights + profile peak + non-torch + CUDA graphs + kv_cache_gib = {spent:.2f} GiB exceeds "
             f"budget_gib = {plan.budget_gib:.2f} GiB")


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
    activation_gib: float  # the profiled peak: max(forward, sampler) where the sampler is profiled
    non_torch_gib: float
    cudagraph_gib: float
    kv_cache_gib: float
    num_blocks: int
    block_size: int
    kv_bytes_per_token: int
    engine_settings: dict
    warnings: list[str] = field(default_factory=list)
    forward_gib: float = 0.0  # the forward pass over profile_tokens
    sampler_gib: float = 0.0  # the sampler's warm-up over max_num_seqs x vocab (0 where not profiled)
    other_gib: float = 0.0  # what other processes or stages hold on this GPU
    inputs: dict = field(default_factory=dict, repr=False)  # plan_vllm's arguments, to re-plan
    quantization: str | None = None  # weight scheme (colab_tts.quantization)
    startup_free_gib: float | None = None  # free memory vLLM's start-up check needs (None: no check in this release)
    context_gib: float = 0.0  # vLLM's own CUDA context, there before that check

    def startup_line(self) -> str:
        """One line: how much must be free when vLLM starts, and how to see it."""
        if self.startup_free_gib is None:
            return (f"start-up: vLLM {self.vllm_version} does not check free memory at start-up; memory other processes "
                    "hold must fit beside its budget (see it with `nvidia-smi`)")
        need_mib = math.ceil((self.startup_free_gib + self.context_gib) * 1024)
        room = self.gpu.memory_gib - self.startup_free_gib - self.context_gib
        return (f"start-up: vLLM needs {self.startup_free_gib:.2f} GiB free after its own CUDA context "
                f"(~{self.context_gib:.2f} GiB): `nvidia-smi --query-gpu=memory.free --format=csv` must show >= "
                f"{need_mib:,} MiB before it starts (other processes may hold at most {room:.2f} GiB"
                + (f"; planned with {self.other_gib:.2f} GiB held)" if self.other_gib else ")"))

    def __post_init__(self):
        check_terms(self)

    @property
    def kv_cache_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def kv_concurrency(self) -> float:
        """vLLM's "Maximum concurrency" log figure: blocks / blocks one request of max_model_len holds."""
        return self.num_blocks / -(-self.max_model_len // self.block_size)

    @property
    def max_concurrency(self) -> int:
        """Requests of max_model_len tokens that run at once: whole blocks each, and no more than max_num_seqs."""
        return min(self.max_num_seqs, int(self.kv_concurrency))

    @property
    def fits(self) -> bool:
        return self.num_blocks > 0 and self.kv_cache_tokens >= self.max_model_len

    @property
    def unreserved_gib(self) -> float:
        return self.gpu.memory_gib - self.budget_gib - self.other_gib

    @property
    def shortfall_gib(self) -> float:
        """KV memory one request of max_model_len lacks (0 when it fits)."""
        need = -(-self.max_model_len // self.block_size) * self.block_size * self.kv_bytes_per_token / GIB
        return max(0.0, need - self.kv_cache_gib)

    def largest_max_model_len(self) -> int:
        """The largest max_model_len vLLM accepts with these settings."""
        return _largest_fitting_len(self)

    def replan(self, **changes) -> VllmPlan:
        """The same plan with some of plan_vllm's arguments changed."""
        args = dict(self.inputs, max_model_len=self.max_model_len)
        args.update(changes)
        return plan_vllm(self.model, self.gpu, **args)

    def fixes(self) -> list[str]:
        """Single changes that would make this plan fit, each checked by re-planning (empty if it fits)."""
        if self.fits:
            return []
        out, seqs = [], self.max_num_seqs
        if (best := self.largest_max_model_len()) >= self.block_size:
            audio = (f" ({audio_seconds_for_tokens(best):.0f} s of Orpheus audio)"
                     if self.model.name == "orpheus-3b" else "")  # the audio rate is Orpheus's alone
            out.append(f"max_model_len <= {best:,}{audio}")
        gmu = lowest_gmu_for(self.model, self.gpu, **{**self.inputs, "gpu_memory_utilization": None,
                                                       "max_model_len": self.max_model_len})
        if gmu is not None and gmu > self.gpu_memory_utilization:
            out.append(f"gpu_memory_utilization={gmu}")
        while self.sampler_gib > self.forward_gib and seqs > 1:
            seqs //= 2
            if self.replan(max_num_seqs=seqs).fits:
                out.append(f"max_num_seqs={seqs} (the sampler warm-up shrinks with it)")
                break
        if self.cudagraph_gib and self.replan(enforce_eager=True).fits:
            out.append("enforce_eager=True (no CUDA-graph memory)")
        if not out:  # no single change: the sampler down to the forward pass, no graphs, then the lowest gmu
            seqs = self.max_num_seqs
            while seqs > 1 and self.replan(max_num_seqs=seqs // 2).sampler_gib >= self.forward_gib:
                seqs //= 2
            seqs = max(1, seqs // 2) if self.sampler_gib > self.forward_gib else seqs
            both = {**self.inputs, "max_model_len": self.max_model_len, "max_num_seqs": seqs, "enforce_eager": True}
            gmu = lowest_gmu_for(self.model, self.gpu, **both)
            if gmu is not None:
                out.append(f"together: max_num_seqs={seqs}, enforce_eager=True, gpu_memory_utilization={gmu}")
        return out or ["no setting of gpu_memory_utilization, max_num_seqs or enforce_eager makes room: use a "
                       "bigger GPU, tensor parallelism or a quantized checkpoint"]

    def message(self) -> str:
        """One line: fits, or by how much it does not and what would make it fit."""
        if self.fits:
            return (f"fits: {self.kv_cache_tokens:,} KV tokens, {self.max_concurrency:,} request(s) of "
                    f"{self.max_model_len:,} tokens at once (KV room for {self.kv_concurrency:.2f}, max_num_seqs="
                    f"{self.max_num_seqs})")
        return (f"max_model_len={self.max_model_len:,} does not fit on {self.gpu.name} at gpu_memory_utilization="
                f"{self.gpu_memory_utilization}: one request needs {self.shortfall_gib:.2f} GiB more KV cache "
                f"(it holds {self.kv_cache_tokens:,} tokens). " + "; or ".join(self.fixes()) + ".")

    def engine_kwargs(self) -> dict:
        """Arguments for ``vllm.LLM(**kwargs)`` / ``AsyncEngineArgs(**kwargs)`` (model id not included)."""
        return dict(self.engine_settings)

    def breakdown(self) -> list[dict]:
        """The budget as rows (part, GiB) for a table or a stacked bar; the forward pass apart from the sampler."""
        forward_held = min(self.forward_gib, self.activation_gib)
        rows = [
            {"part": "weights", "GiB": self.weights_gib},
            {"part": f"forward pass ({self.profile_tokens:,}-token profile run)", "GiB": forward_held},
            {"part": f"sampler warm-up ({min(self.max_num_seqs, self.profile_tokens)} seqs x "
                     f"{self.model.vocab_size:,} vocab, beyond the forward pass)",
             "GiB": self.activation_gib - forward_held},
            {"part": "non-torch (CUDA context, NCCL)", "GiB": self.non_torch_gib},
            {"part": "CUDA graphs (estimate)", "GiB": self.cudagraph_gib},
            {"part": "KV cache", "GiB": self.kv_cache_gib},
        ]
        if self.other_gib:
            rows.append({"part": "other processes / stages", "GiB": self.other_gib})
        rows.append({"part": f"unreserved (1 - gmu = {1 - self.gpu_memory_utilization:.2f})", "GiB": self.unreserved_gib})
        return rows

    def explain(self) -> str:
        """A readable breakdown of the sum vLLM does."""
        g, m = self.gpu, self.model
        lines = [
            f"{m.name} on {g.name} ({g.memory_gib:.2f} GiB), vLLM {self.vllm_version} "
            f"({'V0' if self.v0 else 'V1'} engine), TP={self.tensor_parallel_size}",
            f"  budget = {g.memory_gib:.2f} GiB x gpu_memory_utilization {self.gpu_memory_utilization} "
            + (f"- {self.other_gib:.2f} GiB held by others " if self.budget_gib < g.memory_gib
               * self.gpu_memory_utilization - 1e-9 else "") + f"= {self.budget_gib:.2f} GiB",
            f"  - {'weights (' + (self.quantization or self.dtype) + ')':<36}{self.weights_gib:7.2f} GiB",
            f"  - profile peak                        {self.activation_gib:7.2f} GiB "
            f"(forward {self.forward_gib:.2f} over {self.profile_tokens:,} tokens, sampler warm-up "
            f"{self.sampler_gib:.2f} over {min(self.max_num_seqs, self.profile_tokens)} seqs)",
            f"  - non-torch memory                    {self.non_torch_gib:7.2f} GiB",
            f"  - CUDA graphs                         {self.cudagraph_gib:7.2f} GiB",
            f"  = KV cache                            {self.kv_cache_gib:7.2f} GiB",
            f"  KV per token: 2 x {m.num_layers} layers x {kv_heads_per_rank(m, self.tensor_parallel_size)} "
            f"kv heads x {m.head_dim} x {_kv_dtype_bytes(self.kv_cache_dtype)} "
            f"{'byte' if _kv_dtype_bytes(self.kv_cache_dtype) == 1 else 'bytes'} = "
            f"{self.kv_bytes_per_token / 1024:g} KiB",
            f"  blocks = {self.num_blocks:,} of {self.block_size} tokens = {self.kv_cache_tokens:,} tokens",
            f"  max_model_len {self.max_model_len:,} -> KV room for {self.kv_concurrency:.2f} requests; "
            f"{self.max_concurrency:,} at once (max_num_seqs {self.max_num_seqs})",
        ]
        lines.append("  " + self.startup_line())
        lines += [f"  warning: {w}" for w in self.warnings if not w.startswith("does not fit")]
        lines.append("  " + self.message())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"VllmPlan({self.model.name} on {self.gpu.name}, {self.dtype}, gmu={self.gpu_memory_utilization}, "
                f"max_model_len={self.max_model_len:,}: weights {self.weights_gib:.2f} GiB, KV {self.kv_cache_gib:.2f} "
                f"GiB = {self.kv_cache_tokens:,} tokens, fits={self.fits})")

    __str__ = explain


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

    Orpheus makes ``ORPHEUS_TOKENS_PER_SECOND`` (cited: 7 tokens per 2048-sample SNAC frame at 24 kHz);
    128 prompt tokens cover the special tokens, the voice name and about 80 words of text.
    """
    positive(seconds, "seconds")
    positive(tokens_per_second, "tokens_per_second")
    positive(prompt_tokens, "prompt_tokens", integer=True, allow_zero=True)
    if not math.isfinite(seconds * tokens_per_second):
        raise ValueError(f"seconds x tokens_per_second = {seconds:g} x {tokens_per_second:g} is beyond any number of "
                         "tokens: give the length of audio one request must hold, e.g. 30")
    tokens = prompt_tokens + math.ceil(seconds * tokens_per_second)
    return -(-tokens // BLOCK_SIZE) * BLOCK_SIZE


def request_len(spec, seconds, tokens_per_second=ORPHEUS_TOKENS_PER_SECOND, prompt_tokens: int = 128
                ) -> tuple[int, str | None]:
    """max_model_len for ``seconds`` of audio, capped at the model's context: (tokens, why it was capped or None).

    vLLM refuses a max_model_len beyond max_position_embeddings, so a request derived from a length of audio
    is planned at the model's context instead, and the reason says how much audio that holds.
    """
    spec = _spec(spec)
    tokens = max_model_len_for_audio(seconds, tokens_per_second, prompt_tokens)
    limit = spec.max_position_embeddings
    if tokens <= limit:
        return tokens, None
    held = audio_seconds_for_tokens(limit, tokens_per_second, prompt_tokens)
    return limit, (f"capped at {spec.name}'s context: {seconds:g} s of audio at {tokens_per_second:.2f} tokens/s is "
                   f"{tokens:,} tokens, beyond max_position_embeddings={limit:,} (vLLM refuses more); planned for "
                   f"{limit:,} tokens = {held:.0f} s of audio per request: split longer text")


def audio_seconds_for_tokens(tokens: int, tokens_per_second=ORPHEUS_TOKENS_PER_SECOND, prompt_tokens: int = 128):
    """The inverse: seconds of audio one request of ``tokens`` can hold."""
    return max(0.0, (tokens - prompt_tokens) / tokens_per_second)


# --- the fitted part: what the GPU spends besides weights and KV ---------------------------------

@dataclass(frozen=True)
class GpuOverheads:
    """The GPU-side constants, each a physical quantity (``lessons.kv_sizing.fit_overheads`` refits them).

    - ``act_units``: live activations per batched token in the profile forward, in units of
      (hidden + intermediate / TP) x dtype bytes: the MLP holds its input, the residual and the hidden
      state (3 x hidden) beside gate_up (2 x intermediate) and its product (1 x intermediate): 3. The
      slope of the activation peak against max_model_len in vllm-project/vllm#10517 gives 3.0.
    - ``sampler_copies``: fp32 [max_num_seqs, vocab] tensors alive in a warm-up whose top-k/top-p sorts
      the vocabulary (logits, sorted values + int64 indices and the sort's buffers, softmax, ...): V0, and
      V1 before 0.17.0 without FlashInfer (``vllm_versions.sampler_sorts``); the logs that print the
      activation peak where the sampler sets it give 9.6-10.3. The sort's own buffer is 3 of them (fp32 key +
      int64 index, 12 B per element): a V1 0.8.0 warm-up without FlashInfer asks for 1.74 GiB = 1,024 x
      152,064 (QwQ-32B's vocabulary) x 12 B when it runs out of memory (vllm-project/vllm#15105).
    - ``sampler_copies_unsorted``: the same where nothing sorts (V1 from 0.17.0: Triton's top-k/top-p in
      place, or FlashInfer's sampler), counted in vllm/v1/sample (sampler.py, ops/topk_topp_sampler.py
      @v0.28.0): the model-dtype logits (0.5), their fp32 copy (1), then FlashInfer's masked logits and
      probabilities (2) or softmax probabilities and the exponential noise of random_sample (2): 3.5.
      Checked by one published log: Qwen2-7B, vLLM 0.10.1 with FlashInfer sampling on an A100 80GB (-0.5%,
      tests/data/vllm_logs.json qwen2-7b-a100-80gb-gmu025-flashinfer).
    - ``non_torch_gib``: CUDA context, cuBLAS/NCCL buffers outside torch's allocator (logs print -0.12
      to 0.35 GiB on one GPU); the value that minimises the worst error over the published logs.
    - ``cudagraph_gib``: vLLM's CUDA-graph estimate (v0.20+). Published estimates for dense and hybrid models
      read 0.09-0.58 GiB (noonghunna/club-3090#434, vllm-project/vllm#30515, gpustack/runner#251,
      wtdcode/vllm-backport#34): 0.3. Not validated: no published log held checks it (plans from 0.20.0 say so).
    """

    act_units: float = 3.0
    sampler_copies: float = 10.0
    sampler_copies_unsorted: float = 3.5
    non_torch_gib: float = 0.10
    cudagraph_gib: float = 0.3


DEFAULT_OVERHEADS = GpuOverheads()


def _version(v) -> tuple[int, int, int]:
    """(major, minor, micro) of a vLLM version string (kept for callers of the old helper)."""
    return tuple((versions.base(v).release + (0, 0))[:3])


def _model_dtype(spec: ModelSpec, gpu: GpuSpec, dtype, strict: bool) -> tuple[str, list[str]]:
    """The dtype to plan: an explicit request as asked (strict refuses what cannot run); only 'auto' chooses."""
    if isinstance(dtype, str) and dtype.strip().lower() == "auto":
        wanted = dtype_name(spec.config.get("torch_dtype") or spec.config.get("dtype") or "float16")
        if wanted == "float32":  # vLLM runs fp32 checkpoints in half precision unless asked
            wanted = "bfloat16" if gpu.bf16 else "float16"
        if pick_dtype(gpu) == "float32":  # GTX 16xx: what auto picks there, as vLLM's own logs show
            return "float32", [f"auto: {resolve_dtype('auto', gpu).reason}"]
        choice = resolve_dtype(wanted, gpu)
        if choice.dtype == wanted:
            return wanted, []
        notes = [f"auto: {choice.reason}"]
        if wanted == "bfloat16":
            notes.append("engine_kwargs() pass dtype='float16' explicitly: releases without the automatic "
                         "fallback raise on bfloat16 here (vllm-project/vllm#1157)")
        return choice.dtype, notes
    name = dtype_name(dtype)
    if name == "bfloat16" and not gpu.bf16:
        msg = (f"bfloat16 needs compute capability >= 8.0; {gpu.name} is {gpu.cc} and vLLM raises 'Bfloat16 is only "
               "supported on GPUs with compute capability of at least 8.0' (vllm/platforms/cuda.py "
               "supported_dtypes @v0.32.0)")
        if strict:
            raise ValueError(msg + ". Use dtype='float16' (same memory) or dtype='auto'.")
        return "float16", [msg + ": planned in float16, pass dtype='float16' (engine_kwargs() does)"]
    warnings = []
    if name == "float16" and resolve_dtype("auto", gpu).dtype == "float32":
        warnings.append(f"float16 on {gpu.name} planned as asked: vLLM accepts float16 from compute capability "
                        "6.0 (vllm-project/vllm vllm/platforms/cuda.py supported_dtypes @v0.32.0); this "
                        "package's dtype='auto' would pick float32 on GTX 16xx cards, a caution for which no "
                        "published source covers LLM inference")
    return name, warnings


@dataclass(frozen=True)
class _Resolved:
    """plan_vllm's arguments checked and resolved to what the engine will run (defaults filled in)."""

    spec: ModelSpec
    gpu: GpuSpec
    version: object  # packaging Version
    gmu: float
    dtype: str  # the model dtype the engine runs
    kv_name: str  # vLLM's kv_cache_dtype name ("auto" or explicit)
    kv_dtype: str  # the KV dtype the cache is stored in
    quantization: str | None
    max_model_len: int
    max_num_seqs: int
    profile_tokens: int
    tensor_parallel_size: int
    enforce_eager: bool
    v0: bool
    other_gib: float
    flashinfer_sampler: bool | None
    warnings: tuple[str, ...]


def _resolve(model, gpu, *, gpu_memory_utilization=None, dtype="auto", max_model_len=None, max_num_seqs=None,
             max_num_batched_tokens=None, tensor_parallel_size=1, enforce_eager=False, kv_cache_dtype="auto",
             vllm_version=None, engine="auto", strict=False, server=False, other_gib=0.0,
             quantization=None, flashinfer_sampler=None) -> _Resolved:
    spec, gpu = _spec(model), get_gpu(gpu)
    quantization = quant.scheme_name(quantization)
    version = versions.parse(vllm_version)
    gmu = versions.default_gmu(version) if gpu_memory_utilization is None else gpu_memory_utilization
    gmu = fraction(gmu, "gpu_memory_utilization")
    max_model_len = spec.max_position_embeddings if max_model_len is None else max_model_len
    positive(max_model_len, "max_model_len", integer=True)
    if max_model_len > spec.max_position_embeddings:
        raise ValueError(beyond_context(spec, max_model_len))
    for value, name in ((max_num_seqs, "max_num_seqs"), (max_num_batched_tokens, "max_num_batched_tokens")):
        if value is not None:
            positive(value, name, integer=True)
    positive(other_gib, "other_gib", allow_zero=True)
    if other_gib >= gpu.memory_gib:
        raise ValueError(f"other_gib={other_gib} is all of {gpu.name}'s {gpu.memory_gib:.2f} GiB: give the GiB other "
                         "processes hold when vLLM starts, less than the card's memory")
    tp = tensor_parallel_size
    kv_heads_per_rank(spec, tp)
    if not isinstance(kv_cache_dtype, str):
        raise TypeError("kv_cache_dtype must be a string such as 'auto' or 'fp8'")
    kv_name = _VLLM_KV_DTYPES.get(kv_cache_dtype.strip().lower())
    if kv_name is None:
        raise ValueError(f"Unknown kv_dtype for vLLM: use one of {', '.join(sorted(set(_VLLM_KV_DTYPES.values())))}")
    warnings = []
    outside = versions.support_warning(version)
    if outside:
        if strict:
            raise ValueError(outside + ". Pass a vllm_version in the modelled range, or strict=False for a guess.")
        warnings.append(outside)
    resolved, notes = _model_dtype(spec, gpu, dtype, strict)
    warnings += notes
    kv_dtype = resolved if kv_name == "auto" else kv_name
    release = _version(version)
    warnings += quant.check_kv_cache_dtype(kv_dtype, gpu, release) + quant.check_scheme(quantization, gpu, release)
    v0 = versions.engine_v0(version, gpu.compute_capability, engine)
    warnings += [n for n in [versions.fallback_note(version, v0, engine)] if n]
    default_tokens, default_seqs, chunked = versions.batch_defaults(version, v0, gpu.memory_gib, gpu.name,
                                                                   max_model_len, server)
    seqs = default_seqs if max_num_seqs is None else max_num_seqs
    tokens = default_tokens if max_num_batched_tokens is None else max_num_batched_tokens
    if not chunked and tokens < max_model_len:
        tokens = max_model_len  # V0 without chunked prefill must fit a whole prompt in one batch
    if flashinfer_sampler is not None and not isinstance(flashinfer_sampler, bool):
        raise TypeError("flashinfer_sampler must be None (a pip install's default), True or False")
    warnings += [n for n in [versions.sampler_note(version, v0, flashinfer_sampler),
                             versions.validation_note(version, v0)] if n]
    if quantization is not None and not v0:
        warnings.append(f"not validated: no published start-up log of a quantized model on vLLM's V1 engine checks "
                        f"this sum (the {quantization} weight bytes are checked against published logs, the "
                        "activation, non-torch and kernel-workspace terms of quantized kernels are not); treat the "
                        "KV figure as uncertain by a third")
    return _Resolved(spec, gpu, version, gmu, resolved, kv_name, kv_dtype, quantization, max_model_len, seqs, tokens,
                     tp, bool(enforce_eager), v0, other_gib, flashinfer_sampler, tuple(warnings))


def _memory(r: _Resolved, o: GpuOverheads) -> MemoryBudget:
    """vLLM's sum (gpu_worker.py determine_available_memory @v0.32.0): the budget and what it spends before the KV cache."""
    spec, gpu, tp, version = r.spec, r.gpu, r.tensor_parallel_size, r.version
    weights = quant.weight_bytes(spec, r.dtype, r.quantization, tp)
    forward = r.profile_tokens * DTYPE_BYTES[r.dtype] * o.act_units * (spec.hidden_size + spec.intermediate_size / tp) \
        + quant.dequant_transient_bytes(spec, r.quantization, gpu, _version(version), r.profile_tokens, r.dtype, tp)
    rows = min(r.max_num_seqs, r.profile_tokens)
    copies = o.sampler_copies if versions.sampler_sorts(version, r.v0, rows, r.flashinfer_sampler) else \
        o.sampler_copies_unsorted
    sampler = copies * rows * spec.vocab_size * 4 if versions.sampler_in_profile(version, r.v0) else 0.0
    graphs = o.cudagraph_gib * GIB if not r.enforce_eager and versions.cudagraph_in_budget(version) else 0.0
    total, other = gpu.memory_gib * GIB, r.other_gib * GIB
    budget = total * r.gmu - (other if versions.gmu_counts_other_processes(version, r.v0) else 0.0)
    startup_free = None
    if versions.startup_check(version, r.v0):
        startup_free = math.ceil(total * r.gmu)  # vllm/v1/worker/utils.py request_memory @v0.32.0 line 724
        free = total - other - CUDA_CONTEXT_GIB * GIB  # the snapshot is taken after vLLM's own CUDA context
        if free < startup_free:  # line 761: "Free memory on device ... is less than desired GPU memory utilization"
            raise ValueError(startup_refusal(gpu, r.gmu, r.other_gib, version))
    return MemoryBudget(gpu=gpu, gpu_memory_utilization=r.gmu, other=other, budget=budget, weights=weights,
                        weights_label=r.quantization or r.dtype, forward=forward, sampler=sampler,
                        non_torch=o.non_torch_gib * GIB, graphs=graphs,
                        kv_bytes_per_token=kv_bytes_per_token(spec, r.kv_dtype, tp), kv_label=r.kv_dtype,
                        startup_free=startup_free)


def beyond_context(spec: ModelSpec, max_model_len: int) -> str:
    """Why a max_model_len beyond the model's context is refused: vLLM refuses it itself."""
    return (f"max_model_len={max_model_len:,} is beyond {spec.name}'s context (max_position_embeddings="
            f"{spec.max_position_embeddings:,}), and vLLM refuses it ('User-specified max_model_len ... is greater than "
            "the derived max_model_len', vllm/config/model.py @v0.32.0 line 2645): use max_model_len <= "
            f"{spec.max_position_embeddings:,}, or split the text into shorter requests")


def max_startup_gmu(gpu, other_gib: float = 0.0) -> float:
    """The highest gpu_memory_utilization (2 decimals) vLLM's start-up check passes with ``other_gib`` held by others.

    The check (V1 from 0.9.1, ``vllm_versions.startup_check``) needs ``total x gmu`` free after vLLM's own CUDA
    context (``CUDA_CONTEXT_GIB``) exists. 0 or less: vLLM cannot start at any share.
    """
    gpu = get_gpu(gpu)
    positive(other_gib, "other_gib", allow_zero=True)
    return math.floor((gpu.memory_gib - other_gib - CUDA_CONTEXT_GIB) / gpu.memory_gib * 100) / 100


def startup_refusal(gpu, gmu: float, other_gib: float, version) -> str:
    """The one line saying why vLLM refuses to start, and what to change."""
    total = gpu.memory_gib
    allowed = max_startup_gmu(gpu, other_gib)
    fix = (f"use gpu_memory_utilization <= {allowed}" if allowed > 0 else
           f"free the card: even gpu_memory_utilization=0.01 needs more than the {total - other_gib:.2f} GiB free")
    return (f"vLLM {versions.base(version)} refuses to start on {gpu.name}: it needs gpu_memory_utilization x total = "
            f"{total * gmu:.2f} GiB free once its own CUDA context (~{CUDA_CONTEXT_GIB:.2f} GiB) exists, but with "
            f"{other_gib:.2f} GiB held by other processes only {total - other_gib - CUDA_CONTEXT_GIB:.2f} GiB is "
            f"(vllm/v1/worker/utils.py request_memory): {fix}, or free memory (`nvidia-smi` lists what holds it)")


# Never plan above 0.95, and never above what vLLM's start-up check passes (max_startup_gmu).
SAFE_GMU_CEILING = 0.95


def gmu_ceiling(gpu, other_gib: float = 0.0) -> float:
    """The highest gpu_memory_utilization we plan with: 0.95, less where vLLM's start-up check needs it.

    ``other_gib`` is what other processes hold on the card when vLLM starts. 0 or less: nothing can start.
    """
    return min(SAFE_GMU_CEILING, max_startup_gmu(gpu, other_gib))


def cards_that_fit(model, *, bigger_than=None, concurrency: int = 1, overheads=None, **plan_kwargs) -> list[str]:
    """Catalog GPUs, smallest first, on which these settings hold ``concurrency`` requests of max_model_len.

    The one rule for "which card would fit": the plan's own sum on each card at its ``gmu_ceiling`` (whole
    blocks per request, no more requests than max_num_seqs). ``bigger_than`` (a GPU) keeps only bigger cards.
    """
    spec = _spec(model)
    overheads = DEFAULT_OVERHEADS if overheads is None else overheads
    plan_kwargs.pop("gpu_memory_utilization", None)
    floor = 0.0 if bigger_than is None else get_gpu(bigger_than).memory_gib
    out = []
    for key, card in sorted(GPUS.items(), key=lambda kv: kv[1].memory_gib):
        if card.memory_gib <= floor:
            continue
        ceiling = gmu_ceiling(card, plan_kwargs.get("other_gib", 0.0))
        if ceiling < 0.01:
            continue
        try:
            r = _resolve(spec, card, gpu_memory_utilization=ceiling, **plan_kwargs)
            m = _memory(r, overheads)
        except ValueError:  # a scheme or dtype this card cannot run
            continue
        if not m.weights_fit or m.activation > m.total:
            continue
        blocks = kv_blocks(m.kv_room, spec, r.kv_dtype, r.tensor_parallel_size)
        per_request = -(-r.max_model_len // BLOCK_SIZE)
        if blocks // per_request >= concurrency and r.max_num_seqs >= concurrency:
            out.append(key)
    return out


def vllm_budget(model, gpu, *, overheads: GpuOverheads = DEFAULT_OVERHEADS, **plan_kwargs) -> MemoryBudget:
    """The memory sum ``plan_vllm`` does for these arguments, also where the weights alone exceed the budget.

    Takes ``plan_vllm``'s keyword arguments. ``plan_vllm`` builds its plan from this same sum, so a
    search (``fit_vllm``) can read what a setting needs without planning on a pretend GPU.
    """
    return _memory(_resolve(model, gpu, **plan_kwargs), overheads)


def plan_vllm(model, gpu, *, gpu_memory_utilization=None, dtype="auto", max_model_len=None, max_num_seqs=None,
              max_num_batched_tokens=None, tensor_parallel_size=1, enforce_eager=False, kv_cache_dtype="auto",
              vllm_version=None, engine="auto", strict=False, server=False, other_gib=0.0,
              overheads: GpuOverheads = DEFAULT_OVERHEADS, quantization=None, flashinfer_sampler=None) -> VllmPlan:
    """Predict vLLM's KV cache for ``model`` (ModelSpec, known name or config dict) on ``gpu``.

    ``vllm_version`` picks the engine's behaviour (None = ``vllm_versions.COLAB_VLLM``, the release the
    notebooks install on Colab; see ``colab_tts.vllm_versions`` for what changed where);
    ``gpu_memory_utilization=None`` is that release's default. ``engine`` ("auto", "v0", "v1") is vLLM's
    engine: "auto" is that release's default (V1 from 0.8.0 on CC >= 8.0, from 0.10.2 below; no V0 from
    0.11.0); state "v0" where a 0.8-0.10 run fell back to V0 for a feature V1 lacked (its log shows
    "# GPU blocks"). Below compute capability 8.0 the engine
    arguments carry what vLLM needs there (``vllm_versions.below_sm80``, with its reason in ``warnings``). An explicit ``dtype`` is planned as asked (a risk goes into ``warnings``); only
    ``"auto"`` chooses. ``other_gib`` is memory other processes or stages hold on the GPU when vLLM
    starts. With tensor parallelism every rank holds 1/TP of the weights and KV heads. ``server=True``
    uses the OpenAI server's batch defaults. ``strict=True`` raises ValueError instead of warning: for a
    max_model_len that does not fit, bfloat16 below CC 8.0, or a version outside the modelled range.
    ``quantization`` (None, "awq", "gptq", "fp8", "bitsandbytes") narrows the linear layers
    (colab_tts.quantization); it and an fp8 ``kv_cache_dtype`` are checked against the compute
    capabilities vLLM allows them on, and refused with a ValueError naming the fix.
    ``flashinfer_sampler`` (None, True, False): whether FlashInfer samples, which sets the sampler warm-up
    (``vllm_versions.sampler_sorts``); None is a plain pip install of that release. The sum itself is
    ``vllm_budget``; every term of the plan is checked against the card (``vllm_plan.check_terms``).
    """
    r = _resolve(model, gpu, gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, max_model_len=max_model_len,
                 max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                 tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager,
                 kv_cache_dtype=kv_cache_dtype, vllm_version=vllm_version, engine=engine, strict=strict,
                 server=server, other_gib=other_gib, quantization=quantization, flashinfer_sampler=flashinfer_sampler)
    m = _memory(r, overheads)
    spec, gpu, gmu, tp, max_model_len, version = r.spec, r.gpu, r.gmu, r.tensor_parallel_size, r.max_model_len, r.version
    warnings = list(r.warnings)
    if not m.weights_fit:
        fit = cards_that_fit(spec, max_model_len=max_model_len, dtype=dtype, max_num_seqs=max_num_seqs,
                             max_num_batched_tokens=max_num_batched_tokens, tensor_parallel_size=tp,
                             enforce_eager=enforce_eager, kv_cache_dtype=kv_cache_dtype, vllm_version=vllm_version,
                             engine=engine, server=server, other_gib=other_gib, overheads=overheads,
                             quantization=quantization, flashinfer_sampler=flashinfer_sampler)
        raise ValueError(
            f"{spec.name} does not fit on {gpu.name} at all: its {m.weights_label} weights ({m.weights / GIB:.2f} GiB) "
            f"exceed the {max(m.budget, 0) / GIB:.2f} GiB budget (gpu_memory_utilization={gmu}) by "
            f"{(m.weights - m.budget) / GIB:.2f} GiB. Catalog GPUs that fit it with max_model_len={max_model_len:,} "
            "(each at its highest safe gpu_memory_utilization, planner.gmu_ceiling): "
            f"{', '.join(fit) or 'none'}; or use tensor parallelism or a quantized checkpoint.")
    if m.activation > m.total:
        raise ValueError(
            f"vLLM's profile run for {spec.name} needs {m.activation / GIB:.2f} GiB of activations (forward over "
            f"{r.profile_tokens:,} tokens {m.forward / GIB:.2f} GiB, sampler warm-up over {r.max_num_seqs} seqs "
            f"{m.sampler / GIB:.2f} GiB), more than {gpu.name}'s {gpu.memory_gib:.2f} GiB, so it runs out of memory "
            "before sizing the KV cache: lower max_num_batched_tokens or max_num_seqs")
    if m.graphs == 0 and not r.enforce_eager:
        warnings.append("CUDA graphs are captured after the KV cache is sized and come out of the "
                        f"(1 - gpu_memory_utilization) = {(1 - gmu) * gpu.memory_gib:.2f} GiB slice")
    blocks = kv_blocks(m.kv_room, spec, r.kv_dtype, tp, BLOCK_SIZE)
    settings = {"dtype": r.dtype, "gpu_memory_utilization": gmu, "max_model_len": max_model_len,
                "max_num_seqs": r.max_num_seqs, "tensor_parallel_size": tp, "enforce_eager": r.enforce_eager}
    if max_num_batched_tokens is not None:
        settings["max_num_batched_tokens"] = max_num_batched_tokens
    if r.kv_name != "auto":
        settings["kv_cache_dtype"] = r.kv_name
    if r.quantization is not None:
        settings["quantization"] = r.quantization
    below, note = versions.below_sm80(version, gpu.compute_capability, r.dtype)  # CC < 8.0: T4, V100
    settings.update(below)
    warnings = ([note] if note else []) + warnings  # what the GPU itself needs is read first
    plan = VllmPlan(
        model=spec, gpu=gpu, dtype=r.dtype, kv_cache_dtype=r.kv_dtype, gpu_memory_utilization=gmu,
        max_model_len=max_model_len, max_num_seqs=r.max_num_seqs, max_num_batched_tokens=r.profile_tokens,
        profile_tokens=r.profile_tokens, tensor_parallel_size=tp, enforce_eager=r.enforce_eager,
        vllm_version=str(version), v0=r.v0, budget_gib=max(m.budget, 0.0) / GIB, weights_gib=m.weights / GIB,
        activation_gib=m.activation / GIB, non_torch_gib=m.non_torch / GIB, cudagraph_gib=m.graphs / GIB,
        kv_cache_gib=blocks * page_bytes(spec, r.kv_dtype, tp) * spec.num_layers / GIB, num_blocks=blocks,
        block_size=BLOCK_SIZE, kv_bytes_per_token=m.kv_bytes_per_token, engine_settings=settings,
        warnings=warnings, forward_gib=m.forward / GIB, sampler_gib=m.sampler / GIB, other_gib=other_gib,
        quantization=r.quantization,
        startup_free_gib=None if m.startup_free is None else m.startup_free / GIB,
        context_gib=0.0 if m.startup_free is None else CUDA_CONTEXT_GIB,
        inputs=dict(gpu_memory_utilization=gmu, dtype=dtype, max_num_seqs=max_num_seqs,
                    max_num_batched_tokens=max_num_batched_tokens, tensor_parallel_size=tp,
                    enforce_eager=r.enforce_eager, kv_cache_dtype=r.kv_name, vllm_version=vllm_version, engine=engine,
                    server=bool(server), other_gib=other_gib, overheads=overheads, quantization=r.quantization,
                    flashinfer_sampler=flashinfer_sampler))
    if not plan.fits:
        if strict:
            raise ValueError(plan.message())
        plan.warnings.append(f"does not fit: one request of {max_model_len:,} tokens needs {plan.shortfall_gib:.2f} GiB "
                             "more KV cache (plan.message() says what would make it fit)")
    return plan


def lowest_gmu_for(model, gpu, step: float = 0.01, **plan_kwargs) -> float | None:
    """The lowest gpu_memory_utilization (on a ``step`` grid) at which the plan fits; None if even 1.0 does not."""
    positive(step, "step")
    plan_kwargs.pop("gpu_memory_utilization", None)
    for i in range(1, int(round(1 / step)) + 1):
        gmu = round(i * step, 4)
        try:
            if plan_vllm(model, gpu, gpu_memory_utilization=gmu, **plan_kwargs).fits:
                return gmu
        except ValueError:  # the weights alone exceed this budget
            continue
    return None


def _largest_fitting_len(plan: VllmPlan) -> int:
    """Largest L with capacity(L) >= L. In V0 the profile run grows with L, so search, don't just read it off."""
    args = dict(plan.inputs)

    def capacity(length: int) -> int:
        try:
            return plan_vllm(plan.model, plan.gpu, max_model_len=length, **args).kv_cache_tokens
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
