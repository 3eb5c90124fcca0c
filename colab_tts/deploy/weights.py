"""A system's weights from the Hugging Face Hub, inside its env: ``python -m colab_tts.deploy.weights SPEC REPORT``.

SPEC is one ``plan["weights"]`` entry with ``dest`` (a folder, or "" for the hub cache) and ``free_up``
(where the user can free disk). Each file the patterns select is listed with its size and, for LFS files,
its sha256 (``HfApi.model_info(files_metadata=True)``); a file already there with that size and hash is
kept, any other is downloaded again (``force_download``; huggingface_hub writes ``.incomplete`` files and
renames them); each download is checked the same way and deleted when it does not match. Before downloading, the bytes still missing are compared
with the free disk. On failure REPORT gets ``{"error", "message", ...}`` and the exit code is 1; the
kernel turns it into one exception (``env.download_weights``).
"""

from __future__ import annotations

import json
import sys
from fnmatch import fnmatch
from pathlib import Path

from .._files import atomic_path
from ..errors import DiskFullError, is_disk_full
from ..hub import gated_advice
from ..units import GIB
from .download import ensure_space, free_bytes, verified


def listing(repo: str, patterns) -> list[dict]:
    """[{"name", "size", "sha256"}] of the repository's files matching ``patterns`` (sha256 for LFS files)."""
    from huggingface_hub import HfApi

    files = HfApi().model_info(repo, files_metadata=True).siblings
    return [{"name": f.rfilename, "size": f.size, "sha256": f.lfs.sha256 if f.lfs else None}
            for f in files if any(fnmatch(f.rfilename, p) for p in patterns)]


def hub_download(repo: str, name: str, dest: str, force: bool) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo, name, local_dir=dest or None, force_download=force)


def cached_path(repo: str, name: str, dest: str) -> Path | None:
    """Where the file is now, if anywhere (``dest`` folder, else the hub cache)."""
    if dest:
        return Path(dest) / name
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, name)
    return Path(found) if isinstance(found, str) else None


def _cache_folder(dest: str) -> Path:
    if dest:
        return Path(dest)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _discard(path: Path | None, in_cache: bool) -> None:
    """Delete a file that failed its check (for the hub cache: also the blob its snapshot link points to;
    in a folder of the user's, a link is removed, never what it points to)."""
    if path is not None and (path.exists() or path.is_symlink()):
        if in_cache:
            path.resolve().unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def fetch(spec: dict, list_files=listing, download=hub_download, locate=cached_path, cache_folder=_cache_folder) -> list:
    repo, dest, free_up = spec["hub_repo"], spec.get("dest") or "", spec.get("free_up", [])
    with gated_advice(repo):  # a gated or refused repository ends in the steps to get access
        files = list_files(repo, spec["patterns"])
    todo = [f for f in files if not verified(locate(repo, f["name"], dest) or "", f["size"], f["sha256"])]
    missing = sum(f["size"] or 0 for f in todo)
    print(f"{repo}: {len(files)} files, {sum(f['size'] or 0 for f in files) / GIB:.2f} GiB; "
          f"{len(todo)} to download ({missing / GIB:.2f} GiB)", flush=True)
    folder = cache_folder(dest)
    ensure_space(missing, folder, f"{repo} ({len(todo)} files)", free_up)
    for f in todo:
        what = f"{repo}/{f['name']}"
        try:
            with gated_advice(repo):
                path = Path(download(repo, f["name"], dest, force=True))
        except OSError as err:
            if is_disk_full(err):
                raise DiskFullError(what, folder, f["size"], free_bytes(folder), free_up) from None
            raise
        if not verified(path, f["size"], f["sha256"]):
            got = path.stat().st_size if path.exists() else 0
            _discard(path, in_cache=not dest)
            raise ValueError(f"{what}: the downloaded file ({got:,} bytes) does not match the hub's size "
                             f"{f['size']:,} / sha256 {f['sha256']}; it was deleted, run the cell again")
    return files


def report(path, err: BaseException) -> None:
    fields = {"error": type(err).__name__, "message": str(err)}
    if isinstance(err, DiskFullError):
        fields.update(what=err.what, folder=err.folder, needed=err.needed, free=err.free, free_up=err.free_up)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(fields))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m colab_tts.deploy.weights SPEC_JSON REPORT_PATH", file=sys.stderr)
        return 2
    spec, report_path = json.loads(argv[0]), argv[1]
    Path(report_path).unlink(missing_ok=True)
    try:
        fetch(spec)
    except Exception as err:  # the kernel shows this one message (hub, network, disk, size/hash check)
        report(report_path, err)
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
