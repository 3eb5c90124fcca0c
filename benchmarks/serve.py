"""Serving Orpheus to N concurrent streams: our server's engine against the upstream example's way.

Same vLLM engine, same tiny random Orpheus-shaped model, same random SNAC, same seeds (so the same tokens
each way; every request runs to max_tokens, as the demo model would otherwise stop at random), same process, measured side by side in one run. For 1, 2, 4 and 8 concurrent streams:
time to first audio (p50 / p95), tokens per wall-clock second (the same tokens both ways: the fair
throughput ratio) and seconds of audio produced per wall-clock second.

- ours: colab_tts.serve.engine.StreamingEngine - one engine thread, vLLM's continuous batching, SNAC
  batched over every stream with a frame due (colab_tts.serve.streaming), decoded in a thread of its own while
  vLLM runs the next step, each stream's first chunk after 2 frames; "ours, first chunk at 4 frames" waits for
  4 as before; "ours before" is the engine before the decode thread (SNAC inline after each step, first at 4);
- upstream's way: canopyai/Orpheus-TTS realtime_streaming_example/main.py @835ac7c serves each request in
  its own thread (Flask ``threaded=True``) through ``OrpheusModel.generate_speech`` (orpheus_tts_pypi/
  orpheus_tts/engine_class.py: tokens from vLLM's engine handed to the request's thread through a queue) and
  ``tokens_decoder_sync`` (decoder.py: every 7 tokens from the 28th, SNAC decodes the last 28 tokens of that
  stream and keeps samples 2048:4096). Here: the same vLLM engine hands each request's tokens to its own
  thread, which runs ``colab_tts.snac_official.official_stream`` (that decoder re-implemented faithfully).
  Upstream's fixed ``request_id="req-001"`` default is not reproduced (concurrent requests would collide).

``--profile`` adds where the wall time went per way: vLLM's step (wall and the stepping thread's CPU), the
SNAC calls, and the process's CPU time.

Also the SNAC step alone: one batched call over N streams' 4-frame windows against N per-stream calls.
The HTTP layer is left out of both ways (it is the same for both). The audio is noise.

    python benchmarks/serve.py               # about 8 minutes on 2 cores
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

from colab_tts import snac_official
from colab_tts.display import Table
from colab_tts.serve.engine import END, GROUP_FRAMES, StreamingEngine
from colab_tts.serve.streaming import BatchedDecoder
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


class Profile:
    """Wall and CPU time inside vLLM's step and inside SNAC, for --profile (patched in, then restored)."""

    def __init__(self, tts):
        self.tts, self.times = tts, {}

    def _timed(self, name, fn):
        def timed(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                wall, cpu = self.times.get(name, (0.0, 0.0))
                self.times[name] = (wall + time.perf_counter() - t0, cpu + time.thread_time() - c0)
        return timed

    def __enter__(self):
        self.times, self.cpu0 = {}, time.process_time()
        engine = self.tts.backend.engine
        self._saved = engine.step, BatchedDecoder.decode, snac_official._official_convert_to_audio
        engine.step = self._timed("vllm step", engine.step)
        BatchedDecoder.decode = self._timed("snac", BatchedDecoder.decode)
        snac_official._official_convert_to_audio = self._timed("snac", snac_official._official_convert_to_audio)
        return self

    def __exit__(self, *exc):
        self.tts.backend.engine.step, BatchedDecoder.decode, snac_official._official_convert_to_audio = self._saved
        self.process_cpu = time.process_time() - self.cpu0

    def row(self):
        step, snac = self.times.get("vllm step", (0, 0)), self.times.get("snac", (0, 0))
        return {"vllm step s": step[0], "step thread cpu s": step[1], "snac s (all threads)": snac[0],
                "process cpu s": self.process_cpu}


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
    ap.add_argument("--group-frames", type=int, nargs="+", default=[GROUP_FRAMES],
                    help="our stream's frames per SNAC window after the first chunk (stream_audio's group_frames)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per setting, interleaved; the best is kept")
    ap.add_argument("--profile", action="store_true", help="also print where the wall time went, per way")
    args = ap.parse_args(argv)

    from colab_tts.orpheus import OrpheusTTS

    if torch.cuda.is_available():
        device = f"on this GPU ({torch.cuda.get_device_name(0)})"
    else:
        device = f"on this CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"
    tts = OrpheusTTS.offline_demo(backend="vllm", max_audio_seconds=args.seconds, max_num_seqs=max(args.streams),
                                  engine_log="build/benchmarks/serve_vllm.log")
    print(f"offline demo model (random weights: the audio is noise); {tts.notes[0]}; measured {device}")
    ways = {}  # name: StreamingEngine settings (None: upstream's way)
    for g in args.group_frames:
        suffix = "" if len(args.group_frames) == 1 else f", group {g}"
        ways[f"ours{suffix}"] = {"group_frames": g}
        ways[f"ours, first chunk at 4 frames{suffix}"] = {"group_frames": g, "first_frames": 4}
        ways[f"ours before: serial, first at 4{suffix}"] = {"group_frames": g, "first_frames": 4, "overlap": False}
    ways["upstream"] = None
    rows, profiles = [], []
    for n in args.streams:
        prompts, seeds = _prompts(tts, n), list(range(100, 100 + n))
        best = {}
        for _ in range(args.rounds):
            for name, settings in ways.items():  # interleaved; one engine thread at a time on the same vLLM engine
                with Profile(tts) as prof:
                    if settings is None:
                        engine = _TokenEngine(tts, max_num_seqs=max(args.streams), queue_limit=2, overlap=False)
                        s = summary(*run_upstream(engine, prompts, seeds, tts.snac))
                    else:
                        engine = StreamingEngine(tts, max_num_seqs=max(args.streams), queue_limit=2, **settings)
                        s = summary(*run_ours(engine, prompts, seeds))
                    engine.stop()
                if name not in best or s["tokens / s"] > best[name]["tokens / s"]:
                    best[name] = s
                    if args.profile:
                        best[name]["profile"] = {"streams": n, "way": name, "wall s": s["wall s"], **prof.row()}
        up = best["upstream"]
        for name in ways:
            profile = best[name].pop("profile", None)
            if profile:
                profiles.append(profile)
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
    if profiles:
        print(Table(profiles, title=f"measured {device}: where the wall time went (the runs above; vLLM's step is the "
                                    "same work both ways; SNAC time is summed over the threads that ran it)", digits=2))
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
