"""SNAC decoding speed: colab_tts against a faithful re-implementation of Orpheus's official decoder.

Ten seconds of random valid audio tokens and the same random SNAC 24 kHz weights for every method
(noise off so outputs can be compared). Times are CPU seconds of this process (time.process_time) on
one thread by default, so other jobs on a shared machine barely move them (wall time is printed too);
rounds are interleaved (A B C A B C ...) and the best of each method is kept. Prints the speed ratios
side by side, the error of each method against the one-call decode, and checks that the codes are
identical to the official mapping.

    python benchmarks/snac_decode.py            # the comparison (about a minute here)
    python benchmarks/snac_decode.py --explore  # also sweep chunk size, context, bf16, threads
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from colab_tts import snac_decode as sd
from colab_tts import snac_official
from colab_tts.display import Table


def random_tokens(seconds: float, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    frames = int(seconds * sd.SAMPLE_RATE / sd.SAMPLES_PER_FRAME)
    # codes 1..4095: the official decoder skips a code of 0 (`if token > 0`), which would shift its frames
    codes = [torch.tensor(rng.integers(1, sd.CODES_PER_SLOT, (1, frames * k))) for k in (1, 2, 4)]
    return sd.codes_to_audio_tokens(codes)


def official_codes(ids) -> np.ndarray:
    """Codes as the official decoder computes them, token by token."""
    return np.array([snac_official.official_code(t, i) for i, t in enumerate(ids)]).reshape(-1, 7)


def best_times(methods: dict, rounds: int, clock=time.process_time) -> dict:
    times = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {name: min(ts) for name, ts in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (CPU time is summed over threads)")
    ap.add_argument("--explore", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    ids = random_tokens(args.seconds)
    frames, invalid, dropped = sd.tokens_to_frames(ids)
    same = np.array_equal(frames, official_codes(ids))
    print(f"{len(ids)} tokens = {len(frames)} frames = {len(frames) * sd.SAMPLES_PER_FRAME / sd.SAMPLE_RATE:.2f} s;"
          f" codes identical to the official mapping: {same}")
    if not same or invalid or dropped:
        raise SystemExit("code mapping differs from the official formula")

    official = sd.build_snac(pretrained=False, noise=False, fold=False)  # as SNAC.from_pretrained gives it
    snac = sd.build_snac(pretrained=False, noise=False)  # same seed, weight norm folded
    stream = lambda: np.concatenate(list(sd.stream_audio(ids, snac)))  # noqa: E731
    methods = {
        "official decoder (28 tokens every 7)": lambda: snac_official.official_decode(ids, official),
        "one snac.decode call": lambda: sd.decode_one_call(ids, official),
        "decode_audio": lambda: sd.decode_audio(ids, snac),
        "stream_audio (per frame)": stream,
    }
    ref = sd.decode_one_call(ids, official)
    outputs = {name: fn() for name, fn in methods.items()}  # warm-up, and the outputs to compare
    wall0 = time.perf_counter()
    times = best_times(methods, args.rounds)
    wall = time.perf_counter() - wall0
    base = times["official decoder (28 tokens every 7)"]
    rows = []
    for name, t in times.items():
        out = outputs[name]
        if name.startswith("official"):  # it emits frames 1..F-3 only, as int16
            cmp = ref[sd.SAMPLES_PER_FRAME: sd.SAMPLES_PER_FRAME + len(out)]
        else:
            cmp = ref
        rows.append({"method": name, "best CPU s": t, "x realtime": args.seconds / t, "speed-up vs official": base / t,
                     "max |diff| vs one call": float(np.abs(out - cmp).max()), "samples": len(out)})
    where = f"on this CPU ({platform.processor() or platform.machine()})"
    print(Table(rows, title=f"measured {where}: SNAC 24 kHz decode of {args.seconds:g} s, "
                            f"{torch.get_num_threads()} thread(s), best of {args.rounds} (all rounds took {wall:.0f} s "
                            "of wall time); random weights, so only speed and agreement mean anything", digits=3))
    ratio = base / times["decode_audio"]
    print(f"\ndecode_audio is {ratio:.1f}x faster than the official decoder {where} (target >= 4x, goal 5x)")

    if args.explore:
        explore(ids, snac, ref, args.rounds)


def explore(ids, snac, ref, rounds):
    variants = {f"chunk {chunk}, context 3": dict(chunk_frames=chunk, context_frames=3) for chunk in (8, 16, 32, 64)}
    variants["chunk 32, context 2"] = dict(chunk_frames=32, context_frames=2)
    bf16 = sd.build_snac(pretrained=False, noise=False).to(torch.bfloat16)  # runs on AMX where the CPU has it
    fns = {k: (lambda kw=kw: sd.decode_audio(ids, snac, **kw)) for k, kw in variants.items()}
    fns["chunk 32, context 3, bfloat16 codec"] = lambda: sd.decode_audio(ids, bf16, chunk_frames=32)
    times = best_times(fns, rounds)
    rows = [{"variant": k, "best CPU s": t, "max |diff| vs one call": float(np.abs(fns[k]() - ref).max())}
            for k, t in times.items()]
    print(Table(rows, title="decode_audio variants", digits=4))


if __name__ == "__main__":
    main()
