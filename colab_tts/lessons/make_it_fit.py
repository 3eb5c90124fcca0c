"""Notebook 02's "make it fit an 8 GB card" section: fit_vllm's plans side by side, the cheapest settings
that fit across the catalog, and what the settings buy in speed (bandwidth roofline, a ceiling).

Every figure here is *predicted*: memory by ``plan_vllm`` (whose leave-one-out error the notebook prints),
speed by the bandwidth roofline ``kv_fit.decode_tokens_per_second`` (bytes read per decode step over the
GPU's bandwidth; a ceiling real engines reach part of: ``roofline_caveat`` sets a cited measurement beside
it). The runtime (``colab_tts.kv_fit``) chooses; this module only lays its answers out.
"""

from __future__ import annotations

from ..cited import cited
from ..kv_fit import QUALITIES, FitPlan, audio_rate, fit_vllm
from ..vllm_versions import batch_defaults, default_gmu, parse
from . import orpheus_speed

TTS_MODELS = ("orpheus-3b", "gpt-sovits-v2-t2s", "indextts2-gpt", "metavoice-1b")
FIT_GPUS = ("T4", "RTX-3070", "RTX-4060", "RTX-3060-12GB", "L4", "A100-40GB")


def _request(model: str, audio_seconds: float) -> dict:
    """fit_vllm's request length: seconds of audio, or the whole context for a decoder with no known rate."""
    if audio_rate(model) is None:
        from ..models import ModelSpec

        return dict(max_model_len=ModelSpec.known(model).max_position_embeddings)
    return dict(audio_seconds=audio_seconds)


def quality_plans(model="orpheus-3b", gpu="RTX-3070", audio_seconds=30, qualities=tuple(QUALITIES), **kwargs
                  ) -> dict[str, FitPlan | str]:
    """fit_vllm at each quality: the plan, or the refusal's sentence where nothing fits."""
    out = {}
    for quality in qualities:
        try:
            out[quality] = fit_vllm(model, gpu, quality=quality, **_request(model, audio_seconds), **kwargs)
        except ValueError as err:
            out[quality] = str(err)
    return out


def changes(plan: FitPlan) -> str:
    """What the plan changes against vLLM's defaults, in engine-argument words ("defaults" if nothing)."""
    version = parse(plan.vllm_version)
    tokens, seqs, _ = batch_defaults(version, plan.v0, plan.gpu.memory_gib, plan.gpu.name, plan.max_model_len, False)
    kw = plan.engine_kwargs()
    out = []
    if kw.get("quantization"):
        out.append(f"quantization={kw['quantization']}")
    if kw.get("kv_cache_dtype"):
        out.append(f"kv_cache_dtype={kw['kv_cache_dtype']}")
    if kw["max_num_seqs"] != seqs:
        out.append(f"max_num_seqs={kw['max_num_seqs']}")
    if kw.get("max_num_batched_tokens", tokens) != tokens:
        out.append(f"max_num_batched_tokens={kw['max_num_batched_tokens']}")
    if kw["enforce_eager"]:
        out.append("enforce_eager")
    if kw["gpu_memory_utilization"] != default_gmu(version):
        out.append(f"gpu_memory_utilization={kw['gpu_memory_utilization']}")
    return ", ".join(out) or "vLLM's defaults"


def plan_rows(plans: dict) -> list[dict]:
    """One row per quality: the settings, the memory and the predicted speed."""
    rows = []
    for quality, plan in plans.items():
        if isinstance(plan, str):
            rows.append({"quality": quality, "settings": "nothing fits", "weights GiB": None, "KV tokens": None,
                         "requests at once": None, "tokens/s": None, "RTF": None})
            continue
        rows.append({"quality": quality, "settings": changes(plan), "weights GiB": plan.weights_gib,
                     "KV tokens": plan.kv_cache_tokens, "requests at once": round(plan.max_concurrency, 1),
                     "tokens/s": round(plan.tokens_per_second), "RTF": plan.real_time_factor})
    return rows


def quality_lines(plans: dict) -> list[str]:
    """What is known about each plan's quality, with its source (the person chooses, not the solver)."""
    return [f"{q}: {p.quality_note}" if not isinstance(p, str) else f"{q}: {p}" for q, p in plans.items()]


def cheapest_fit(model: str, gpu, audio_seconds=30) -> tuple[str, FitPlan | str]:
    """The least quality given up that fits (lossless, then 8-bit, then 4-bit), and fit_vllm's plan there."""
    last = ""
    for quality in QUALITIES:
        try:
            return quality, fit_vllm(model, gpu, quality=quality, **_request(model, audio_seconds))
        except ValueError as err:
            last = str(err)
            if "beyond" in last:  # the request itself is too long for the model: no quality helps
                break
    return "none", last


def cheapest_fit_table(models=TTS_MODELS, gpus=FIT_GPUS, audio_seconds=30) -> list[dict]:
    """Per model and GPU: the cheapest settings that fit one request, as vLLM engines (all predicted)."""
    rows = []
    for model in models:
        for key in gpus:
            quality, plan = cheapest_fit(model, key, audio_seconds)
            if isinstance(plan, str):
                why = "request beyond its context" if "beyond" in plan else plan.split(" - try")[0].split("; the")[0]
                rows.append({"model": model, "GPU": key, "quality": quality, "settings": why, "weights GiB": None,
                             "tokens/s": None, "RTF": None})
                continue
            rows.append({"model": model, "GPU": key, "quality": quality, "settings": changes(plan),
                         "weights GiB": plan.weights_gib, "tokens/s": round(plan.tokens_per_second),
                         "RTF": plan.real_time_factor})
    return rows


_BITS = {None: 16, "fp8": 8, "awq": 4, "gptq": 4, "bitsandbytes": 4}


def realtime_rows(model="orpheus-3b", gpu="T4", audio_seconds=30) -> list[dict]:
    """Batch-1 speed per quality against the rate real time needs (bandwidth roofline, predicted), and what
    engines reach at the cited shares for that weight format (``orpheus_speed.efficiency_band``, as in 01)."""
    rows = []
    for quality, plan in quality_plans(model, gpu, audio_seconds).items():
        if isinstance(plan, str):
            rows.append({"quality": quality, "weights": "-", "tokens/s": None, "needed": None, "RTF": None,
                         "real time": "does not fit", "cited share": None, "engines reach tokens/s": None})
            continue
        lo, hi = orpheus_speed.efficiency_band(_BITS[plan.quantization])
        rows.append({"quality": quality, "weights": plan.quantization or plan.dtype,
                     "tokens/s": round(plan.tokens_per_second, 1), "needed": round(plan.audio_tokens_per_second, 2),
                     "RTF": plan.real_time_factor,
                     "real time": orpheus_speed.real_time_verdict(plan.tokens_per_second, _BITS[plan.quantization]),
                     "cited share": f"{lo:.0%}-{hi:.0%}",
                     "engines reach tokens/s": f"{plan.tokens_per_second * lo:.0f}-{plan.tokens_per_second * hi:.0f}"})
    return rows


def batching_rows(model="orpheus-3b", gpu="T4", audio_seconds=30, quality="lossless",
                  concurrency=(1, 2, 4, 8, 16, 32)) -> list[dict]:
    """Aggregate and per-stream tokens/s as concurrent requests share each weight read (bandwidth roofline)."""
    rows = []
    for n in concurrency:
        try:
            plan = fit_vllm(model, gpu, quality=quality, concurrency=n, **_request(model, audio_seconds))
        except ValueError:
            rows.append({"requests": n, "fits": "no", "aggregate tokens/s": None, "per stream": None,
                         "real-time streams": None})
            continue
        per_stream = plan.stream_tokens_per_second
        rate = plan.audio_tokens_per_second
        rows.append({"requests": n, "fits": "yes", "aggregate tokens/s": round(plan.aggregate_tokens_per_second),
                     "per stream": round(per_stream, 1),
                     "real-time streams": n if rate and orpheus_speed.real_time_verdict(
                         per_stream, _BITS[plan.quantization]) == "yes" else 0})
    return rows


def compute_ceiling_tokens_per_s(model="orpheus-3b", gpu="T4") -> float:
    """The compute roofline: peak fp16 FLOP/s over 2 x parameters per token (``orpheus_speed.compute_ceiling``)."""
    return orpheus_speed.compute_ceiling(gpu, model)


def cited_share() -> float:
    """The share of the bandwidth roofline the published Orpheus vLLM run reached (A10G, 16-bit, batch 1):
    ``orpheus_speed.a10g_share``, the one value notebooks 01 and 02 show."""
    return orpheus_speed.a10g_share()


def roofline_caveat() -> str:
    """The roofline is a ceiling: a cited GPU measurement beside the same model's prediction for that GPU."""
    c = cited("orpheus_speed.a10g_vllm_tokens_per_s")
    return (f"a ceiling, not a measurement: on an A10G the same roofline predicts {orpheus_speed.ceiling('A10G'):.0f} "
            f"tokens/s for 16-bit Orpheus at batch 1; a published vLLM run measured {c.value} (cited: {c.source}, "
            f"{c.date}), {cited_share():.0%} of it. The 'engines reach' column applies the cited shares per weight "
            "format (16-bit: this run and gpt-fast; quantized: gpt-fast's 8- and 4-bit runs), not a measurement on this card "
            "(none is published for this card).")
