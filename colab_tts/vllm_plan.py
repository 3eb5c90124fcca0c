"""The answer ``colab_tts.kv_cache.plan_vllm`` gives: vLLM's memory budget, the KV cache it gets, and what to change.

Kept apart from the planner so the arithmetic (``kv_cache``) reads on its own; re-exported there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .hardware import GpuSpec
from .models import ModelSpec
from .units import GIB


class PlanInvariantError(AssertionError):
    """A plan term outside what the card allows (negative, or above the card): a bug in the planner, such as a
    units slip, never bad input. Raised where a plan is built instead of printing an impossible plan."""


@dataclass(frozen=True)
class MemoryBudget:
    """vLLM's memory sum for one set of engine settings, in bytes, before the KV cache is cut into blocks.

    ``budget`` is total x gpu_memory_utilization (less what other processes hold, where the release
    counts them); the KV cache gets what the weights, the profile peak (the larger of the forward pass
    and the sampler's warm-up), the memory outside torch and the CUDA-graph estimate leave of it.
    ``kv_cache.vllm_budget`` computes it and ``plan_vllm`` builds every plan from it.
    """

    gpu: GpuSpec
    gpu_memory_utilization: float
    other: float
    budget: float
    weights: float
    weights_label: str  # the quantization scheme, else the dtype
    forward: float
    sampler: float
    non_torch: float
    graphs: float
    kv_bytes_per_token: int
    kv_label: str  # the dtype the KV cache is stored in
    startup_free: float | None = None  # bytes vLLM's start-up check needs free (None: the release has no check)

    @property
    def total(self) -> float:
        return self.gpu.memory_gib * GIB

    @property
    def activation(self) -> float:
        return max(self.forward, self.sampler)

    @property
    def fixed(self) -> float:
        """Everything but the KV cache."""
        return self.weights + self.activation + self.non_torch + self.graphs

    @property
    def kv_room(self) -> float:
        # term by term, in the order vLLM subtracts them: the block count floors this, so keep its rounding
        return max(0.0, self.budget - self.weights - self.activation - self.non_torch - self.graphs)

    @property
    def weights_fit(self) -> bool:
        return self.weights <= self.budget

    def need_gib(self, kv_tokens: int) -> float:
        """GiB the budget must hold for ``kv_tokens`` of KV cache besides everything else."""
        return (self.fixed + self.kv_bytes_per_token * kv_tokens) / GIB


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
        return _kv()._largest_fitting_len(self)

    def replan(self, **changes) -> VllmPlan:
        """The same plan with some of plan_vllm's arguments changed."""
        args = dict(self.inputs, max_model_len=self.max_model_len)
        args.update(changes)
        return _kv().plan_vllm(self.model, self.gpu, **args)

    def fixes(self) -> list[str]:
        """Single changes that would make this plan fit, each checked by re-planning (empty if it fits)."""
        if self.fits:
            return []
        out, seqs = [], self.max_num_seqs
        if (best := self.largest_max_model_len()) >= self.block_size:
            audio = (f" ({_kv().audio_seconds_for_tokens(best):.0f} s of Orpheus audio)"
                     if self.model.name == "orpheus-3b" else "")  # the audio rate is Orpheus's alone
            out.append(f"max_model_len <= {best:,}{audio}")
        gmu = _kv().lowest_gmu_for(self.model, self.gpu, **{**self.inputs, "gpu_memory_utilization": None,
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
            gmu = _kv().lowest_gmu_for(self.model, self.gpu, **both)
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
            f"  KV per token: 2 x {m.num_layers} layers x {_kv().kv_heads_per_rank(m, self.tensor_parallel_size)} "
            f"kv heads x {m.head_dim} x {_kv()._kv_dtype_bytes(self.kv_cache_dtype)} B = "
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


def _kv():
    from . import kv_cache

    return kv_cache
