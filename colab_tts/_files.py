"""Files that are either complete or absent: written under a temporary name, renamed when done."""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` (same folder, same suffix: writers such as soundfile pick the
    format from it); it becomes ``path`` when the block ends without an error and is deleted otherwise, so
    an interrupted write never leaves half a file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one writer per process and name; short, so that a name near the file system's limit still fits
    tag = hashlib.sha1(os.fsencode(path.name)).hexdigest()[:8]
    tmp = path.with_name(f".{path.stem[:32]}.{tag}.{os.getpid()}.partial{path.suffix[:16]}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def writable_folder(folder, what: str = "the folder", target=None) -> Path:
    """``folder`` if it is, or can be made, a folder this process may write into; else one ValueError naming
    it (or ``target``, the file to be written there) and what to change, before any expensive work."""
    folder = Path(folder)
    named = target if target is not None else folder
    _check_name_lengths(folder, what, named)
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            raise ValueError(f"{what} {named} passes through a broken link {probe}; remove it or pick another folder")
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{what} {named} is inside {probe}, which is a file, not a folder; pick another folder")
    try:  # a real probe: permission bits say nothing for root, nor for read-only or special file systems
        with tempfile.TemporaryFile(dir=probe, prefix=".colab_tts-probe-"):
            pass
    except OSError as err:
        raise ValueError(f"{what} {named} cannot be written: {probe} refuses new files ({err.strerror}); "
                         "pick a folder you can write to") from None
    return folder


def path_text(path, what: str, folder: bool = False) -> Path:
    """``path`` (str or os.PathLike) as a Path, or one TypeError/ValueError naming what is wrong with it
    (``folder``: the path names a folder, and the error asks for one)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path (str or pathlib.Path), got {type(path).__name__}")
    text = os.fspath(path)
    if isinstance(text, bytes):
        raise TypeError(f"{what} must be a str or pathlib.Path, not bytes")
    if not text.strip():
        raise ValueError(f"{what} is empty: give " + ("a folder such as my_work" if folder
                                                     else "a file name such as speech.wav"))
    if "\0" in text:
        raise ValueError(f"{what} {text!r} holds a NUL character, which no file name may hold")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not valid text (undecodable bytes); use another name") from None
    # "~/x" is the home folder's x, as the deploy plan and a shell read it: never a folder named "~" here
    # (which a later "rm -rf ~" meant for it would take the home folder with)
    return Path(text).expanduser()


def output_file(path, suffixes=None, what: str = "the output file") -> Path:
    """``path`` checked as a file this process can create before any expensive work: not a folder, a suffix
    among ``suffixes`` (lower case, with the dot), a name the file system allows, a folder that is or can be
    made writable. One ValueError naming the user's path (never a temporary one) and what to change."""
    path = path_text(path, what)
    _check_name_lengths(path, what, path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a file name inside it, such as {path / 'speech.wav'}")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        got = f"'{path.suffix}'" if path.suffix else "no suffix"
        raise ValueError(f"{what} {path} has {got}; give one of: {', '.join(sorted(suffixes))}")
    writable_folder(path.parent, what, target=path)
    return path


def _check_name_lengths(path: Path, what: str, named) -> None:
    """One ValueError when a part of ``path`` is longer than the file system allows (else every later stat,
    mkdir or open raises OSError 'File name too long')."""
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    limit = _name_max(path)
    if longest > limit:
        raise ValueError(f"{what} {str(named)[:60]}... has a name of {longest} bytes; this file system allows "
                         f"{limit}: use a shorter name")


def _name_max(path: Path) -> int:
    """The longest file name (bytes) the file system under ``path`` allows (255 when it does not say)."""
    for folder in path.absolute().parents:
        try:
            if folder.is_dir():
                return os.pathconf(folder, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return 255
