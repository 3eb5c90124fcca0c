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
