"""Which files of a run's output folder the run made, and removing the partial ones (the worker on any
failure or interruption, the kernel after a timeout kill)."""

from __future__ import annotations

import json
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


def check_out_folder(out) -> None:
    """``out`` new, empty, or a run's own output folder (its plan.json is a runner plan), else one ValueError:
    a run writes plan.json, worker.log and result.json there and, when stopped, deletes the files it changed,
    so a folder of the user's (the notebook's own folder, Drive's My Drive) would lose files to it."""
    out = Path(out)
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        ours = "system" in json.loads((out / "plan.json").read_text()) and "calls" in json.loads(
            (out / "plan.json").read_text())
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise ValueError(f"the output folder {out} holds files no run of this runner wrote; a run writes "
                         f"{', '.join(sorted(KEEP))} there and deletes a stopped run's files: give out= a new or "
                         "empty folder")
