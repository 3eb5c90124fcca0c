"""vLLM stepped in one thread for many streaming requests, with SNAC batched across them.

vLLM's asyncio engine (``AsyncLLM``) cannot run in this process: vLLM 0.32 refuses an asyncio engine core
without multiprocessing ("Running EngineCore in asyncio without multiprocessing is not currently supported",
vllm/v1/engine/core_client.py ``EngineCoreClient.make_client``), and a child process is what a notebook kernel
and ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` avoid (colab_tts.kv_probe). So the same continuous batching is driven
here by hand: one thread owns vLLM's ``LLMEngine``; requests are added and aborted between its steps (vLLM
schedules every unfinished request into each step), and after each step the frames every stream can emit go
through :class:`~colab_tts.serve.streaming.BatchedDecoder` together, in a thread of their own
(:class:`~colab_tts.serve.streaming.DecodeThread`), so SNAC decodes step k's frames while vLLM runs step k+1.
Audio goes to each request's own asyncio queue, keyed by its vLLM request id, so no request can receive
another's audio.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from .schema import ApiError
from .streaming import BatchedDecoder, DecodeThread, FrameStream, _torch_threads, _use_torch_threads

END = object()  # the last item of a stream's queue
# Frames per SNAC window after the first chunk: 4 decodes 2 + 4 + 1 frames per 4 emitted instead of 4 per frame;
# chosen with benchmarks/serve.py (1.5x the audio seconds per second of 1 at 8 streams on a 2-core CPU).
GROUP_FRAMES = 4
# Frames in before a stream's first chunk: 2 emits frame 0 with one frame of lookahead, as every later frame has,
# after 14 tokens instead of 28 (upstream's example waits for 28); benchmarks/serve.py measures 4 beside it.
FIRST_FRAMES = 2


@dataclass
class Stream:
    """One request as the web side sees it: its id, its queue of float32 chunks, then END or an ApiError."""

    request_id: str
    queue: object  # asyncio.Queue
    loop: object
    prompt_tokens: int
    started: float = field(default_factory=time.perf_counter)
    output_tokens: int = 0
    done: bool = False


@dataclass
class _Active:
    stream: Stream
    frames: FrameStream
    seen: int = 0


class StreamingEngine:
    """Owns the engine thread. ``submit`` from the event loop; chunks arrive on the returned stream's queue."""

    def __init__(self, tts, *, max_num_seqs: int, queue_limit: int = 4, group_frames: int = GROUP_FRAMES,
                 first_frames: int = FIRST_FRAMES, overlap: bool = True):
        from vllm import SamplingParams

        self.tts = tts
        self.engine = tts.backend.engine
        self._params = SamplingParams
        self.max_num_seqs = max_num_seqs
        self.queue_limit = queue_limit
        self.group_frames = group_frames
        self.first_frames = first_frames  # frames in before a stream's first chunk (stream_audio's first_frames)
        self.decoder = BatchedDecoder(tts.snac)
        self.overlap = overlap  # False: SNAC inline after each step (the benchmark's serial comparison)
        self.state = "running"
        self.failure: str | None = None  # why the engine failed, once it has
        self.steps = 0
        self.completed = 0
        self.aborted = 0
        self._durations: list[float] = []
        self._cv = threading.Condition()
        self._commands: list[tuple] = []
        self._active: dict[str, _Active] = {}
        self._admitted = 0  # submitted and not yet ended (under the lock)
        self._stats = self._read_stats()
        self._threads = _torch_threads()  # what vLLM's engine was built with, in this (the caller's) thread
        self._decoding = DecodeThread(self.decoder, self._deliver, self._decode_failed, threaded=overlap,
                                     threads=self._threads)
        self._thread = threading.Thread(target=self._engine_thread, name="colab-tts-engine", daemon=True)
        self._thread.start()

    def _engine_thread(self) -> None:
        _use_torch_threads(self._threads)
        self._run()

    # --- the web side ----------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Requests admitted at once: max_num_seqs decoding plus the rest waiting in vLLM's queue."""
        return self.max_num_seqs * self.queue_limit

    def sampling(self, prompt_len: int, temperature: float | None, seed: int | None, *, full_length: bool = False):
        """vLLM sampling for one request (Orpheus's defaults). ``full_length``: no early stop (benchmarks)."""
        from ..orpheus import SAMPLING

        s = self.tts._sampling(prompt_len, SAMPLING["temperature"], SAMPLING["top_p"], SAMPLING["repetition_penalty"],
                               None, seed)
        if temperature is not None:
            s["temperature"] = float(temperature)  # 0: greedy
        from ..orpheus_engines import END_OF_SPEECH

        if full_length:
            s["min_tokens"] = s["max_tokens"]
        return self._params(**s, stop_token_ids=[END_OF_SPEECH], detokenize=False)

    def submit(self, prompt: list[int], sampling, loop) -> Stream:
        import asyncio

        with self._cv:
            if self.state == "failed":  # it never runs again: only a new server does
                raise ApiError(503, f"the engine failed ({self.failure}): this server cannot serve again; restart it "
                                    "(server.stop() then colab_tts.serve.start(), or run `python -m colab_tts serve` "
                                    "again)", code="engine_failed", type_="server_error")
            if self.state != "running":
                raise ApiError(503, f"the server is {self.state}: try again once it runs", code="unavailable",
                               type_="server_error")
            if self._admitted >= self.capacity:
                raise ApiError(429, f"{self._admitted} requests are in flight, the most this server admits "
                                    f"(max_num_seqs {self.max_num_seqs} x queue limit {self.queue_limit}): retry "
                                    "after the Retry-After seconds", code="rate_limit_exceeded",
                               type_="rate_limit_error", headers={"Retry-After": str(self.retry_after())})
            self._admitted += 1
            stream = Stream(f"speech-{uuid.uuid4().hex}", asyncio.Queue(), loop, len(prompt))
            self._commands.append(("add", stream, list(prompt), sampling))
            self._cv.notify()
        return stream

    def abort(self, stream: Stream) -> None:
        """The client went away: stop its request in vLLM (its KV blocks return) and drop its audio."""
        with self._cv:
            if not stream.done:
                self._commands.append(("abort", stream))
                self._cv.notify()

    def retry_after(self) -> int:
        typical = float(np.median(self._durations[-50:])) if self._durations else 1.0
        return max(1, math.ceil(typical))

    def stats(self) -> dict:
        failure = {"failure": self.failure} if self.failure else {}
        return dict(self._stats, **failure, state=self.state, admitted=self._admitted, capacity=self.capacity,
                    steps=self.steps, completed=self.completed, aborted=self.aborted,
                    snac_calls=self.decoder.calls, snac_windows=self.decoder.windows)

    def stop(self, timeout: float = 30) -> None:
        """End every stream (each ends after the audio it already has; SSE clients get an error event saying it
        was cut short) and stop the thread."""
        with self._cv:
            if self.state == "running":
                self.state = "stopping"
            self._cv.notify()
        self._thread.join(timeout)
        self.state = "stopped"

    def release(self) -> None:
        """After ``stop``: let go of vLLM's engine and SNAC, so closing the model frees their memory."""
        if self._thread.is_alive() or self._decoding.alive:  # past stop's timeout: it keeps what it uses
            return
        self.engine = self.tts = None
        self.decoder.snac = None

    # --- the engine thread -----------------------------------------------------------------------

    def _scheduler(self):
        return self.engine.engine_core.engine_core.scheduler

    def _read_stats(self) -> dict:
        try:
            scheduler = self._scheduler()
            pool = scheduler.kv_cache_manager.block_pool
            return {"running": len(scheduler.running), "waiting": len(scheduler.waiting),
                    "kv_cache_usage": round(float(scheduler.kv_cache_manager.usage), 4),
                    "kv_free_blocks": pool.get_num_free_blocks(), "kv_total_blocks": pool.num_gpu_blocks - 1}
        except AttributeError:  # another vLLM layout: the counts we keep ourselves still hold
            return {"running": len(self._active)}

    def _deliver(self, stream: Stream, item) -> None:
        try:
            stream.loop.call_soon_threadsafe(stream.queue.put_nowait, item)
        except RuntimeError:  # its event loop is closed: nobody is listening
            pass

    def _end(self, rid: str, item=END) -> None:
        active = self._active.pop(rid, None)
        if active is None:
            return
        with self._cv:
            self._admitted -= 1
            active.stream.done = True
        self._durations.append(time.perf_counter() - active.stream.started)
        del self._durations[:-100]
        self._decoding.item(active.stream, item)  # after the audio still being decoded for it

    def _decode_failed(self, stream: Stream, err: BaseException) -> None:
        self._deliver(stream, ApiError(500, f"SNAC decoding failed: {type(err).__name__}: {err}", code="engine_error",
                                       type_="server_error"))

    def _apply(self, commands) -> None:
        try:
            from vllm.inputs import tokens_input as as_input
        except ImportError:
            from vllm.inputs import TokensPrompt

            def as_input(ids):
                return TokensPrompt(prompt_token_ids=ids)

        for command in commands:
            if command[0] == "add":
                _, stream, prompt, sampling = command
                self.engine.add_request(stream.request_id, as_input(prompt), sampling)
                self._active[stream.request_id] = _Active(stream, FrameStream(first_frames=self.first_frames,
                                                                                group_frames=self.group_frames))
            elif command[1].request_id in self._active:
                self.engine.abort_request([command[1].request_id])
                self.aborted += 1
                self._end(command[1].request_id)

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._commands and not self._active and self.state == "running":
                        self._cv.wait()
                    commands, self._commands = self._commands, []
                    stopping = self.state != "running"
                self._apply(commands)
                if commands:
                    self._stats = self._read_stats()
                if stopping:
                    self._shutdown()
                    return
                if self._active:
                    self._step()
                if self._decoding.error is not None:
                    raise self._decoding.error
        except Exception as err:  # a failing engine ends every stream with the reason, never hangs them
            self.failure = f"{type(err).__name__}: {err}"
            self.state = "failed"
            error = ApiError(500, f"the engine failed: {self.failure}", code="engine_error", type_="server_error")
            rids = list(self._active)
            with contextlib.suppress(Exception):  # their KV blocks return, as on every other path that ends them
                if rids:
                    self.engine.abort_request(rids)
            for rid in rids:
                self._end(rid, error)
            self._refuse_pending(error)
            with contextlib.suppress(Exception):
                self._stats = self._read_stats()
            raise
        finally:
            self._decoding.close()

    def _advance(self):
        """One vLLM step: yields (request output, its active request, the token ids new since the last step)."""
        outputs = self.engine.step()
        self.steps += 1
        for out in outputs:
            active = self._active.get(out.request_id)
            if active is None:
                continue
            tokens = out.outputs[0].token_ids
            new, active.seen = list(tokens[active.seen:]), len(tokens)
            yield out, active, new

    def _step(self) -> None:
        for out, active, new in self._advance():
            active.frames.add_tokens(new)
            active.stream.output_tokens = active.seen
            active.frames.finished = out.finished
        due = self.decoder.plan({rid: a.frames for rid, a in self._active.items()})
        self._decoding.audio([(self._active[rid].stream, window) for rid, window in due])
        for rid in [rid for rid, a in self._active.items() if a.frames.finished and a.frames.window() is None]:
            self.completed += 1
            self._end(rid)
        self._stats = self._read_stats()

    def _shutdown(self) -> None:
        # Cut short, not finished: an SSE client gets an error event instead of speech.audio.done and its usage.
        cut = ApiError(503, "the server is shutting down: this request's audio was cut short; send it again once "
                            "the server runs", code="server_shutting_down", type_="server_error")
        rids = list(self._active)
        if rids:
            self.engine.abort_request(rids)
        for rid in rids:
            self._end(rid, cut)
        self._refuse_pending(cut)
        self._stats = self._read_stats()

    def _refuse_pending(self, error) -> None:
        """Requests submitted but not yet added to vLLM end with ``error``."""
        with self._cv:
            for command in self._commands:
                if command[0] == "add":
                    self._admitted -= 1  # admitted by submit, never added: its slot returns here
                    command[1].done = True
                    self._deliver(command[1], error)
            self._commands.clear()
