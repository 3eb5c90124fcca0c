"""GPT-SoVITS GPT stage: the upstream way against this project's best path, side by side in one run.

Real-size T2S (24 layers, hidden 512) with random weights. A long text of 8 segments of mixed
lengths is decoded (a) the upstream way - one segment at a time, concat cache, fp32 - and (b) in
length buckets with a static cache, in fp32, half precision (chosen on compute capability: float16 on
a T4, bfloat16 on a CPU or from Ampere on) and, on a CPU, dynamic int8; then batch-1 per-token speed of
every variant. Random weights never choose when to stop, so EOS is blocked and each segment gets the
tokens a real voice would take (TOKENS_PER_PHONEME, an assumption: ~12 phonemes per second of
speech at 25 tokens/s). Prints tokens/s, speed-up over upstream and the real-time factor (RTF), each
row labelled with the device it was measured on. The verdict counts only paths that carry over to a
GPU; effects seen only on a CPU (dynamic int8, half precision on a CPU) are printed as such, with the
T4 budget (bandwidth time against the measured per-step overhead) at the end.

    python benchmarks/gpt_stage.py                 # real size, a few minutes on 2 shared cores
    python benchmarks/gpt_stage.py --compile       # adds torch.compile of the decode step (slow warm-up on CPU)
    python benchmarks/gpt_stage.py --layers 4 --hidden 128 --heads 4   # quick smoke run
"""

from __future__ import annotations

import argparse
import time

import torch

from colab_tts import devices, hardware
from colab_tts.compiled import compiled_step
from colab_tts.decoding import FIXED_LENGTH
from colab_tts.display import Table
from colab_tts.lessons.gpt_stage import (
    headline,
    host_overhead_per_step,
    overhead_verdict,
    speed_row,
    time_decode,
    weight_bytes_per_token,
)
from colab_tts.precision import choose_dtype, prepare_model
from colab_tts.t2s import T2SConfig, T2SModel
from colab_tts.t2s_runner import decode_segments, random_prompt, random_segments

PHONEMES = [5, 24, 11, 30, 3, 17, 26, 8]  # the long text's 8 segments
TOKENS_PER_PHONEME = 2
PROMPT_TOKENS = 50  # reference-audio semantic prompt (2 s)
TARGET_SPEEDUP = 4.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared 2-core box two threads spin against other jobs)")
    ap.add_argument("--batch-1-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each long-text path; the fastest is kept")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the decode step")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = devices.accelerator().type
    config = T2SConfig(n_layer=args.layers, hidden_dim=args.hidden, n_head=args.heads, ffn_dim=4 * args.hidden)
    base = T2SModel(config).eval()
    half = half_dtype(device)
    models = {"float32": prepare_model(base, "float32", device)[0],
              half: prepare_model(_copy(base), half, device)[0]}
    if device == "cpu":
        models["int8"] = prepare_model(_copy(base), "int8", "cpu")[0]
    fp32 = models["float32"]
    print(f"T2S {config.n_layer} layers, hidden {config.hidden_dim}, {base.decode_param_count() / 1e6:.1f} M "
          f"params per token; device {device}, torch threads {torch.get_num_threads()}", flush=True)

    segments = random_segments(config, PHONEMES)
    prompt = random_prompt(config, PROMPT_TOKENS)
    caps = [TOKENS_PER_PHONEME * n for n in PHONEMES]
    for model in models.values():  # warm-up: allocator, kernels, quantized paths
        decode_segments(model, segments[:2], prompt, FIXED_LENGTH, "static", 2, [3, 3])

    print(f"\nLong text: {len(PHONEMES)} segments, {sum(caps)} tokens = {sum(caps) / 25:.1f} s of audio; "
          f"each path {args.repeats}x, interleaved, fastest kept (other jobs share this CPU)", flush=True)
    paths = {"upstream: 1 at a time, concat, float32": (fp32, "concat", 1)}
    paths.update({f"buckets of 8, static, {name}": (model, "static", 8) for name, model in models.items()})
    runs = {}
    for _ in range(args.repeats):
        for label, (model, cache, batch) in paths.items():
            g = decode_segments(model, segments, prompt, FIXED_LENGTH, cache, batch, caps)
            if label not in runs or g.seconds < runs[label].seconds:
                runs[label] = g
    upstream = runs["upstream: 1 at a time, concat, float32"]
    rows = [speed_row(label, g, upstream, decode_only=False, device=device) for label, g in runs.items()]
    print(Table(rows, columns=["technique", "tokens", "tokens/s", "speed-up", "RTF", "kind"]))
    same = runs["buckets of 8, static, float32"].tokens == upstream.tokens
    print(f"greedy tokens identical, upstream vs batched static float32: {'yes' if same else 'NO'}")
    cpu_only = ("int8", "float16", "bfloat16") if device == "cpu" else ()
    best = max((r for r in rows[1:] if not any(k in r["technique"] for k in cpu_only)), key=lambda r: r["speed-up"])
    verdict = "MET" if best["speed-up"] >= TARGET_SPEEDUP else "NOT met"
    print(f"best path that transfers to a GPU: {best['technique']}: {best['speed-up']:.2f}x the upstream way "
          f"(target >= {TARGET_SPEEDUP:g}x: {verdict}; measured on {device})", flush=True)
    fastest = max(rows[1:], key=lambda r: r["speed-up"])
    if fastest is not best:
        print(f"fastest on this CPU only: {fastest['technique']}: {fastest['speed-up']:.2f}x ({fastest['on a GPU']})")

    n = args.batch_1_tokens
    seg = [segments[3]]
    print(f"\nBatch 1, one segment of {PHONEMES[3]} phonemes, {n} tokens (decode loop only, "
          f"fastest of {args.repeats})", flush=True)
    variants = {"concat (upstream), float32": (fp32, "concat", n), "static, float32": (fp32, "static", n),
                "none (recompute), float32": (fp32, "none", max(4, n // 4))}
    variants.update({f"static, {name}": (model, "static", n) for name, model in models.items() if name != "float32"})
    if device == "cpu":
        variants["static, float16"] = (prepare_model(_copy(base), "float16", "cpu")[0], "static", n)
    b1_runs = {}
    for _ in range(args.repeats):
        for label, (model, cache, tokens) in variants.items():
            g = time_decode(model, seg, prompt, cache, tokens)
            if label not in b1_runs or g.decode_tokens_per_s > b1_runs[label].decode_tokens_per_s:
                b1_runs[label] = g
    ref = b1_runs["concat (upstream), float32"]
    b1 = [speed_row(label, g, ref, device=device) for label, g in b1_runs.items()]
    if args.compile:
        step = compiled_step(fp32)
        t0 = time.perf_counter()
        time_decode(fp32, seg, prompt, "static", n, warmup=0, fixed_shape=True, step_fn=step)
        warm = time.perf_counter() - t0
        row = speed_row("static + torch.compile, float32",
                        time_decode(fp32, seg, prompt, "static", n, warmup=0, fixed_shape=True, step_fn=step), ref,
                        device=device)
        row["technique"] += f" (first run incl. compile: {warm:.0f} s)"
        b1.append(row)
    print(Table(b1, columns=["technique", "tokens", "tokens/s", "speed-up", "RTF", "kind"]))
    print("\nWhat carries over to a GPU:")
    for line in headline(b1, rows, device):
        print(" ", line)
    overhead = host_overhead_per_step(config, device)
    print(overhead_verdict(overhead) if device == "cpu" else
          f"eager step overhead on this GPU (same operators, tiny tensors): {overhead * 1e3:.2f} ms")

    gpu = hardware.detect().gpu if device == "cuda" else None
    if gpu is not None and "bandwidth unknown" not in gpu.source:
        for r, dtype in ((b1[1], "float32"), (b1[3], half)):  # static float32, static half
            ceiling = hardware.decode_ceiling_tokens_per_s(weight_bytes_per_token(base, dtype), gpu)
            print(f"roofline {gpu.name}: {r['technique']}: {r['tokens/s']:.0f} tokens/s = "
                  f"{r['tokens/s'] / ceiling:.1%} of the {ceiling:.0f} tokens/s bandwidth ceiling")
    return best["speed-up"]


def half_dtype(device: str, gpu=None) -> str:
    """The half-precision dtype to compare on ``device``: chosen on the GPU's compute capability
    (float16 below CC 8.0, e.g. a T4), never on ``torch.cuda.is_bf16_supported()`` (True on a T4 by emulation)."""
    return choose_dtype("bfloat16", device, gpu).dtype


def _copy(base: T2SModel) -> T2SModel:
    model = T2SModel(base.config).eval()
    model.load_state_dict(base.state_dict())
    return model


if __name__ == "__main__":
    main()
