"""How big vLLM's KV cache will be, predicted before vLLM starts, and the settings that make a model fit.

The public face of the planner's layers, each importing only those before it: the GPU catalog
(``hardware``), the model spec (``models``), the weight formats (``quantization``), the memory budget
(``vllm_plan``), the plan (``planner``: ``plan_vllm``, ``VllmPlan``), the fit (``kv_fit``: ``fit_vllm``).
Every name stays importable here; the code lives in those modules.
"""

from .kv_fit import FitPlan, fit_vllm  # noqa: F401
from .planner import (  # noqa: F401
    BLOCK_SIZE,
    CUDA_CONTEXT_GIB,
    DEFAULT_OVERHEADS,
    LATEST_VLLM,
    ORPHEUS_TOKENS_PER_SECOND,
    SAFE_GMU_CEILING,
    GpuOverheads,
    PlanInvariantError,
    VllmPlan,
    _kv_dtype_bytes,
    _largest_fitting_len,
    _spec,
    _version,
    audio_seconds_for_tokens,
    beyond_context,
    cards_that_fit,
    check_terms,
    gmu_ceiling,
    kv_blocks,
    kv_bytes_per_token,
    kv_heads_per_rank,
    logged_kv_tokens,
    lowest_gmu_for,
    max_model_len_for_audio,
    max_startup_gmu,
    page_bytes,
    plan_vllm,
    request_len,
    startup_refusal,
    vllm_budget,
)
from .vllm_plan import MemoryBudget  # noqa: F401
