"""Resolve a deploy system's lock: ``python tools/deploy_locks.py SYSTEM --upstream CLONE [--uv UV]``.

CLONE is upstream checked out at the system's pinned commit (the runner's own clone,
``colab_tts_deploy/SYSTEM/upstream``, will do). Runs ``uv pip compile --generate-hashes --exclude-newer DATE``
for the system's Python on ``x86_64-manylinux_2_28`` against the registry uv is configured with (PyPI by
default), with the runner's pins, overrides and excludes from ``colab_tts.deploy.systems``, and writes
``colab_tts/deploy/locks/SYSTEM.txt`` with a header recording the commit, Python, date and the exact command.

The packages of the lock that have no wheel for that Python and platform (they compile from their sdist at
install) are listed in the header (``# sdists:``); their build requirements (each sdist's
``[build-system] requires``, read from the sdist whose sha256 the lock records) are resolved the same way into
``colab_tts/deploy/locks/SYSTEM.build.txt``, which the runner passes to uv as ``--build-constraint``.

``--check`` rebuilds both with the date and options the committed header records and fails on any difference
(``make locks-check``). ``tests/test_deploy_locks.py`` fails when a lock no longer matches the runner.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colab_tts.deploy.lockfile import (  # noqa: E402
    PLATFORM,
    UV_VERSION,
    build_constraint_path,
    lock_path,
    normalize,
    read_lock,
    recorded_inputs,
)
from colab_tts.deploy.systems import get_system  # noqa: E402

INPUTS = ".colab_tts_lock"  # inside the clone, so that the recorded command runs from the clone as is
PYPI = "https://pypi.org/simple"
# pip and uv build a project without [build-system] with setuptools' legacy backend and these requirements
# (PEP 517 "fallback"; pip's pyproject.py); setuptools before 70.1 also asks for wheel when building one
LEGACY_BUILD = ("setuptools>=40.8.0",)
SETUPTOOLS_DYNAMIC = ("wheel",)


def _write(folder: Path, name: str, lines) -> str:
    (folder / name).write_text("".join(f"{line}\n" for line in lines))
    return f"{INPUTS}/{name}"


def _index() -> str:
    return (os.environ.get("UV_INDEX_URL") or os.environ.get("UV_DEFAULT_INDEX") or PYPI).rstrip("/")


def _index_shown() -> str:
    index = _index()
    return "PyPI" if index == PYPI else index


def target_tags(python: str) -> set:
    """The wheel tags uv accepts for CPython ``python`` on ``x86_64-manylinux_2_28`` (glibc 2.28 or older)."""
    from packaging import tags

    version = tuple(int(part) for part in python.split("."))
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    return {*tags.cpython_tags(version, platforms=platforms),
            *tags.compatible_tags(version, f"cp{version[0]}{version[1]}", platforms)}


def _files(name: str) -> list[dict]:
    """The index's files of project ``name`` (PEP 691 JSON: filename, url, hashes)."""
    request = urllib.request.Request(f"{_index()}/{normalize(name)}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["files"]


def locked_files(lock) -> dict:
    """name -> the index's files of the locked version: those whose sha256 the lock records."""
    def files(name):
        wanted = {h.removeprefix("sha256:") for h in lock.hashes[name]}
        return name, [f for f in _files(name) if f.get("hashes", {}).get("sha256") in wanted]

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(files, sorted(lock.pins)))


def sdists(lock, files: dict, python: str) -> list[str]:
    """The locked packages uv installs from their sdist on this Python and platform: no compatible wheel among
    the files the lock's hashes name, or named by a ``--no-binary`` option of the lock."""
    from packaging.utils import parse_wheel_filename

    accepted, built = target_tags(python), []
    no_binary = {normalize(o.split()[1]) for o in lock.options if o.startswith("--no-binary ")}
    for name in sorted(lock.pins):
        wheels = [f["filename"] for f in files[name] if f["filename"].endswith(".whl")]
        if name in no_binary or not any(parse_wheel_filename(w)[3] & accepted for w in wheels):
            built.append(name)
    return built


def _pyproject(data: bytes, filename: str) -> bytes | None:
    """The top-level pyproject.toml of an sdist (``NAME-VERSION/pyproject.toml``), or None."""
    if filename.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = [n for n in z.namelist() if n.count("/") == 1 and n.endswith("/pyproject.toml")]
            return z.read(names[0]) if names else None
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        members = [m for m in t.getmembers() if m.isfile() and m.name.count("/") == 1
                   and m.name.endswith("/pyproject.toml")]
        return t.extractfile(members[0]).read() if members else None


def build_requirements(name: str, files: list[dict]) -> list[str]:
    """``[build-system] requires`` of ``name``'s locked sdist (downloaded and checked against its sha256)."""
    sdist = [f for f in files if not f["filename"].endswith(".whl")]
    if not sdist:
        raise RuntimeError(f"{name} has no wheel for this platform and no sdist among the lock's files")
    url, want = sdist[0]["url"], sdist[0]["hashes"]["sha256"]
    with urllib.request.urlopen(url, timeout=300) as response:
        data = response.read()
    if hashlib.sha256(data).hexdigest() != want:
        raise RuntimeError(f"{url} does not match the sha256 the lock records")
    raw = _pyproject(data, sdist[0]["filename"])
    system = tomllib.loads(raw.decode()).get("build-system", {}) if raw else {}
    requires = list(system.get("requires", LEGACY_BUILD))
    if system.get("build-backend", "setuptools.build_meta:__legacy__").startswith("setuptools."):
        requires += SETUPTOOLS_DYNAMIC
    return requires


def _compile(uv: str, args: list[str], cwd: Path, what: str) -> str:
    env = {**os.environ, "UV_CONSTRAINT": "", "UV_BUILD_CONSTRAINT": ""}
    done = subprocess.run([uv, "pip", "compile", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"uv could not resolve {what}:\n{done.stderr}")
    return done.stdout


def _common(system, exclude_newer: str) -> list[str]:
    return ["--python-version", system.python, "--python-platform", PLATFORM, "--no-header",
            "--emit-build-options", "--exclude-newer", exclude_newer, "--generate-hashes"]


def resolve(system_name: str, clone: Path, uv: str, exclude_newer: str, out: Path | None = None,
            build_out: Path | None = None) -> tuple[Path, Path | None]:
    """Write the lock (to ``out``, default the committed path) and, when anything compiles from source, its
    build constraint (``build_out``). ``exclude_newer`` (RFC 3339, recorded in the header and passed to uv)
    makes a rebuild byte for byte reproducible."""
    system = get_system(system_name)
    spec = system.lock
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    if head != system.commit:
        raise ValueError(f"{clone} is at {head}; check out {system.commit} first")
    version = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True).stdout.split()[1]
    if version != UV_VERSION:
        raise ValueError(f"{uv} is uv {version}; the locks are resolved with uv {UV_VERSION} "
                         f"(colab_tts.deploy.lockfile.UV_VERSION): pip install uv=={UV_VERSION}")
    folder = clone / INPUTS
    folder.mkdir(exist_ok=True)
    args = [*_common(system, exclude_newer), *(["--no-sources"] if spec.no_sources else []), *spec.inputs]
    if spec.pins:
        args.append(_write(folder, "pins.txt", spec.pins))  # requirements, not only constraints
    if spec.upstream_lock:
        exported = subprocess.run([uv, "export", "--frozen", "--no-hashes", "--no-emit-project", "--no-header",
                                   "--no-annotate", "--format", "requirements-txt"], cwd=clone,
                                  capture_output=True, text=True, check=True).stdout
        # upstream's +cu128 builds are the PyPI wheels of the same version for these releases (see Lock.why)
        args += ["-c", _write(folder, "upstream-uv-lock.txt",
                              [re.sub(r"\+cu\d+", "", line) for line in exported.splitlines()])]
    if spec.overrides:
        args += ["--overrides", _write(folder, "overrides.txt", spec.overrides)]
    if spec.excludes:
        args += ["--excludes", _write(folder, "excludes.txt", spec.excludes)]
    try:
        body = _compile(uv, args, clone, system_name)
    finally:
        shutil.rmtree(folder)
    out = out or lock_path(system.name)
    build_out = build_out or build_constraint_path(system.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    options = [line for line in body.splitlines() if line.startswith("-")]
    out.write_text(f"# build-options: {'; '.join(options) or 'none'}\n" + body)
    lock = read_lock(out)  # every line pinned, every pin hashed
    files = locked_files(lock)
    built = sdists(lock, files, system.python)
    resolved = f"{exclude_newer} (--exclude-newer) with uv {version} against {_index_shown()}"
    if built:
        build_out.parent.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(8) as pool:
            wanted = sorted({r for reqs in pool.map(lambda n: build_requirements(n, files[n]), built) for r in reqs})
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "build-requires.txt").write_text("".join(f"{r}\n" for r in wanted))
            build_body = _compile(uv, [*_common(system, exclude_newer), "build-requires.txt"], Path(tmp),
                                  f"the build requirements of {system_name}'s sdists")
        build_out.write_text("\n".join([
            f"# colab_tts build constraint for {system.name}: uv pip install --build-constraint (every build "
            "dependency of the sdists below at one version, checked against its sha256)",
            f"# for: {build_out.name.removesuffix('.build.txt')}.txt",
            f"# sdists: {'; '.join(built)}",
            f"# python: {system.python}",
            f"# platform: {PLATFORM}",
            f"# resolved: {resolved}",
            f"# requires: {' | '.join(wanted)}",
            "# (each sdist's [build-system] requires, setuptools>=40.8.0 where it has none, and wheel for a "
            "setuptools backend; requirements a backend asks for at build time beyond these are not pinned)",
            f"# command: {shlex.join(['uv', 'pip', 'compile', *_common(system, exclude_newer)])} build-requires.txt",
            "",
        ]) + "\n" + build_body)
        read_lock(build_out)
    elif build_out.exists():
        build_out.unlink()
    header = [
        f"# colab_tts lock for {system.name}: the runner installs this file with --no-deps --require-hashes",
        f"# upstream: {system.repo} @ {system.commit}",
        f"# python: {system.python}",
        f"# platform: {PLATFORM}",
        f"# resolved: {resolved}",
        f"# inputs: {'; '.join(recorded_inputs(spec))}",
        f"# pins: {'; '.join(spec.pins) or 'none'}",
        f"# overrides: {'; '.join(spec.overrides) or 'none'}",
        f"# excludes: {'; '.join(spec.excludes) or 'none'}",
        f"# torch-index: {spec.torch_index or 'none'}",
        # every option line uv wrote (--emit-build-options): read_lock refuses any option line not listed here
        f"# build-options: {'; '.join(options) or 'none'}",
        # no wheel for this Python and platform among the locked files (or --no-binary): built at install
        f"# sdists: {'; '.join(built) or 'none'}",
        f"# build-constraint: {build_out.name if built else 'none'}",
        *(f"# why: {w}" for w in spec.why),
        f"# command: {shlex.join(['uv', 'pip', 'compile', *args])}",
        f"# (run in CLONE = git clone {system.url} at {system.commit}, by: python tools/deploy_locks.py "
        f"{system.name} --upstream CLONE --exclude-newer {exclude_newer}, which writes the {INPUTS}/ files "
        "from colab_tts.deploy.systems)",
        "",
    ]
    out.write_text("\n".join(header) + "\n" + body)
    read_lock(out)
    return out, (build_out if built else None)


def _today() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT00:00:00Z")


def check(system_name: str, clone: Path, uv: str) -> int:
    """Rebuild the committed lock (and build constraint) with the date its header records; 1 on any difference."""
    import difflib

    committed = lock_path(system_name)
    lock = read_lock(committed)
    date = lock.header.get("resolved", "").split(" ", 1)[0]
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", date):
        print(f"{committed}: its header records no --exclude-newer date (# resolved: {date!r}); regenerate it")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        rebuilt, rebuilt_build = resolve(system_name, clone, uv, date, Path(tmp) / "lock.txt",
                                         Path(tmp) / f"{system_name}.build.txt")
        pairs = [(committed, rebuilt), (build_constraint_path(system_name), rebuilt_build)]
        diff = []
        for old, new in pairs:
            old_lines = old.read_text().splitlines() if old.exists() else []
            new_lines = new.read_text().splitlines() if new is not None and new.exists() else []
            diff += difflib.unified_diff(old_lines, new_lines, str(old), "rebuilt", lineterm="")
    print("\n".join(diff[:200]) if diff else f"{committed}: rebuilt byte for byte (and its build constraint)")
    return 1 if diff else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system")
    parser.add_argument("--upstream", required=True, type=Path, help="upstream cloned at the pinned commit")
    parser.add_argument("--uv", default=shutil.which("uv") or "uv", help=f"uv {UV_VERSION}")
    parser.add_argument("--exclude-newer", default=None, metavar="YYYY-MM-DDT00:00:00Z",
                        help="resolve as of this time (RFC 3339, recorded in the header; default today 00:00 UTC)")
    parser.add_argument("--check", action="store_true",
                        help="rebuild the committed lock with the date and options its header records and fail "
                             "on any difference (make locks-check)")
    args = parser.parse_args(argv)
    if os.sep in args.uv:
        args.uv = os.path.abspath(args.uv)  # uv runs in the clone
    if args.check:
        return check(args.system, args.upstream.resolve(), args.uv)
    date = args.exclude_newer or _today()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", date):
        parser.error(f"--exclude-newer takes an RFC 3339 UTC time such as 2026-12-05T00:00:00Z, got {date!r}")
    for path in resolve(args.system, args.upstream.resolve(), args.uv, date):
        if path is not None:
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
