"""``python -m colab_tts selftest``: run every CUDA path this project relies on once, in minutes.

Prints one row per check - PASS, FAIL or SKIP - with its time and what it saw. Without CUDA every
CUDA check is listed as skipped by name and the command exits 0; a FAIL exits 1. Each check is a small
function of its own, calling the package's public entry points, so that it is easy to re-point when a
module moves. The offline Orpheus model has random weights: these checks show that the paths run on
the GPU (dtype, devices, memory, identical tokens), not that the audio is any good.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .units import GIB, MIB


class Skip(Exception):  # noqa: N818 - a check's way of saying "not here", not an error
    """Raised by a check that cannot run on this machine; the message says why."""


@dataclass
class Result:
    name: str
    status: str  # PASS, FAIL or SKIP
    seconds: float
    detail: str


def _cuda(device: str = "cuda"):
    """torch, or Skip when ``device`` is CUDA and there is none (tests run some checks with device="cpu")."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Skip("no CUDA device")
    return torch


def _gpu_spec():
    from .hardware import detect

    return detect().gpu


# --- the checks -------------------------------------------------------------------------------------

def check_bf16_refusal() -> str:
    """No bfloat16 below CC 8.0: simulated T4 everywhere, and the GPU in use when there is one."""
    import torch

    from .hardware import get_gpu, resolve_dtype

    t4 = get_gpu("T4")  # the catalog's T4, simulated: no device is asked
    assert resolve_dtype("auto", t4).dtype == "float16"
    assert resolve_dtype("bfloat16", t4).dtype == "float16"
    try:
        resolve_dtype("bfloat16", t4, strict=True)
    except ValueError:
        pass
    else:
        raise AssertionError("strict bfloat16 on CC 7.5 was not refused")
    if not torch.cuda.is_available():
        return "simulated T4: bfloat16 -> float16, strict refuses (no GPU here)"
    spec = _gpu_spec()
    choice = resolve_dtype("bfloat16", spec)
    expected = "bfloat16" if spec.compute_capability >= (8, 0) else "float16"
    assert choice.dtype == expected, (spec, choice)
    return f"simulated T4 refused; {spec.name} (CC {spec.cc}): bfloat16 -> {choice.dtype}"


def _orpheus_on(device: str, backend: str, **engine) -> str:
    from .orpheus import OrpheusTTS
    from .orpheus_demo import save_demo_model
    from .snac_decode import build_snac

    model_dir = save_demo_model()
    tts = OrpheusTTS.from_pretrained(str(model_dir), backend=backend, gpu="cpu", dtype="float16", max_audio_seconds=4,
                                     snac=build_snac(pretrained=False, device=device), **engine)
    try:
        speech = tts.synthesize("Hello there.", seed=0)
        samples = np.asarray(speech.samples)
        assert samples.size > 0 and np.isfinite(samples).all(), "no audio, or NaN/inf in it"
        return f"{backend}: {tts.dtype}, {samples.size} samples (random weights: noise)"
    finally:
        tts.close()


def check_orpheus_vllm_cuda() -> str:
    """fp16 Orpheus (tiny offline model) through vLLM's CUDA build."""
    _cuda()
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        raise Skip(f"vLLM not importable: {err}") from None
    from .colab import vllm_engine_kwargs

    spec = _gpu_spec()
    return _orpheus_on("cuda", "vllm", enforce_eager=True, max_num_seqs=8, gpu_memory_utilization=0.3,
                            **vllm_engine_kwargs(spec.compute_capability))


def check_orpheus_transformers_cuda(device: str = "cuda") -> str:
    """fp16 Orpheus (tiny offline model) through transformers on CUDA."""
    _cuda(device)
    return _orpheus_on(device, "transformers")


def check_snac_cuda(device: str = "cuda") -> str:
    """SNAC decodes on CUDA to what it decodes on the CPU."""
    torch = _cuda(device)
    from .snac_decode import AUDIO_TOKEN_OFFSET, CODES_PER_SLOT, TOKENS_PER_FRAME, build_snac, decode_audio

    gen = torch.Generator().manual_seed(0)
    frames = 8
    codes = torch.randint(0, CODES_PER_SLOT, (frames * TOKENS_PER_FRAME,), generator=gen)
    slots = torch.arange(frames * TOKENS_PER_FRAME) % TOKENS_PER_FRAME
    tokens = (AUDIO_TOKEN_OFFSET + slots * CODES_PER_SLOT + codes).tolist()
    on_gpu = decode_audio(tokens, build_snac(pretrained=False, device=device, noise=False, seed=0))
    on_cpu = decode_audio(tokens, build_snac(pretrained=False, device="cpu", noise=False, seed=0))
    diff = float(np.abs(np.asarray(on_gpu) - np.asarray(on_cpu)).max())
    assert len(on_gpu) == len(on_cpu) > 0 and diff < 1e-3, diff
    return f"{len(on_gpu)} samples, max |CUDA - CPU| = {diff:.1e}"


def check_track_peak_cuda(device: str = "cuda") -> str:
    """track_peak on CUDA reports a known 64 MiB allocation."""
    torch = _cuda(device)
    from .memory import track_peak

    size = 64 * MIB
    with track_peak(device) as mem:
        x = torch.empty(size, dtype=torch.uint8, device=device)
        del x
    assert abs(mem.peak_bytes - size) <= 2 * MIB and mem.end_bytes <= 0, (mem.peak_bytes, mem.end_bytes)
    return f"peak {mem.peak_bytes / MIB:.1f} MiB for a 64 MiB tensor, {mem.end_bytes / MIB:.1f} MiB left"


def check_offload_hooks() -> str:
    """offload_hook moves a module to CUDA for its call and back; model_offload keeps one stage on the GPU."""
    torch = _cuda()
    from .memory import is_on_accelerator, model_offload, module_bytes, offload_hook

    a, b = torch.nn.Linear(2048, 2048), torch.nn.Linear(2048, 2048)
    base = torch.cuda.memory_allocated()
    hooks = offload_hook(a, "cuda")
    out = a(torch.randn(4, 2048, device="cuda"))
    assert out.device.type == "cuda" and not is_on_accelerator(a, "cuda")
    del out
    torch.cuda.synchronize()
    freed = torch.cuda.memory_allocated() - base
    hooks.remove()
    assert freed < module_bytes(a) / 2, f"{freed} bytes still on the GPU after the call"
    hooks = model_offload([a, b], "cuda")
    a(torch.randn(1, 2048, device="cuda"))
    b(torch.randn(1, 2048, device="cuda"))
    assert is_on_accelerator(b, "cuda") and not is_on_accelerator(a, "cuda")
    hooks.remove()
    return f"module of {module_bytes(a) / MIB:.0f} MiB back on the host after its call ({freed / MIB:.1f} MiB left)"


def check_cuda_graph_decode(device: str = "cuda") -> str:
    """Static-cache decode with CUDA graphs (torch.compile reduce-overhead) gives eager's greedy tokens."""
    torch = _cuda(device)
    from . import compiled
    from .decoding import FIXED_LENGTH, generate
    from .t2s import T2SConfig, T2SModel
    from .t2s_runner import T2SRunner, random_prompt, random_segments

    torch.manual_seed(0)
    config = T2SConfig.small()
    model = T2SModel(config).to(device).eval()
    segments, prompt = random_segments(config, [12, 9], seed=0), random_prompt(config, 20, seed=0)

    def greedy(warmup=0, **runner_kwargs):  # every row to 24 tokens (EOS blocked), after `warmup` steps untimed
        def run(steps):
            runner = T2SRunner(model, segments, prompt, "static", max_new_tokens=24, **runner_kwargs)
            return generate(runner, FIXED_LENGTH, config.eos_id, steps)
        if warmup:
            run(warmup)
        return run(24)

    eager = greedy()
    graphs = greedy(warmup=2, fixed_shape=True, step_fn=compiled.compiled_step(model))
    assert graphs.tokens == eager.tokens, "CUDA-graph decode changed the greedy tokens"
    return f"2 rows x 24 greedy tokens identical; {graphs.decode_tokens_per_s:.0f} vs {eager.decode_tokens_per_s:.0f} tok/s"


def check_allocator_cap(cap_gib: float = 8.0) -> str:
    """set_per_process_memory_fraction emulates a smaller card: below the cap fits, above it is refused."""
    torch = _cuda()
    total = torch.cuda.get_device_properties(0).total_memory
    if total < cap_gib * GIB * 1.2:
        raise Skip(f"the GPU has {total / GIB:.1f} GiB: nothing to emulate at {cap_gib:g} GiB")
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(cap_gib * GIB / total)
    try:
        fits = torch.empty(int((cap_gib - 1) * GIB), dtype=torch.uint8, device="cuda")
        del fits
        torch.cuda.empty_cache()
        try:
            torch.empty(int((cap_gib + 0.5) * GIB), dtype=torch.uint8, device="cuda")
        except torch.OutOfMemoryError:
            refused = True
        else:
            refused = False
        assert refused, f"{cap_gib + 0.5:g} GiB allocated under a {cap_gib:g} GiB cap"
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    return f"{cap_gib - 1:g} GiB fits, {cap_gib + 0.5:g} GiB refused under a {cap_gib:g} GiB cap of {total / GIB:.1f} GiB"


CHECKS = {
    "bf16_refusal": check_bf16_refusal,
    "orpheus_vllm_cuda": check_orpheus_vllm_cuda,
    "orpheus_transformers_cuda": check_orpheus_transformers_cuda,
    "snac_cuda": check_snac_cuda,
    "track_peak_cuda": check_track_peak_cuda,
    "offload_hooks_cuda": check_offload_hooks,
    "cuda_graph_decode": check_cuda_graph_decode,
    "allocator_cap_8gb": check_allocator_cap,
}


def run(only=None, cap_gib: float = 8.0) -> list[Result]:
    """Run the checks (all, or those named in ``only``) and return one Result each."""
    from ._checks import choose

    names = list(CHECKS) if not only else [choose(n, CHECKS, "self-test check") for n in only]
    results = []
    for name in names:
        fn = CHECKS[name]
        t0 = time.perf_counter()
        try:
            detail = fn(cap_gib) if name == "allocator_cap_8gb" else fn()
            status = "PASS"
        except Skip as why:
            status, detail = "SKIP", str(why)
        except Exception as err:  # a failing check is reported, and the others still run
            status, detail = "FAIL", f"{type(err).__name__}: {err}"[:300]
        results.append(Result(name, status, time.perf_counter() - t0, detail))
    return results


def table(results: list[Result]) -> str:
    """The pass/fail table, measured on this machine."""
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  result  seconds  detail"]
    lines += [f"{r.name:<{width}}  {r.status:<6}  {r.seconds:7.2f}  {r.detail}" for r in results]
    return "\n".join(lines)


def main(only=None, fraction_gib: float = 8.0) -> int:
    """Print the table (and the device it ran on); 1 if any check failed, else 0 (skips are not failures)."""
    import torch

    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device (CUDA checks skipped)"
    print(f"colab_tts self-test on {where}, torch {torch.__version__} (measured on this machine)")
    results = run(only, fraction_gib)
    print(table(results))
    skipped = [r.name for r in results if r.status == "SKIP"]
    if skipped:
        print(f"skipped: {', '.join(skipped)}")
    return 1 if any(r.status == "FAIL" for r in results) else 0
