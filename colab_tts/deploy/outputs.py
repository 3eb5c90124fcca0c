"""Which files of a run's output folder the run made, and removing the partial ones (the worker on any
failure or interruption, the kernel after a timeout kill)."""

from __future__ import annotations

from pathlib import Path

from .protocol import RESULT

KEEP = {RESULT, "plan.json", "worker.log"}


def snapshot(out: Path) -> dict:
    """name -> (size, mtime) of the files in ``out``, to tell later which ones a run created or changed."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()}


def remove_partial_outputs(out: Path, records: list, before: dict) -> list[str]:
    """Delete the files this run created or changed in ``out`` (``before``: its snapshot at the start) that
    no finished call lists."""
    listed = {r["audio"]["file"] for r in records if r.get("audio")}
    removed = []
    for name, state in snapshot(out).items():
        if name not in KEEP | listed and before.get(name) != state:
            (out / name).unlink()
            removed.append(name)
    return sorted(removed)
