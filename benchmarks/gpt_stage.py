"""GPT-SoVITS GPT stage: the upstream way against this project's best path, side by side in one run.

Real-size T2S (24 layers, hidden 512) with random weights. A long text of 8 segments of mixed
lengths is decoded (a) the upstream way - one segment at a time, concat cache, fp32 - and (b) in
length buckets with a static cache, in fp32 / bf16 / int8; then batch-1 per-token speed of every
variant. Random weights never choose when to stop, so EOS is blocked and each segment gets the
tokens a real voice would take (TOKENS_PER_PHONEME, an assumption: ~10-12 phonemes per second of
speech at 25 tokens/s). Prints tokens/s, speed-up over upstream and the real-time factor.

    python benchmarks/gpt_stage.py                 # real size, a few minutes on 2 shared cores
    python benchmarks/gpt_stage.py --compile       # adds torch.compile of the decode step (slow warm-up on CPU)
    python benchmarks/gpt_stage.py --layers 4 --hidden 128 --heads 4   # quick smoke run
"""

from __future__ import annotations

import argparse
import time

import torch

from colab_tts import hardware
from colab_tts.decoding import (
    Sampling, T2SRunner, compiled_step, decode_segments, generate, prepare_model, random_prompt, random_segments,
    weight_bytes_per_token,
)
from colab_tts.display import Table
from colab_tts.t2s import T2SConfig, T2SModel

PHONEMES = [6, 30, 14, 40, 4, 22, 34, 10]  # the long text's 8 segments
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
    ap.add_argument("--batch-1-tokens", type=int, default=32)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the decode step")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = T2SConfig(n_layer=args.layers, hidden_dim=args.hidden, n_head=args.heads, ffn_dim=4 * args.hidden)
    base = T2SModel(config).eval()
    fp32, _ = prepare_model(base, "float32", device)
    half = "bfloat16" if device == "cpu" or torch.cuda.is_bf16_supported() else "float16"
    models = {"float32": fp32, half: prepare_model(_copy(base, config), half, device)[0]}
    if device == "cpu":
        models["int8"] = prepare_model(_copy(base, config), "int8", "cpu")[0]
    print(f"T2S {config.n_layer} layers, hidden {config.hidden_dim}, {base.decode_param_count() / 1e6:.1f} M "
          f"params per token; device {device}, torch threads {torch.get_num_threads()}")

    segments = random_segments(config, PHONEMES)
    prompt = random_prompt(config, PROMPT_TOKENS)
    caps = [TOKENS_PER_PHONEME * n for n in PHONEMES]
    no_eos = Sampling(greedy=True, min_new_tokens=10**6)  # random weights: block EOS, stop at the cap

    # warm-up (allocator, kernels) so neither side pays first-call costs
    decode_segments(fp32, segments[:2], prompt, no_eos, "concat", 1, [4, 4])

    print(f"\nLong text: {len(PHONEMES)} segments, {sum(caps)} tokens = {sum(caps) / 25:.1f} s of audio")
    print("  decoding the upstream way ...", flush=True)
    upstream = decode_segments(fp32, segments, prompt, no_eos, "concat", batch_size=1, max_new_tokens=caps)
    rows = [_row("upstream: 1 at a time, concat, fp32", upstream, upstream)]
    runs = {}
    for name, model in models.items():
        print(f"  decoding in buckets of 8, {name} ...", flush=True)
        runs[name] = decode_segments(model, segments, prompt, no_eos, "static", batch_size=8, max_new_tokens=caps)
        rows.append(_row(f"buckets of 8, static, {name}", runs[name], upstream))
    print(Table(rows))
    same = runs["float32"].tokens == upstream.tokens
    print(f"greedy tokens identical, upstream vs batched static fp32: {'yes' if same else 'NO'}")
    best = max(rows[1:], key=lambda r: r["speed-up"])
    verdict = "MET" if best["speed-up"] >= TARGET_SPEEDUP else "NOT met"
    print(f"best path: {best['path']}: {best['speed-up']:.2f}x the upstream way "
          f"(target >= {TARGET_SPEEDUP:g}x: {verdict})")

    print(f"\nBatch 1, one segment of {PHONEMES[3]} phonemes, {args.batch_1_tokens} tokens (decode loop only)")
    seg = [segments[3]]
    n = args.batch_1_tokens
    b1 = []
    ref = _b1(fp32, seg, prompt, "concat", n)
    b1.append(_b1_row("concat (upstream)", "float32", ref, ref))
    b1.append(_b1_row("static", "float32", _b1(fp32, seg, prompt, "static", n), ref))
    b1.append(_b1_row("none (recompute)", "float32", _b1(fp32, seg, prompt, "none", max(4, n // 4)), ref))
    for name, model in models.items():
        if name != "float32":
            b1.append(_b1_row("static", name, _b1(model, seg, prompt, "static", n), ref))
    if device == "cpu":
        fp16 = prepare_model(_copy(base, config), "float16", "cpu")[0]
        b1.append(_b1_row("static", "float16", _b1(fp16, seg, prompt, "static", n), ref))
    if args.compile:
        t0 = time.perf_counter()
        step = compiled_step(fp32)
        _b1(fp32, seg, prompt, "static", n, fixed_shape=True, step_fn=step, steps=3)  # same shapes as below
        warm = time.perf_counter() - t0
        row = _b1_row("static + torch.compile", "float32",
                      _b1(fp32, seg, prompt, "static", n, fixed_shape=True, step_fn=step), ref)
        row["note"] = f"warm-up {warm:.0f} s"
        b1.append(row)
    print(Table(b1))
    slower = [f"{r['variant']} {r['dtype']}" for r in b1[1:] if r["vs upstream"] < 1 and "recompute" not in r["variant"]]
    print("slower than upstream at batch 1: " + (", ".join(slower) if slower else "none") +
          " (recompute is slower by design: it redoes the whole sequence every step)")

    if device == "cuda":
        gpu = hardware.detect().gpu
        for r in b1:
            if r["variant"] in ("static", "concat (upstream)") and r["dtype"] in ("float32", half):
                ceiling = hardware.decode_ceiling_tokens_per_s(weight_bytes_per_token(base, r["dtype"]), gpu)
                print(f"roofline {gpu.name}: {r['variant']} {r['dtype']}: {r['tokens/s']:.0f} tokens/s = "
                      f"{r['tokens/s'] / ceiling:.1%} of the {ceiling:.0f} tokens/s bandwidth ceiling")
    return best["speed-up"]


def _copy(base: T2SModel, config: T2SConfig) -> T2SModel:
    model = T2SModel(config).eval()
    model.load_state_dict(base.state_dict())
    return model


def _row(path, g, upstream):
    return {"path": path, "tokens": g.n_tokens, "seconds": g.seconds, "tokens/s": g.tokens_per_s,
            "speed-up": upstream.seconds / g.seconds, "RTF": g.real_time_factor}


def _b1(model, segments, prompt, cache, n, steps=None, **kw):
    sampling = Sampling(greedy=True, min_new_tokens=10**6)
    runner = T2SRunner(model, segments, prompt, cache, max_new_tokens=n, **kw)
    return generate(runner, sampling, model.config.eos_id, steps or n)


def _b1_row(variant, dtype, g, ref):
    return {"variant": variant, "dtype": dtype, "tokens/s": g.decode_tokens_per_s,
            "vs upstream": g.decode_tokens_per_s / ref.decode_tokens_per_s,
            "RTF": 25.0 / g.decode_tokens_per_s, "note": ""}


if __name__ == "__main__":
    main()
