"""How much memory did that take, and keeping idle modules off the GPU.

``track_peak`` measures the peak bytes held by tensors allocated inside a block: on CUDA from
torch's own peak statistics, on the CPU by counting live tensor storage with a dispatch mode.

Offloading keeps a module's weights in host memory and puts them on the accelerator only while
it runs: a context manager (``on_accelerator``), a hook (``offload_hook``), and a whole-pipeline
"one stage at a time" mode (``model_offload``, like IndexTTS-2's low-VRAM mode or diffusers'
``enable_model_cpu_offload``). On a machine without a GPU the accelerator is *emulated* in host
memory: moving a module there copies its weights, as a host-to-device copy would, and moving it
back frees the copy, so ``track_peak`` sees the same allocations it would see on a GPU.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .devices import accelerator, resolve_device  # noqa: F401  (accelerator: re-exported, used to live here)
from .units import MIB

# --- peak memory -------------------------------------------------------------------------------

@dataclass
class PeakMemory:
    """What ``track_peak`` measured. Bytes are counted from the level at entry."""

    device: torch.device
    peak_bytes: int = 0
    end_bytes: int = 0  # still held at exit (allocated inside, not yet freed)

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / MIB

    def __str__(self) -> str:
        return f"peak {self.peak_mib:,.1f} MiB on {self.device} ({self.end_bytes / MIB:,.1f} MiB still held at exit)"


class _StorageCounter(TorchDispatchMode):
    """Counts bytes of live tensor storages created by ops inside the mode.

    Each new storage is counted once (views, in-place and out= ops are skipped from their schema's
    alias annotations) and uncounted when it is freed (a weakref callback on the storage). Scratch
    space a kernel allocates and frees internally is not seen.
    """

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple] = {}  # storage id -> (bytes, weakref whose callback uncounts it)
        self._fresh: dict = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        fresh = self._fresh.get(func)
        if fresh is None:  # views, in-place and out= ops return memory that already existed
            fresh = self._fresh[func] = not any(r.alias_info for r in func._schema.returns)
        if fresh:
            for t in (out,) if isinstance(out, torch.Tensor) else tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                    self._see(t.untyped_storage())
        return out

    def _see(self, storage) -> None:
        key = storage._cdata
        if key in self.live:  # an op may return a tensor it was given (e.g. a no-op .contiguous())
            return
        size = storage.nbytes()
        self.live[key] = (size, weakref.ref(storage, lambda _, key=key: self._free(key)))
        self.current += size
        self.peak = max(self.peak, self.current)

    def _free(self, key) -> None:
        size, _ = self.live.pop(key, (0, None))
        self.current -= size


@contextmanager
def track_peak(device=None):
    """Measure the peak tensor memory allocated inside the block, in bytes above the level at entry.

    ``with track_peak() as mem: ...`` then ``mem.peak_bytes`` / ``mem.peak_mib``. ``device`` defaults
    to the accelerator (cuda if present, else cpu); the API is the same on both. On CUDA it resets
    torch's peak statistics, so do not nest it there.
    """
    device = resolve_device(device)
    result = PeakMemory(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            yield result
        finally:
            torch.cuda.synchronize(device)
            result.peak_bytes = torch.cuda.max_memory_allocated(device) - start
            result.end_bytes = torch.cuda.memory_allocated(device) - start
        return
    if device.type != "cpu":
        raise ValueError(f"track_peak supports 'cpu' and 'cuda' devices, got {device}")
    counter = _StorageCounter()
    try:
        with counter:
            yield result
    finally:
        result.peak_bytes, result.end_bytes = counter.peak, counter.current


# --- offloading --------------------------------------------------------------------------------

_HOME = "_colab_tts_home"  # host copies of an emulated module's tensors while it is "on the device"


def _tensors(module: torch.nn.Module):
    yield from module.named_parameters()
    yield from module.named_buffers()


def _check_module(module):
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")


def is_on_accelerator(module: torch.nn.Module, device=None) -> bool:
    _check_module(module)
    device = resolve_device(device)
    if device.type == "cpu":
        return hasattr(module, _HOME)
    return any(t.device.type == device.type for _, t in _tensors(module))


def to_accelerator(module: torch.nn.Module, device=None) -> torch.nn.Module:
    """Put ``module``'s weights on the accelerator (on a CPU-only machine: a copy in host memory)."""
    _check_module(module)
    device = resolve_device(device)
    if device.type != "cpu":
        return module.to(device, non_blocking=True)
    if not hasattr(module, _HOME):
        home = {}
        for name, t in _tensors(module):
            home[name] = t.data
            t.data = t.data.clone()
        object.__setattr__(module, _HOME, home)
    return module


def to_host(module: torch.nn.Module) -> torch.nn.Module:
    """Move ``module``'s weights back to host memory, freeing their accelerator copy."""
    _check_module(module)
    home = module.__dict__.pop(_HOME, None)
    if home is not None:
        for name, t in _tensors(module):
            t.data = home[name]
        return module
    return module.to("cpu")


@contextmanager
def on_accelerator(module: torch.nn.Module, device=None):
    """``with on_accelerator(vocoder): wav = vocoder(mel)`` - on the device only inside the block."""
    to_accelerator(module, device)
    try:
        yield module
    finally:
        to_host(module)


class _Hooks:
    def __init__(self, modules, handles):
        self.modules, self.handles = modules, handles

    def remove(self) -> None:
        """Take the hooks off and leave every module in host memory."""
        for h in self.handles:
            h.remove()
        for m in self.modules:
            to_host(m)


def offload_hook(module: torch.nn.Module, device=None) -> _Hooks:
    """Hook form of ``on_accelerator``: every call of ``module`` moves it in, runs, and moves it out."""
    _check_module(module)
    device = resolve_device(device)

    def before(m, args):
        to_accelerator(m, device)

    def after(m, args, out):
        to_host(m)

    return _Hooks([module], [module.register_forward_pre_hook(before), module.register_forward_hook(after)])


def model_offload(modules, device=None) -> _Hooks:
    """One stage at a time: calling a module moves it to the accelerator and the previous one out.

    Like diffusers' ``enable_model_cpu_offload``: a stage stays on the device until another stage
    runs, so a loop calling the same stage (a diffusion sampler) pays for one transfer, not one
    per step. Peak memory: the largest stage plus activations instead of all stages together.
    """
    modules = list(modules.values() if isinstance(modules, dict) else modules)
    for m in modules:
        _check_module(m)
    device = resolve_device(device)

    def before(module, args):
        for other in modules:
            if other is not module and is_on_accelerator(other, device):
                to_host(other)
        to_accelerator(module, device)

    return _Hooks(modules, [m.register_forward_pre_hook(before) for m in modules])


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    _check_module(module)
    return sum(t.numel() * t.element_size() for _, t in _tensors(module))
