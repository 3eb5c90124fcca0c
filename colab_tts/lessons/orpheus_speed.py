"""Notebook 01's speed lesson: how fast Orpheus can ever decode on a GPU, and what real time would take.

Every figure says its kind: *predicted* by the bandwidth roofline, *cited* (a published measurement, with
its source), or *measured* (this run, on a named device). The roofline is the one notebook 02 uses,
``kv_fit.decode_tokens_per_second`` on vLLM's plan for the weight format (8-bit: fp8, 4-bit: GPTQ; vLLM
keeps the embedding and the output matrix in 16 bits), so a ceiling is one number in both notebooks.
A roofline is a ceiling; what an engine reaches is a share of it, its bandwidth efficiency, taken only from
cited runs and per weight format: 16-bit between Orpheus on vLLM on an A10G (Orpheus-TTS issue #53) and
gpt-fast on an A100-80GB; 8- and 4-bit between gpt-fast's 4-bit and 8-bit runs (its README @32971d3).
"""

from __future__ import annotations

from functools import cache

from ..cited import cited, value
from ..hardware import GPUS, get_gpu
from ..kv_cache import max_model_len_for_audio, plan_vllm
from ..kv_fit import decode_tokens_per_second, fit_vllm
from ..snac_decode import TOKENS_PER_SECOND

MODEL = "orpheus-3b"
AUDIO_SECONDS = 30  # the request the ceilings assume (notebook 02's default): the KV read is half of it
QUALITY = {16: "lossless", 8: "8bit", 4: "4bit"}  # fit_vllm's quality for each weight width
SCHEME = {16: None, 8: "fp8", 4: "gptq"}  # the weight format when fit_vllm finds nothing that fits
ROOFLINE = "predicted: roofline (bandwidth / bytes read per step, vLLM's layout)"
_GPT_FAST = {16: "gpt_fast_llama2_7b_fp16_gbs", 8: "gpt_fast_llama2_7b_int8_gbs", 4: "gpt_fast_llama2_7b_int4_gbs"}
_GPT_FAST_GPU = "A100-80GB"  # what gpt-fast ran on
_A10G = "orpheus_speed.a10g_vllm_tokens_per_s"


@cache
def _plan(gpu, bits: int, audio_seconds: float, model):
    try:  # the plan notebook 02 shows for that quality (fit_vllm: an fp8 KV cache too where the GPU allows it)
        return fit_vllm(model, gpu, quality=QUALITY[bits], audio_seconds=audio_seconds)
    except ValueError:  # nothing fits this card: the ceiling of vLLM's defaults in that weight format
        return plan_vllm(model, gpu, dtype="float16", quantization=SCHEME[bits],
                         max_model_len=max_model_len_for_audio(audio_seconds))


def plan(gpu, bits: int = 16, audio_seconds: float = AUDIO_SECONDS, model=MODEL):
    """vLLM's plan for Orpheus in ``bits``-bit weights on ``gpu`` for requests of ``audio_seconds``: the one
    ``fit_vllm`` finds at that quality (notebook 02's), else vLLM's defaults in that format."""
    if bits not in SCHEME:
        raise ValueError(f"bits must be one of {sorted(SCHEME)} (16-bit, fp8 or 4-bit GPTQ weights), got {bits!r}")
    return _plan(get_gpu(gpu), bits, audio_seconds, model)


def compute_ceiling(gpu, model=MODEL) -> float:
    """The compute roofline: peak fp16 FLOP/s over 2 x parameters per token (batched decode's other bound)."""
    from ..models import ModelSpec

    spec = ModelSpec.known(model) if isinstance(model, str) else model
    return get_gpu(gpu).fp16_tflops * 1e12 / (2 * spec.num_params)


def ceiling(gpu, bits: int = 16, batch: int = 1, audio_seconds: float = AUDIO_SECONDS, model=MODEL) -> float:
    """Roofline tokens/s per request on ``gpu`` (predicted): ``kv_fit.decode_tokens_per_second`` on the plan
    for ``bits``-bit weights, never above the compute roofline."""
    total = min(decode_tokens_per_second(plan(gpu, bits, audio_seconds, model), batch), compute_ceiling(gpu, model))
    return total / batch


def gpt_fast_efficiency(bits: int) -> float:
    """gpt-fast's measured bandwidth over the A100-80GB's spec, for 16-, 8- or 4-bit weights (cited)."""
    if bits not in _GPT_FAST:
        raise ValueError(f"gpt-fast published 16-, 8- and 4-bit runs, not {bits}-bit")
    return value(f"decode_bandwidth.{_GPT_FAST[bits]}") / GPUS[_GPT_FAST_GPU].bandwidth_gbs


def a10g_share() -> float:
    """The share of the roofline Orpheus on vLLM reached on an A10G, 16-bit, batch 1 (cited run / predicted
    ceiling for the same GPU and model)."""
    return value(_A10G) / ceiling("A10G", 16)


def efficiency_band(bits: int) -> tuple[float, float]:
    """The lowest and highest share of the roofline a cited engine reached with weights of this kind:
    16-bit (Orpheus on an A10G, gpt-fast) or quantized (gpt-fast's 8- and 4-bit runs)."""
    shares = [a10g_share(), gpt_fast_efficiency(16)] if bits == 16 else [gpt_fast_efficiency(8),
                                                                           gpt_fast_efficiency(4)]
    return min(shares), max(shares)


def efficiency_rows() -> list[dict]:
    """The evidence for the efficiency bands: gpt-fast per weight format, and Orpheus on an A10G."""
    rows = []
    for bits, key in _GPT_FAST.items():
        c = cited(f"decode_bandwidth.{key}")
        rows.append({"what": f"gpt-fast, Llama-2-7B, {bits}-bit weights, {_GPT_FAST_GPU}",
                     "share of the roofline": gpt_fast_efficiency(bits), "kind": c.label()})
    a10g = cited(_A10G)
    rows.append({"what": f"Orpheus 3B on vLLM, 16-bit, A10G ({a10g.value} tokens/s over its roofline)",
                 "share of the roofline": a10g_share(), "kind": a10g.label()})
    return rows


def _band_text(bits: int) -> str:
    lo, hi = efficiency_band(bits)
    return f"{lo:.0%}-{hi:.0%}"


def speed_ceiling_rows(gpu="T4", bits=(16, 8, 4), batches=(1, 2, 4, 8, 16), audio_seconds: float = AUDIO_SECONDS,
                       model=MODEL) -> list[dict]:
    """Upper bounds on Orpheus's generated tokens/s on ``gpu``, per request and in total (predicted)."""
    rows = []
    for b in bits:
        weights = plan(gpu, b, audio_seconds, model).weights_gib
        for batch in batches:
            per = ceiling(gpu, b, batch, audio_seconds, model)
            rows.append({"weights": f"{b}-bit", "weight GiB": weights, "batch": batch,
                         "tokens/s total": per * batch, "tokens/s per request": per,
                         "x real time per request": per / TOKENS_PER_SECOND})
    return rows


def real_time_verdict(ceiling_tokens_per_s: float, bits: int) -> str:
    """Does one request keep up with playback? Judged at the cited engines' shares of the ceiling for this
    weight format (``efficiency_band``), not at the ceiling itself: "yes", "no" or "borderline"."""
    lo, hi = (ceiling_tokens_per_s * e for e in efficiency_band(bits))
    return "yes" if lo >= TOKENS_PER_SECOND else "no" if hi < TOKENS_PER_SECOND else "borderline"


def real_time_rows(gpu="T4", bits=(16, 8, 4), model=MODEL) -> list[dict]:
    """Can one request run in real time? The batch-1 ceiling, then what engines reach at the cited shares for
    that weight format; real time needs 82.03 tokens/s."""
    rows = []
    for b in bits:
        top = ceiling(gpu, b, model=model)
        lo, hi = (top * e for e in efficiency_band(b))
        rows.append({"weights": f"{b}-bit", "ceiling tokens/s": top, "cited share": _band_text(b),
                     "engines reach tokens/s": f"{lo:.0f}-{hi:.0f}", "real time?": real_time_verdict(top, b)})
    return rows


def bits_for_real_time(gpu="T4", efficiency: float | None = None, model=MODEL) -> float:
    """The most bits per quantized weight that still let one request reach real time at ``efficiency``
    (predicted, same roofline: the 16-bit embedding, output matrix and KV reads stay; the linear layers'
    bytes scale with their width, fp8 halving them). ``efficiency`` defaults to the lowest cited share
    for quantized weights."""
    gpu = get_gpu(gpu)
    efficiency = efficiency_band(8)[0] if efficiency is None else efficiency
    bandwidth = gpu.bandwidth_gbs * 1e9
    step16 = bandwidth / decode_tokens_per_second(plan(gpu, 16, model=model), 1)  # bytes read per step
    step8 = bandwidth / decode_tokens_per_second(plan(gpu, 8, model=model), 1)
    linear16 = 2 * (step16 - step8)  # bytes of the linear layers at 16 bits
    budget = bandwidth * efficiency / TOKENS_PER_SECOND - (step16 - linear16)
    return max(0.0, 16 * budget / linear16)


def verdict(gpu="T4", model=MODEL) -> str:
    """The honest sentence on real time for one request on ``gpu``: what engines reach at the cited shares,
    not bare ceilings (predicted, with the shares cited)."""
    gpu = get_gpu(gpu)
    rows = real_time_rows(gpu, model=model)
    quant = cited("orpheus.sub_q8_quality")
    parts = [f"{gpu.name}: real time needs {TOKENS_PER_SECOND:.2f} tokens/s per request."]
    for r in rows:
        parts.append(f"{r['weights']} weights: ceiling {r['ceiling tokens/s']:.0f}, {r['engines reach tokens/s']} "
                     f"at the cited {r['cited share']} of it -> real time: {r['real time?']}.")
    if rows[0]["real time?"] != "yes":
        lo, hi = efficiency_band(8)
        need = [bits_for_real_time(gpu, e, model) for e in (lo, hi)]
        parts.append(f"Real time needs at most {need[0]:.1f}-{need[1]:.1f} bits per quantized weight at the cited "
                     f"{lo:.0%}-{hi:.0%} for quantized weights.")
        if need[1] < 8:
            parts.append(f"Below 8 bits Orpheus's audio is reported to break ({quant.value}, {quant.source}); "
                         "the other ways are a GPU with more bandwidth, or batching, which serves more voices "
                         "at once but none faster.")
    parts.append("Kind: predicted by the roofline with cited efficiencies"
                 + ("; no published T4 measurement of Orpheus was found." if gpu == get_gpu("T4") else "."))
    return "\n".join(parts)


def weights_line(gpu="T4", model=MODEL) -> str:
    """16-bit bytes read per decode step and the batch-1 ceiling, with their kinds."""
    gpu = get_gpu(gpu)
    p = plan(gpu, 16, model=model)
    top = ceiling(gpu, 16, model=model)
    step = gpu.bandwidth_gbs * 1e9 / decode_tokens_per_second(p, 1)
    return (f"16-bit: {p.weights_gib:.2f} GiB of weights; a decode step reads {step / 1e9:.2f} GB (10^9 bytes, as "
            f"bandwidth is quoted: every weight but the input embedding, plus the KV cache of half a "
            f"{AUDIO_SECONDS} s request) / {gpu.bandwidth_gbs:g} GB/s -> {gpu.name} ceiling {top:.1f} tokens/s at "
            f"batch 1 [{ROOFLINE}]; real time needs {TOKENS_PER_SECOND:.2f} ({top / TOKENS_PER_SECOND:.2f}x real "
            f"time) [cited: 7 tokens per 2048 samples at 24 kHz, {cited('orpheus.tokens_per_second').source}]")


def measured_line(speech, device: str) -> str:
    """The tokens/s of one synthesis, labelled with where it ran."""
    if not speech.tokens_per_s:
        return f"measured: no tokens generated on {device} (this run)"
    return f"measured: {speech.tokens_per_s:.1f} tokens/s on {device} (this run)"


def plot_speed_ceiling(rows, measured: float | None = None, gpu_label: str = "T4", measured_on: str = ""):
    """Per-request tokens/s ceiling against batch size, one line per weight format shaded by the cited share
    engines reach for that format, real time marked; ``measured`` (this run) as a dotted line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for fmt in dict.fromkeys(r["weights"] for r in rows):
        sel = [r for r in rows if r["weights"] == fmt]
        xs, ys = [r["batch"] for r in sel], [r["tokens/s per request"] for r in sel]
        line, = ax.plot(xs, ys, "o-", label=f"{fmt} weights: roofline (predicted)")
        lo, hi = efficiency_band(int(fmt.split("-")[0]))
        ax.fill_between(xs, [y * lo for y in ys], [y * hi for y in ys], color=line.get_color(), alpha=0.12)
    ax.axhline(TOKENS_PER_SECOND, color="red", ls="--", label=f"real time ({TOKENS_PER_SECOND:.2f} tokens/s)")
    if measured:
        ax.axhline(measured, color="black", ls=":", label=f"measured on {measured_on} ({measured:.1f} tokens/s)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("requests decoded together (batch)")
    ax.set_ylabel("tokens/s per request")
    ax.set_title(f"Orpheus 3B on {gpu_label}: decode ceiling per request\n"
                 "(lines: roofline, predicted; shaded: the share cited engines reach, per weight format)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
