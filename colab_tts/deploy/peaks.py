"""CUDA peaks of one stage inside a measured block: what a system's stage wrappers call and the worker's
``Measure`` reads. Apart from the worker so that the systems it imports by name do not import it back."""

from __future__ import annotations

import time

from ..units import GIB

_PEAKS: list = []  # absolute CUDA peaks noted by stage wrappers that reset torch's peak statistics


def note_peak() -> None:
    """Call before ``torch.cuda.reset_peak_memory_stats()`` inside a measured block: keeps the peak so far."""
    import torch

    if torch.cuda.is_available():
        _PEAKS.append(torch.cuda.max_memory_allocated())


def stage_peak():
    """A context for one stage: yields a dict that gets ``seconds`` and, on CUDA, ``peak_gib`` (above the
    level at entry) and ``total_peak_gib`` (absolute) without breaking an enclosing ``Measure``."""
    return _Stage()


class _Stage:
    def __enter__(self):
        import torch

        self.cuda = torch.cuda.is_available()
        self.row: dict = {}
        if self.cuda:
            torch.cuda.synchronize()
            note_peak()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        self.t0 = time.perf_counter()
        return self.row

    def __exit__(self, *exc):
        import torch

        self.row["seconds"] = round(time.perf_counter() - self.t0, 4)
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            self.row["peak_gib"] = round((peak - self.before) / GIB, 3)
            self.row["total_peak_gib"] = round(peak / GIB, 3)  # the allocator's peak, all tensors held included
            self.row["held_after_gib"] = round(torch.cuda.memory_allocated() / GIB, 3)
            note_peak()
        return False
