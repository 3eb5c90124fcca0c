"""Downloads that are complete or absent, checked by size and sha256 before anything trusts them.

A download streams into a temporary file beside its destination (``colab_tts._files.atomic_path``) and is
renamed only after its size and sha256 match; a destination whose size or hash does not match is
deleted and fetched again. A full disk ends in one ``DiskFullError`` naming the bytes needed, the bytes
free and where to free space. Standard library only: runs in the kernel and in every system's env.

Hashing gigabytes on every run would cost seconds, so a verified file is noted in a stamp
(``.colab_tts_verified.json`` in its folder: size, mtime, sha256); a file whose size or mtime changed since
is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.request
from pathlib import Path

from .._files import atomic_path
from ..errors import DiskFullError, is_disk_full

STAMP = ".colab_tts_verified.json"
CHUNK = 1 << 20


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _stamps(folder: Path) -> dict:
    try:
        return json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return {}


def _stamp(path: Path, sha256: str) -> None:
    stamps = _stamps(path.parent)
    st = path.stat()
    stamps[path.name] = [st.st_size, st.st_mtime_ns, sha256]
    with atomic_path(path.parent / STAMP) as tmp:
        tmp.write_text(json.dumps(stamps))


def verified(path, size: int | None = None, sha256: str | None = None) -> bool:
    """True when ``path`` exists with ``size`` bytes and the ``sha256`` given (each only when given)."""
    path = Path(path)
    if not path.is_file():
        return False
    st = path.stat()
    if size is not None and st.st_size != size:
        return False
    if sha256 is None:
        return True
    if _stamps(path.parent).get(path.name) == [st.st_size, st.st_mtime_ns, sha256]:
        return True
    if sha256_of(path) != sha256:
        return False
    _stamp(path, sha256)
    return True


def free_bytes(folder) -> int:
    """Free bytes on the disk holding ``folder`` (or its nearest existing parent)."""
    folder = Path(folder).resolve()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def ensure_space(needed: int, folder, what: str, free_up=()) -> None:
    free = free_bytes(folder)
    if needed > free:
        raise DiskFullError(what, folder, needed, free, free_up)


def download(url: str, dest, size: int | None = None, sha256: str | None = None, what: str | None = None,
             free_up=(), opener=None) -> Path:
    """``url`` -> ``dest``, unless ``dest`` is already there with the right size and sha256."""
    dest = Path(dest)
    what = what or dest.name
    if verified(dest, size, sha256):
        return dest
    dest.unlink(missing_ok=True)  # a cut or corrupted earlier copy: never trusted, fetched again
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (opener or urllib.request.urlopen)(url) as response:
        total = size if size is not None else int(response.headers.get("Content-Length") or 0) or None
        if total:
            ensure_space(total, dest.parent, what, free_up)
        h, got = hashlib.sha256(), 0
        try:
            with atomic_path(dest) as tmp:
                with open(tmp, "wb") as f:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        f.write(block)
                        h.update(block)
                        got += len(block)
                if total is not None and got != total:
                    raise ValueError(f"{what}: got {got:,} of {total:,} bytes from {url} (the download was cut); "
                                     "nothing was kept, run it again")
                if sha256 is not None and h.hexdigest() != sha256:
                    raise ValueError(f"{what}: the sha256 of what {url} sent is {h.hexdigest()}, expected {sha256}; "
                                     "nothing was kept")
        except OSError as err:
            if is_disk_full(err):
                raise DiskFullError(what, dest.parent, total, free_bytes(dest.parent), free_up) from None
            raise
    return dest
