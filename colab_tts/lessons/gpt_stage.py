"""Notebook 04's lesson: timing the GPT stage's decode paths, the roofline, the launch-overhead budget,
GPT-SoVITS's own options and TensorRT, and the chart.

Every row carries its kind: *measured* (this run, on which device), *predicted* (the roofline, from the
GPU's datasheet bandwidth) or *cited* (the public source in ``colab_tts/data/cited/gpt_sovits.json``).
Speed effects seen only on a CPU are labelled "on this CPU" with what to expect on a GPU instead.
"""

from __future__ import annotations

import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .. import devices, hardware
from ..cited import cited, value
from ..decoding import FIXED_LENGTH, Generation, generate, sample
from ..t2s import T2SConfig, T2SModel
from ..t2s_runner import T2SRunner, random_prompt, random_segments

# --- timing ---------------------------------------------------------------------------------------------


def time_decode(model: T2SModel, segments, prompt, cache: str = "static", n_tokens: int = 32,
                warmup: int = 2, **runner_kwargs) -> Generation:
    """Greedy decode of ``segments`` as one batch, every row to ``n_tokens`` (EOS blocked), timed.

    ``warmup`` steps run first on an identical runner so that first-call costs are not timed.
    """
    def run(steps):
        runner = T2SRunner(model, segments, prompt, cache, max_new_tokens=n_tokens, **runner_kwargs)
        return generate(runner, FIXED_LENGTH, model.config.eos_id, steps)

    if warmup:
        run(warmup)
    return run(n_tokens)


def speed_row(technique: str, g: Generation, baseline: Generation | None = None, decode_only: bool = True,
              device="cpu") -> dict:
    """One row of a results table: tokens/s, speed-up over ``baseline``, RTF, and where it was measured."""
    rate = (lambda x: x.decode_tokens_per_s) if decode_only else (lambda x: x.tokens_per_s)
    row = {"technique": technique, "tokens": g.n_tokens, "tokens/s": rate(g)}
    row["speed-up"] = rate(g) / rate(baseline) if baseline is not None else 1.0
    row["RTF"] = g.audio_rate / rate(g) if decode_only else g.real_time_factor
    row["kind"] = f"measured: this run, {torch.device(device).type}"
    row["on a GPU"] = gpu_expectation(technique, torch.device(device).type)
    return row


def gpu_expectation(technique: str, device: str = "cpu") -> str:
    """What a technique measured on ``device`` does on a GPU (the label a CPU-only effect needs)."""
    t = technique.lower()
    if device == "cuda":
        return "measured on this GPU"
    if "int8" in t:
        return "CPU-only path (dynamic int8 has no CUDA kernels); not on a T4"
    if "float16" in t or "bfloat16" in t:
        return ("T4: float16 (no bfloat16) halves the bytes read; batch-1 eager is launch-bound (the T4 budget), "
                "so little change until CUDA graphs or batching")
    if "compile" in t:
        return f"CUDA graphs: one launch per step; upstream's CUDA-graph path: {value('gpt_sovits.cuda_graph_commit')}"
    if "bucket" in t:
        return "transfers: B rows share each launch and weight read (a launch-bound step serves B tokens)"
    if "recompute" in t or "no cache" in t:
        return "slower on any device (work grows with length)"
    if "static" in t:
        return "same speed eager; the fixed shapes it gives are what CUDA graphs need"
    return "the baseline"


def time_sampling(settings: dict, vocab: int = 1025, batch: int = 1, repeats: int = 200, seed: int = 0,
                  device=None) -> list[dict]:
    """Microseconds per ``sample`` call for each named ``Sampling``, on the decode ``device`` (synchronised)."""
    device = devices.resolve_device(device)
    g = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(batch, vocab, generator=g, device=device)
    seen = torch.rand(batch, vocab, generator=g, device=device) < 0.05
    rows = []
    for name, s in settings.items():
        sample(logits, seen, s, vocab - 1, False, g)
        devices.sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            sample(logits, seen, s, vocab - 1, False, g)
        devices.sync(device)
        rows.append({"sampling": name, "us per token": (time.perf_counter() - t0) / repeats * 1e6,
                     "kind": f"measured: this run, {device.type}"})
    return rows


def cpu_low_precision() -> dict:
    """What this CPU offers for lower precision, as PyTorch's oneDNN backend sees it."""
    mkldnn = torch.ops.mkldnn
    return {"instruction set": torch.backends.cpu.get_cpu_capability(),
            "native bfloat16 (AVX512-BF16/AMX)": bool(mkldnn._is_mkldnn_bf16_supported()),
            "native float16 (AVX512-FP16/AMX)": bool(mkldnn._is_mkldnn_fp16_supported()),
            "int8 dynamic quantization engine": torch.backends.quantized.engine}


# --- the roofline ---------------------------------------------------------------------------------------

def weight_bytes_per_token(model: T2SModel, dtype: str) -> int:
    """Bytes of weights one decode step reads in ``dtype`` (the roofline's numerator; int8: 1 byte)."""
    size = 1 if dtype == "int8" else hardware.DTYPE_BYTES[hardware.dtype_name(dtype)]
    return model.decode_param_count() * size


def _meta_model(config: T2SConfig | None, dtype: str = "float16") -> T2SModel:
    with torch.device("meta"):  # sizes only: no weights are allocated
        return T2SModel(T2SConfig() if config is None else config).to(hardware.torch_dtype(dtype))


def roofline_rows(gpus, dtype: str = "float16", config: T2SConfig | None = None, context: int = 500) -> list[dict]:
    """Batch-1 decode ceiling of the GPT stage on each GPU: bandwidth / bytes read per token.

    Bytes per token = the weights in ``dtype`` plus the K/V of ``context`` cached positions.
    """
    model = _meta_model(config, dtype)
    weights = weight_bytes_per_token(model, dtype)
    kv = context * model.kv_bytes_per_position()
    rows = []
    for name in gpus:
        gpu = hardware.get_gpu(name)
        ceiling = hardware.decode_ceiling_tokens_per_s(weights, gpu, kv)
        rows.append({"GPU": gpu.name, "GB/s": gpu.bandwidth_gbs, "MB per token": (weights + kv) / 1e6,
                     "ms per token": 1e3 / ceiling, "ceiling tokens/s": ceiling,
                     "x real time": ceiling / model.config.tokens_per_second,
                     "kind": "predicted: roofline (datasheet bandwidth)"})
    return rows


# --- where a batch-1 step's time goes: bandwidth against launches -------------------------------------------

class _OpCounter(TorchDispatchMode):
    """Counts the aten operators a region dispatches: those that compute or copy (one CUDA kernel or
    more each on a GPU) apart from views, which only change metadata and launch nothing."""

    def __init__(self):
        super().__init__()
        self.kernels, self.views = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [a for a in args if isinstance(a, torch.Tensor)]
        outs = out if isinstance(out, (tuple, list)) else (out,)
        in_place = func._schema.name.endswith("_")
        aliased = any(isinstance(o, torch.Tensor) and any(o is i or o.untyped_storage().data_ptr()
                                                          == i.untyped_storage().data_ptr() for i in inputs)
                      for o in outs)
        if aliased and not in_place:
            self.views += 1
        else:
            self.kernels += 1
        return out


def _decode_runner(config: T2SConfig, device, context: int = 64):
    torch.manual_seed(0)
    model = T2SModel(config).eval().to(device)
    runner = T2SRunner(model, random_segments(config, [20]), random_prompt(config, context), "static",
                       max_new_tokens=256)
    with torch.inference_mode():
        tok = runner.start().argmax(-1)
        for _ in range(3):
            runner.step(tok)
    return runner, tok


def step_kernel_count(config: T2SConfig | None = None) -> dict:
    """Operators one eager batch-1 decode step dispatches: {"kernels": n, "views": m} (counted on the CPU)."""
    runner, tok = _decode_runner(T2SConfig() if config is None else config, "cpu")
    counter = _OpCounter()
    with torch.inference_mode(), counter:
        runner.step(tok)
    return {"kernels": counter.kernels, "views": counter.views}


def host_overhead_per_step(config: T2SConfig | None = None, device="cpu", steps: int = 30) -> float:
    """Seconds per eager decode step of a model with the same layers and operators but tiny tensors.

    Its arithmetic is negligible, so what is left is Python, the dispatcher and (on a GPU) the launches:
    the floor under every eager batch-1 step, whatever the weights' size.
    """
    c = T2SConfig() if config is None else config
    tiny = T2SConfig(n_layer=c.n_layer, hidden_dim=c.n_head, n_head=c.n_head, ffn_dim=4 * c.n_head)
    device = devices.resolve_device(device)
    runner, tok = _decode_runner(tiny, device)
    with torch.inference_mode():
        devices.sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            runner.step(tok)
        devices.sync(device)
    return (time.perf_counter() - t0) / steps


def step_budget_rows(gpu="T4", overhead_s: float | None = None, kernels: int | None = None,
                     context: int = 500, device="cpu") -> list[dict]:
    """Batch-1 step budget on ``gpu`` (fp16, real size): bandwidth time against the per-step overhead.

    ``overhead_s`` and ``kernels`` are the measured host overhead per step and kernels per step
    (``host_overhead_per_step``, ``step_kernel_count``); cited GPU measurements close the table.
    """
    (roof,) = roofline_rows([gpu], "float16", context=context)
    (weights,) = roofline_rows([gpu], "float16", context=0)
    rows = [{"what": f"read the fp16 weights once ({weights['MB per token']:.0f} MB at {roof['GB/s']:g} GB/s)",
             "ms per token": weights["ms per token"], "kind": roof["kind"] + f", {roof['GPU']}"},
            {"what": f"... plus the K/V of {context} cached positions ({roof['MB per token']:.0f} MB in all)",
             "ms per token": roof["ms per token"], "kind": roof["kind"] + f", {roof['GPU']}"}]
    if kernels is not None:
        rows.append({"what": f"{kernels} kernels per step x 1 us: launches alone, before any Python (a floor)",
                     "ms per token": kernels * 1e-3,
                     "kind": f"measured count (this CPU) x {cited('gpt_sovits.kernel_launch_cost').label()}"})
    if overhead_s is not None:
        rows.append({"what": "eager step, same operators, tiny tensors (Python + dispatch, no arithmetic)",
                     "ms per token": overhead_s * 1e3, "kind": f"measured: this run, {_on(device)}"})
    for key, what, gpu_name in (("rtx4090_xeon_e5_2686", "RTX 4090, Xeon E5-2686 host", "RTX-4090"),
                                ("rtx4090_ryzen_5900x", "RTX 4090, Ryzen 9 5900X host", "RTX-4090"),
                                ("rtx4080_ryzen_9950x", "RTX 4080, Ryzen 9 9950X host", None)):
        c = cited(f"gpt_sovits.{key}")
        share = ""
        if gpu_name:
            ceiling = roofline_rows([gpu_name], "float16", context=context)[0]["ceiling tokens/s"]
            share = f" = {c.value / ceiling:.1%} of its bandwidth ceiling"
        rows.append({"what": f"upstream eager step, {what}: {c.value} it/s{share}",
                     "ms per token": 1e3 / c.value, "kind": c.label()})
    trt = cited("gpt_sovits.tensorrt_2080ti_trt")
    rows.append({"what": f"TensorRT fp16 on an RTX 2080 Ti (Turing): {trt.value} tokens/s",
                 "ms per token": 1e3 / trt.value, "kind": trt.label()})
    return rows


def _on(device) -> str:
    return "on this CPU" if torch.device(device).type == "cpu" else f"on this {torch.device(device).type} device"


def overhead_verdict(overhead_s: float, gpu="T4", context: int = 500, device="cpu") -> str:
    """One line: is an eager batch-1 step on ``gpu`` bound by bandwidth or by per-step overhead?"""
    (roof,) = roofline_rows([gpu], "float16", context=context)
    ratio = overhead_s * 1e3 / roof["ms per token"]
    bound = "launch/host overhead" if ratio > 1 else "bandwidth"
    return (f"{roof['GPU']}, batch 1, eager: the per-step overhead ({overhead_s * 1e3:.1f} ms, measured {_on(device)}) "
            f"is {ratio:.1f}x the bandwidth time ({roof['ms per token']:.2f} ms, roofline): {bound}-bound. "
            "One CUDA-graph launch per step removes the overhead; a batch of B rows shares it.")


# --- GPT-SoVITS's own options and TensorRT ------------------------------------------------------------------

def gpt_sovits_options_rows() -> list[dict]:
    """What ``batch_size``, ``split_bucket`` and ``parallel_infer`` do in ``TTS.run`` and what they map to here."""
    return [
        {"option (default)": f"batch_size ({value('gpt_sovits.run_batch_size')})",
         "what it does upstream": "segments decoded together in one left-padded batch; finished rows are "
                                  "dropped from the batch and its KV cache (infer_panel_batch_infer)",
         "here": "decode_segments(batch_size=B): batched decode with row dropping (sections 9, 10)",
         "source": cited("gpt_sovits.run_batch_size").label()},
        {"option (default)": f"split_bucket ({value('gpt_sovits.run_split_bucket')})",
         "what it does upstream": "segments sorted by text length and cut into batches of batch_size, a batch "
                                  f"shrunk until middle/mean length >= batch_threshold "
                                  f"({value('gpt_sovits.run_batch_threshold')}); off when streaming, "
                                  "returning fragments or speed_factor != 1",
         "here": "length_buckets: sorted longest first, fixed batches of batch_size (section 10)",
         "source": cited("gpt_sovits.run_batch_threshold").label()},
        {"option (default)": f"parallel_infer ({value('gpt_sovits.run_parallel_infer')})",
         "what it does upstream": "True: one batched decode per bucket (infer_panel_batch_infer); False: the "
                                  "bucket's rows one after another (infer_panel_naive_batched)",
         "here": "batch_size=B against batch_size=1 (the upstream-way row of section 10)",
         "source": cited("gpt_sovits.run_parallel_infer").label()},
    ]


def tensorrt_rows() -> list[dict]:
    """Where TensorRT stands for the GPT stage: upstream's answer, what it takes, what people report."""
    rows = []
    for key in ("tensorrt_upstream", "tensorrt_onnx_export_report", "tensorrt_2080ti_pytorch",
                "tensorrt_2080ti_onnx", "tensorrt_2080ti_trt"):
        c = cited(f"gpt_sovits.{key}")
        rows.append({"figure": f"{c.value} {c.unit}" if c.unit != "text" else c.value, "note": c.note,
                     "source": c.label()})
    return rows


# --- the verdict and the chart --------------------------------------------------------------------------

def headline(batch1_rows: list[dict], long_rows: list[dict], device="cpu") -> list[str]:
    """The lines a reader takes away: the best path that transfers to a GPU, then CPU-only effects, labelled."""
    device = torch.device(device).type
    cpu_only = ("int8", "float16", "bfloat16")
    transfers = [r for r in long_rows[1:] if device == "cuda" or not any(k in r["technique"] for k in cpu_only)]
    lines = []
    if transfers:
        best = max(transfers, key=lambda r: r["speed-up"])
        lines.append(f"best path that transfers to a GPU: {best['technique']}: {best['speed-up']:.1f}x the upstream "
                     f"way, RTF {best['RTF']:.2f} ({best['kind']}); on a GPU: {best['on a GPU']}")
    if device == "cpu":
        for r in long_rows[1:] + batch1_rows[1:]:
            if any(k in r["technique"] for k in cpu_only):
                lines.append(f"on this CPU only: {r['technique']}: {r['speed-up']:.2f}x; on a GPU: {r['on a GPU']}")
    return lines


def speedup_bars(panels: dict, key: str = "technique", value_key: str = "speed-up"):
    """One horizontal bar chart per {title: rows}, each bar a row's speed-up (1 = the baseline).

    Bars of CPU-only effects (int8, half precision measured on a CPU) are hatched and labelled.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False)
    for ax, (title, rows), color in zip(axes[0], panels.items(), ["tab:blue", "tab:orange", "tab:green"]):
        cpu_only = [r.get("kind", "").endswith("cpu") and any(k in r[key] for k in ("int8", "float16"))
                    for r in rows]
        labels = [r[key] + (" (on this CPU only)" if c and "on this CPU" not in r[key] else "")
                  for r, c in zip(rows, cpu_only)]
        bars = ax.barh(labels, [r[value_key] for r in rows], color=color)
        for bar, c in zip(bars, cpu_only):
            if c:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
        ax.axvline(1, color="gray", lw=1)
        ax.invert_yaxis()
        ax.set_xlabel(title)
        ax.tick_params(axis="y", labelsize=8)
    kinds = sorted({r.get("kind", "") for rows in panels.values() for r in rows} - {""})
    hatched = "; hatched: effects seen on this CPU only, not what a T4 does" if any(
        "cpu" in k for k in kinds) else ""
    fig.suptitle("; ".join(kinds) + hatched, fontsize=9)
    fig.tight_layout()
    return fig
