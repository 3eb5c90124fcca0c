"""Files that are either complete or absent: written under a temporary name, renamed when done."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` (same folder, same suffix: writers such as soundfile pick the
    format from it); it becomes ``path`` when the block ends without an error and is deleted otherwise, so
    an interrupted write never leaves half a file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")  # one writer per process and name
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def writable_folder(folder, what: str = "the folder") -> Path:
    """``folder`` if it is, or can be made, a folder this process may write into; else one ValueError naming
    it and what to change (checked before any expensive work, nothing created)."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            raise ValueError(f"{what} {folder} passes through a broken link {probe}; remove it or pick another folder")
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{what} {folder} is inside {probe}, which is a file, not a folder; pick another folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {folder} cannot be written: {probe} is read-only for this user; "
                         "pick a folder you can write to")
    return folder
