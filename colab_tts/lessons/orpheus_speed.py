"""Notebook 01's speed lesson: how fast Orpheus can ever decode on a GPU, and what real time would take.

Every figure says its kind: *predicted* by the batch-1 roofline (memory bandwidth / bytes read per
token, ``hardware.decode_ceiling_tokens_per_s``), *cited* (a published measurement, with its source), or
*measured* (this run, on a named device). A roofline is a ceiling; what an engine reaches is a share of
it, its bandwidth efficiency: gpt-fast reached 69 % of an A100-80GB's 2,039 GB/s in 16-bit, but 52 % with
8-bit and 42 % with 4-bit weights (its README @32971d3), and Orpheus on vLLM reached ~61 % on an A10G
(Orpheus-TTS issue #53). The verdict on real time uses that share, not the bare ceiling.
"""

from __future__ import annotations

from ..cited import cited, value
from ..hardware import GPUS, decode_ceiling_tokens_per_s, get_gpu
from ..kv_cache import kv_bytes_per_token
from ..models import ModelSpec
from ..snac_decode import TOKENS_PER_SECOND
from ..units import GB, GIB

MODEL = "orpheus-3b"
EFFICIENCY_BAND = (0.6, 0.8)  # the share of the roofline good engines reach on big models in 16-bit (see below)
ROOFLINE = "predicted: roofline (bandwidth / bytes read per token)"
_GPT_FAST = {16: "gpt_fast_llama2_7b_fp16_gbs", 8: "gpt_fast_llama2_7b_int8_gbs", 4: "gpt_fast_llama2_7b_int4_gbs"}
_GPT_FAST_GPU = "A100-80GB"  # what gpt-fast ran on


def _spec(model):
    return ModelSpec.known(model) if isinstance(model, str) else model


def gpt_fast_efficiency(bits: int) -> float:
    """gpt-fast's measured bandwidth over the A100-80GB's spec, for 16-, 8- or 4-bit weights (cited)."""
    if bits not in _GPT_FAST:
        raise ValueError(f"gpt-fast published 16-, 8- and 4-bit runs, not {bits}-bit")
    return value(f"decode_bandwidth.{_GPT_FAST[bits]}") / GPUS[_GPT_FAST_GPU].bandwidth_gbs


def efficiency_rows() -> list[dict]:
    """The evidence for the efficiency band: gpt-fast per weight format, and Orpheus on an A10G."""
    rows = []
    for bits, key in _GPT_FAST.items():
        c = cited(f"decode_bandwidth.{key}")
        rows.append({"what": f"gpt-fast, Llama-2-7B, {bits}-bit weights, {_GPT_FAST_GPU}",
                     "share of the roofline": gpt_fast_efficiency(bits), "kind": c.label()})
    a10g = cited("orpheus.a10g_vllm_tokens_per_second")
    rows.append({"what": "Orpheus 3B on vLLM, 16-bit, A10G (55 tokens/s over its roofline)",
                 "share of the roofline": a10g.value / ceiling("A10G", 16), "kind": a10g.label()})
    return rows


def ceiling(gpu, bits: int = 16, batch: int = 1, context_tokens: int = 538, model=MODEL) -> float:
    """Roofline tokens/s per request on ``gpu``: each step reads the weights once (in ``bits``-bit form) plus
    every sequence's KV cache of ``context_tokens``, and does no more than the GPU's fp16 FLOPs allow."""
    spec, gpu = _spec(model), get_gpu(gpu)
    kv_read = kv_bytes_per_token(spec, "float16") * context_tokens
    compute = gpu.fp16_tflops * 1e12 / (2 * spec.num_params)
    total = min(batch * decode_ceiling_tokens_per_s(spec.num_params * bits / 8, gpu, batch * kv_read), compute)
    return total / batch


def speed_ceiling_rows(gpu="T4", bits=(16, 8, 4), batches=(1, 2, 4, 8, 16), context_tokens: int = 538,
                       model=MODEL) -> list[dict]:
    """Upper bounds on Orpheus's generated tokens/s on ``gpu``, per request and in total (predicted).

    ``context_tokens`` defaults to the prompt plus half of a 10 s utterance."""
    spec, gpu = _spec(model), get_gpu(gpu)
    rows = []
    for b in bits:
        for batch in batches:
            per = ceiling(gpu, b, batch, context_tokens, spec)
            rows.append({"weights": f"{b}-bit", "weight GiB": spec.num_params * b / 8 / GIB, "batch": batch,
                         "tokens/s total": per * batch, "tokens/s per request": per,
                         "x real time per request": per / TOKENS_PER_SECOND})
    return rows


def real_time_rows(gpu="T4", bits=(16, 8, 4), model=MODEL) -> list[dict]:
    """Can one request run in real time? The batch-1 ceiling, then what an engine reaches at the quoted
    60-80 % and at gpt-fast's own share for that weight format; real time needs 82.03 tokens/s."""
    rows = []
    for b in bits:
        top = ceiling(gpu, b, model=model)
        lo, hi = (top * e for e in EFFICIENCY_BAND)
        fast = top * gpt_fast_efficiency(b)
        above = [x >= TOKENS_PER_SECOND for x in (lo, hi, fast)]
        verdict = "yes" if all(above) else "no" if not any(above) else "borderline: depends on the kernels"
        rows.append({"weights": f"{b}-bit", "ceiling tokens/s": top, "at 60-80 %": f"{lo:.0f}-{hi:.0f}",
                     "at gpt-fast share": fast, "real time?": verdict})
    return rows


def bits_for_real_time(gpu="T4", efficiency: float = EFFICIENCY_BAND[0], model=MODEL) -> float:
    """The most bits per weight that still let one request reach real time at ``efficiency`` (predicted)."""
    spec, gpu = _spec(model), get_gpu(gpu)
    kv_read = kv_bytes_per_token(spec, "float16") * 538
    budget = gpu.bandwidth_gbs * 1e9 * efficiency / TOKENS_PER_SECOND - kv_read  # bytes per token
    return max(0.0, budget * 8 / spec.num_params)


def verdict(gpu="T4", model=MODEL) -> str:
    """The honest sentence on real time for one request on ``gpu``: ceilings at the efficiency engines
    reach, not bare ceilings (predicted, with the efficiencies cited)."""
    gpu = get_gpu(gpu)
    rows = real_time_rows(gpu, model=model)
    need = [bits_for_real_time(gpu, e, model) for e in EFFICIENCY_BAND]
    quant = cited("orpheus.sub_q8_quality")
    parts = [f"{gpu.name}: real time needs {TOKENS_PER_SECOND:.2f} tokens/s per request."]
    for r in rows:
        parts.append(f"{r['weights']} weights: ceiling {r['ceiling tokens/s']:.0f}, {r['at 60-80 %']} at 60-80 % "
                     f"of it, {r['at gpt-fast share']:.0f} at gpt-fast's share -> real time: {r['real time?']}.")
    if need[0] < 16:
        parts.append(f"Real time needs at most {need[0]:.1f}-{need[1]:.1f} bits per weight at 60-80 % efficiency.")
    if need[1] < 8:
        parts.append(f"Below 8 bits Orpheus's audio is reported to break ({quant.value}, {quant.source}); "
                     "the other ways are a GPU with more bandwidth, or batching, which serves more voices at "
                     "once but none faster.")
    parts.append("Kind: predicted by the roofline with cited efficiencies"
                 + ("; no published T4 measurement of Orpheus was found." if gpu == get_gpu("T4") else "."))
    return "\n".join(parts)


def weights_line(gpu="T4", model=MODEL) -> str:
    """fp16 weight bytes and the batch-1 ceiling, with their kinds."""
    spec, gpu = _spec(model), get_gpu(gpu)
    weights = spec.weight_bytes("float16")
    top = decode_ceiling_tokens_per_s(weights, gpu)
    return (f"fp16 weights {weights / GIB:.2f} GiB = {weights / GB:.2f} GB (10^9 bytes, as bandwidth is quoted) / "
            f"{gpu.bandwidth_gbs:g} GB/s -> "
            f"{gpu.name} ceiling {top:.1f} tokens/s at batch 1 [{ROOFLINE}]; real time needs "
            f"{TOKENS_PER_SECOND:.2f} ({top / TOKENS_PER_SECOND:.2f}x real time) "
            f"[cited: 7 tokens per 2048 samples at 24 kHz, {cited('orpheus.tokens_per_second').source}]")


def measured_line(speech, device: str) -> str:
    """The tokens/s of one synthesis, labelled with where it ran."""
    return f"measured: {speech.tokens_per_s:.1f} tokens/s on {device} (this run)"


def plot_speed_ceiling(rows, measured: float | None = None, gpu_label: str = "T4", measured_on: str = ""):
    """Per-request tokens/s ceiling against batch size, one line per weight format, real time and the
    60-80 % band of the 16-bit line marked; ``measured`` (this run) as a dotted line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for fmt in dict.fromkeys(r["weights"] for r in rows):
        sel = [r for r in rows if r["weights"] == fmt]
        xs, ys = [r["batch"] for r in sel], [r["tokens/s per request"] for r in sel]
        line, = ax.plot(xs, ys, "o-", label=f"{fmt} weights: roofline (predicted)")
        lo, hi = EFFICIENCY_BAND
        ax.fill_between(xs, [y * lo for y in ys], [y * hi for y in ys], color=line.get_color(), alpha=0.12)
    ax.axhline(TOKENS_PER_SECOND, color="red", ls="--", label=f"real time ({TOKENS_PER_SECOND:.2f} tokens/s)")
    if measured:
        ax.axhline(measured, color="black", ls=":", label=f"measured on {measured_on} ({measured:.1f} tokens/s)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("requests decoded together (batch)")
    ax.set_ylabel("tokens/s per request")
    ax.set_title(f"Orpheus 3B on {gpu_label}: decode ceiling per request\n"
                 "(lines: roofline; shaded: 60-80 % of it, what engines reach)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
