"""What ``python -m colab_tts plan`` prints for a model across the GPU catalog, each row one plan.

Every figure of a row comes from the one plan it names (``plan_vllm``, or ``fit_vllm`` with ``fit=True``), and
the footer's verdict is read from the rows, so the table and the footer cannot disagree.
"""

from __future__ import annotations

from . import vllm_versions as versions
from .hardware import GPUS, other_gib_now
from .kv_cache import lowest_gmu_for, plan_vllm
from .kv_fit import fit_vllm


def _held(key: str, other_gib, own_context: bool = True) -> float:
    return other_gib_now(key, own_context=own_context) if other_gib is None else other_gib


def catalog_rows(spec, max_model_len: int, *, gpus=None, other_gib=None, own_context: bool = True,
                 **plan_kwargs) -> list[dict]:
    """One row per GPU: ``plan_vllm`` at the share asked (vLLM's default if none), and the lowest share that fits.

    ``other_gib`` None reads what others hold on the card present (``hardware.other_gib_now``, with
    ``own_context``), 0 elsewhere. The lowest share is searched also where the share asked is refused (vLLM
    would not start at it, or the weights exceed it): a lower or a higher share may fit.
    """
    rows = []
    for key in list(GPUS) if gpus is None else list(gpus):
        held = _held(key, other_gib, own_context)
        other_kwargs = {k: v for k, v in plan_kwargs.items() if k != "gpu_memory_utilization"}
        try:
            plan = plan_vllm(spec, key, max_model_len=max_model_len, other_gib=held, **plan_kwargs)
        except ValueError as err:  # the weights exceed the budget, or vLLM would not start at this share
            asked = plan_kwargs.get("gpu_memory_utilization")
            asked = versions.default_gmu(versions.parse(plan_kwargs.get("vllm_version"))) if asked is None else asked
            rows.append({"gpu": key, "fits": False, "gpu_memory_utilization": asked,
                         "KV tokens": 0, "at once": 0, "largest max_model_len": 0,
                         "lowest share": lowest_gmu_for(spec, key, max_model_len=max_model_len, other_gib=held,
                                                        **other_kwargs),
                         "note": str(err).split(":")[0]})
            continue
        lowest = plan.gpu_memory_utilization if plan.fits else lowest_gmu_for(
            spec, key, max_model_len=max_model_len, other_gib=held, **other_kwargs)
        rows.append({"gpu": key, "fits": plan.fits, "gpu_memory_utilization": plan.gpu_memory_utilization,
                     "weights GiB": plan.weights_gib, "KV tokens": plan.kv_cache_tokens, "at once": plan.max_concurrency,
                     "max_num_seqs": plan.max_num_seqs, "largest max_model_len": plan.largest_max_model_len(),
                     "lowest share": lowest, "note": plan.dtype})
    return rows


def fit_rows(spec, max_model_len: int, *, gpus=None, other_gib=None, own_context: bool = True,
             **fit_kwargs) -> list[dict]:
    """One row per GPU: ``fit_vllm``'s plan, or the first clause of why nothing fits."""
    rows = []
    for key in list(GPUS) if gpus is None else list(gpus):
        try:
            plan = fit_vllm(spec, key, max_model_len=max_model_len, other_gib=_held(key, other_gib, own_context),
                            **fit_kwargs)
        except ValueError as err:
            rows.append({"gpu": key, "fits": False, "gpu_memory_utilization": None, "KV tokens": 0, "at once": 0,
                         "settings": "", "tokens/s": None, "note": str(err).split(" - ")[0][:120]})
            continue
        rows.append({"gpu": key, "fits": plan.fits, "gpu_memory_utilization": plan.gpu_memory_utilization,
                     "KV tokens": plan.kv_cache_tokens, "at once": plan.max_concurrency,
                     "settings": f"{plan.quantization or plan.dtype}, KV {plan.kv_cache_dtype}, max_num_seqs="
                                 f"{plan.max_num_seqs}" + (", eager" if plan.enforce_eager else ""),
                     "tokens/s": round(plan.tokens_per_second), "note": ""})
    return rows


def verdict(rows: list[dict]) -> str:
    """The footer, read from the rows: where it fits at the share asked, and where only with a raised or lowered one
    (lowered: vLLM's start-up check refuses the share asked with the memory others hold)."""
    at_share = [r["gpu"] for r in rows if r["fits"]]
    moved = {"raised": [], "lowered": []}
    for r in rows:
        if not r["fits"] and r.get("lowest share"):
            asked = r.get("gpu_memory_utilization")
            moved["lowered" if asked is not None and r["lowest share"] < asked else "raised"].append(
                f"{r['gpu']} (gpu_memory_utilization {r['lowest share']:.2f})")
    return ("fits on: " + (", ".join(at_share) or "none") + " at the share in the table"
            + "".join(f"; only with a {how} share: {', '.join(gpus)}" for how, gpus in moved.items() if gpus))
