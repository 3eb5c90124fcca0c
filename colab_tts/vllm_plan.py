"""vLLM's memory budget for one set of engine settings: what it spends before the KV cache (the budget layer).

``colab_tts.planner`` fills it in (``vllm_budget``) and builds every plan from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .hardware import GpuSpec
from .units import GIB


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
