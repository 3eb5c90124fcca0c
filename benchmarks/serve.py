"""Serving Orpheus to N concurrent streams: our server's engine against the upstream example's way.

Same vLLM engine, same tiny random Orpheus-shaped model, same random SNAC, same seeds (so the same tokens
each way; every request runs to max_tokens, as the demo model would otherwise stop at random), same process, measured side by side in one run. For 1, 2, 4 and 8 concurrent streams:
time to first audio (p50 / p95), tokens per wall-clock second (the same tokens both ways: the fair
throughput ratio) and seconds of audio produced per wall-clock second.

- ours: colab_tts.serve.engine.StreamingEngine - one engine thread, vLLM's continuous batching, SNAC
  batched over every stream with a frame due (colab_tts.serve.streaming);
- upstream's way: canopyai/Orpheus-TTS realtime_streaming_example/main.py @835ac7c serves each request in
  its own thread (Flask ``threaded=True``) through ``OrpheusModel.generate_speech`` (orpheus_tts_pypi/
  orpheus_tts/engine_class.py: tokens from vLLM's engine handed to the request's thread through a queue) and
  ``tokens_decoder_sync`` (decoder.py: every 7 tokens from the 28th, SNAC decodes the last 28 tokens of that
  stream and keeps samples 2048:4096). Here: the same vLLM engine hands each request's tokens to its own
  thread, which runs ``colab_tts.snac_official.official_stream`` (that decoder re-implemented faithfully).
  Upstream's fixed ``request_id="req-001"`` default is not reproduced (concurrent requests would collide).

Also the SNAC step alone: one batched call over N streams' 4-frame windows against N per-stream calls.
The HTTP layer is left out of both ways (it is the same for both). The audio is noise.

    python benchmarks/serve.py               # about 2 minutes here
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import queue
import threading
import time

import numpy as np
import torch

from colab_tts.display import Table
from colab_tts.serve.engine import END, GROUP_FRAMES, StreamingEngine
from colab_tts.snac_decode import SAMPLE_RATE, SAMPLES_PER_FRAME
from colab_tts.snac_official import official_stream


class _TokenEngine(StreamingEngine):
    """The same engine thread, handing each request its raw token ids (upstream decodes in the request thread)."""

    def _deliver(self, stream, item):
        stream.queue.put(item)

    def _step(self):
        for out, active, new in self._advance():
            if new:
                self._deliver(active.stream, new)
            if out.finished:
                self.completed += 1
                self._end(out.request_id)


def _prompts(tts, n):
    return [tts.prompt_ids(f"Stream number {i} says hello.", "tara") for i in range(n)]


def run_ours(engine, prompts, seeds):
    async def one(prompt, seed):
        t0 = time.perf_counter()
        stream = engine.submit(prompt, engine.sampling(len(prompt), None, seed, full_length=True), asyncio.get_running_loop())
        first, samples = None, 0
        while (item := await stream.queue.get()) is not END:
            first = first if first is not None else time.perf_counter() - t0
            samples += len(item)
        return first, samples, stream.output_tokens

    async def all_of():
        return await asyncio.gather(*(one(p, s) for p, s in zip(prompts, seeds)))

    t0 = time.perf_counter()
    results = asyncio.run(all_of())
    return results, time.perf_counter() - t0


def run_upstream(engine, prompts, seeds, snac):
    from colab_tts.serve.engine import Stream

    results = [None] * len(prompts)

    def request(i, prompt, seed):  # one Flask request thread
        t0 = time.perf_counter()
        stream = Stream(f"upstream-{i}-{time.monotonic_ns()}", queue.Queue(), None, len(prompt))
        with engine._cv:
            engine._admitted += 1
            engine._commands.append(("add", stream, list(prompt), engine.sampling(len(prompt), None, seed, full_length=True)))
            engine._cv.notify()

        count = 0

        def tokens():
            nonlocal count
            while (item := stream.queue.get()) is not END:
                count += len(item)
                yield from item

        first, samples = None, 0
        for chunk in official_stream(tokens(), snac):
            first = first if first is not None else time.perf_counter() - t0
            samples += len(chunk) // 2
        results[i] = (first, samples, count)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=request, args=(i, p, s)) for i, (p, s) in enumerate(zip(prompts, seeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def summary(results, wall):
    """Per way: time to first audio, audio produced, and tokens per wall second. Both ways get the same tokens,
    but upstream's decoder never emits a stream's first frame or last two, so from the same tokens it gives less
    audio: 'tokens / s' (the same work, timed) is the fair throughput ratio; 'audio s / s' credits that audio too."""
    firsts = [f for f, _, _ in results if f is not None]
    audio = sum(s for _, s, _ in results) / SAMPLE_RATE
    tokens = sum(t for _, _, t in results)
    return {"ttfa p50 s": float(np.percentile(firsts, 50)) if firsts else float("nan"),
            "ttfa p95 s": float(np.percentile(firsts, 95)) if firsts else float("nan"),
            "tokens": tokens, "audio s": audio, "wall s": wall, "tokens / s": tokens / wall,
            "audio s / s": audio / wall}


def snac_ratio(snac, n, rounds=5):
    """One batched decoder call over n streams' 4-frame windows vs n calls of one window (best of rounds)."""
    rng = np.random.default_rng(0)
    latent = SAMPLES_PER_FRAME // 512 * 4
    z = snac.quantizer.from_codes([torch.tensor(rng.integers(0, 4096, (n, 4 * k))) for k in (1, 2, 4)])
    assert z.shape[-1] == latent
    best = {"batched": float("inf"), "per stream": float("inf")}
    with torch.inference_mode():
        for _ in range(rounds):
            t0 = time.perf_counter()
            snac.decoder(z)
            best["batched"] = min(best["batched"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i in range(n):
                snac.decoder(z[i: i + 1])
            best["per stream"] = min(best["per stream"], time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=2.0, help="longest audio per request (sets max_tokens)")
    ap.add_argument("--group-frames", type=int, nargs="+", default=[1, GROUP_FRAMES],
                    help="our stream's frames per SNAC window after the first chunk (stream_audio's group_frames)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per setting, interleaved; the best is kept")
    args = ap.parse_args(argv)

    from colab_tts.orpheus import OrpheusTTS

    if torch.cuda.is_available():
        device = f"on this GPU ({torch.cuda.get_device_name(0)})"
    else:
        device = f"on this CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"
    tts = OrpheusTTS.offline_demo(backend="vllm", max_audio_seconds=args.seconds, max_num_seqs=max(args.streams),
                                  engine_log="build/benchmarks/serve_vllm.log")
    print(f"offline demo model (random weights: the audio is noise); {tts.notes[0]}; measured {device}")
    ways = {f"ours, group {g}": g for g in args.group_frames}
    ways["upstream"] = None
    rows = []
    for n in args.streams:
        prompts, seeds = _prompts(tts, n), list(range(100, 100 + n))
        best = {}
        for _ in range(args.rounds):
            for name, group in ways.items():  # interleaved; one engine thread at a time on the same vLLM engine
                if group is None:
                    engine = _TokenEngine(tts, max_num_seqs=max(args.streams), queue_limit=2)
                    s = summary(*run_upstream(engine, prompts, seeds, tts.snac))
                else:
                    engine = StreamingEngine(tts, max_num_seqs=max(args.streams), queue_limit=2, group_frames=group)
                    s = summary(*run_ours(engine, prompts, seeds))
                engine.stop()
                if name not in best or s["tokens / s"] > best[name]["tokens / s"]:
                    best[name] = s
        up = best["upstream"]
        for name in ways:
            rows.append({"streams": n, "way": name, **best[name]})
        for name in list(ways)[:-1]:
            rows.append({"streams": n, "way": f"{name} / upstream", "ttfa p50 s": best[name]["ttfa p50 s"] / up["ttfa p50 s"],
                         "ttfa p95 s": best[name]["ttfa p95 s"] / up["ttfa p95 s"],
                         "tokens": best[name]["tokens"] / up["tokens"],
                         "audio s": best[name]["audio s"] / up["audio s"], "wall s": float("nan"),
                         "tokens / s": best[name]["tokens / s"] / up["tokens / s"],
                         "audio s / s": best[name]["audio s / s"] / up["audio s / s"]})
            if best[name]["tokens"] != up["tokens"]:
                raise RuntimeError(f"{name} and upstream generated different numbers of tokens "
                                   f"({best[name]['tokens']} vs {up['tokens']}): the comparison would not be fair")
    print(Table(rows, title=f"measured {device}: ours vs upstream's way (best of {args.rounds}; ratio rows: ours / "
                            "upstream; time to first audio lower is better, audio s / s higher is better)", digits=3))
    snac_rows = []
    for n in args.streams:
        t = snac_ratio(tts.snac, n)
        snac_rows.append({"streams": n, "batched ms": t["batched"] * 1e3, "per-stream ms": t["per stream"] * 1e3,
                          "per-stream / batched": t["per stream"] / t["batched"]})
    print(Table(snac_rows, title=f"measured {device}: one SNAC step, 4-frame windows of N streams", digits=3))
    for r in rows:
        if r["streams"] == max(args.streams) and r["way"].endswith("/ upstream"):
            print(f"\nat {r['streams']} streams, measured {device}: {r['way'][:-11]} gets through the same tokens at "
                  f"{r['tokens / s']:.2f}x the upstream way's rate (goal >= 2x; {r['audio s / s']:.2f}x its audio seconds "
                  f"per second, as upstream's decoder drops 3 frames per stream) and {r['ttfa p95 s']:.2f}x its p95 "
                  "time to first audio (goal < 1)")
    tts.close()


if __name__ == "__main__":
    main()
