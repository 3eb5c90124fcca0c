"""Resolve a deploy system's lock: ``python tools/deploy_locks.py SYSTEM --upstream CLONE [--uv UV]``.

CLONE is upstream checked out at the system's pinned commit (the runner's own clone,
``colab_tts_deploy/SYSTEM/upstream``, will do). Runs ``uv pip compile`` for the system's Python on
``x86_64-manylinux_2_28`` against the registry uv is configured with (PyPI by default), with the
runner's pins, overrides and excludes from ``colab_tts.deploy.systems``, and writes
``colab_tts/deploy/locks/SYSTEM.txt`` with a header recording the commit, Python, date and the exact
command. ``tests/test_deploy_locks.py`` fails when a lock no longer matches the runner.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colab_tts.deploy.lockfile import PLATFORM, lock_path, read_lock, recorded_inputs  # noqa: E402
from colab_tts.deploy.systems import get_system  # noqa: E402

INPUTS = ".colab_tts_lock"  # inside the clone, so that the recorded command runs from the clone as is


def _write(folder: Path, name: str, lines) -> str:
    (folder / name).write_text("".join(f"{line}\n" for line in lines))
    return f"{INPUTS}/{name}"


def resolve(system_name: str, clone: Path, uv: str, exclude_newer: str | None = None, hashes: bool = False,
            out: Path | None = None) -> Path:
    """Write the lock (to ``out``, default the committed path). ``exclude_newer`` (YYYY-MM-DD, recorded in the
    header and passed to uv) and ``hashes`` (--generate-hashes) make a rebuild byte for byte reproducible."""
    system = get_system(system_name)
    spec = system.lock
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    if head != system.commit:
        raise ValueError(f"{clone} is at {head}; check out {system.commit} first")
    folder = clone / INPUTS
    folder.mkdir(exist_ok=True)
    command = [uv, "pip", "compile", "--python-version", system.python, "--python-platform", PLATFORM,
               "--no-header", "--emit-build-options", *(["--no-sources"] if spec.no_sources else []),
               *(["--exclude-newer", exclude_newer] if exclude_newer else []),
               *(["--generate-hashes"] if hashes else []),
               *spec.inputs]
    if spec.pins:
        command.append(_write(folder, "pins.txt", spec.pins))  # requirements, not only constraints
    if spec.upstream_lock:
        exported = subprocess.run([uv, "export", "--frozen", "--no-hashes", "--no-emit-project", "--no-header",
                                   "--no-annotate", "--format", "requirements-txt"], cwd=clone,
                                  capture_output=True, text=True, check=True).stdout
        # upstream's +cu128 builds are the PyPI wheels of the same version for these releases (see Lock.why)
        command += ["-c", _write(folder, "upstream-uv-lock.txt",
                                 [re.sub(r"\+cu\d+", "", line) for line in exported.splitlines()])]
    if spec.overrides:
        command += ["--overrides", _write(folder, "overrides.txt", spec.overrides)]
    if spec.excludes:
        command += ["--excludes", _write(folder, "excludes.txt", spec.excludes)]
    env = {**os.environ, "UV_CONSTRAINT": "", "UV_BUILD_CONSTRAINT": ""}
    done = subprocess.run(command, cwd=clone, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"uv could not resolve {system_name}:\n{done.stderr}")
    version = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True).stdout.split()[1]
    shown = shlex.join(["uv", *command[1:]])
    header = [
        f"# colab_tts lock for {system.name}: the runner installs this file with --no-deps",
        f"# upstream: {system.repo} @ {system.commit}",
        f"# python: {system.python}",
        f"# platform: {PLATFORM}",
        f"# resolved: {exclude_newer or datetime.date.today().isoformat()} with uv {version} against "
        f"{os.environ.get('UV_INDEX_URL') or os.environ.get('UV_DEFAULT_INDEX') or 'PyPI'}",
        f"# inputs: {'; '.join(recorded_inputs(spec))}",
        f"# pins: {'; '.join(spec.pins) or 'none'}",
        f"# overrides: {'; '.join(spec.overrides) or 'none'}",
        f"# excludes: {'; '.join(spec.excludes) or 'none'}",
        f"# torch-index: {spec.torch_index or 'none'}",
        # every option line uv wrote (--emit-build-options): read_lock refuses any option line not listed here
        f"# build-options: {'; '.join(line for line in done.stdout.splitlines() if line.startswith('-')) or 'none'}",
        *(f"# why: {w}" for w in spec.why),
        f"# command: {shown}",
        f"# (run in CLONE = git clone {system.url} at {system.commit}, by: python tools/deploy_locks.py "
        f"{system.name} --upstream CLONE, which writes the {INPUTS}/ files from colab_tts.deploy.systems)",
        "",
    ]
    out = out or lock_path(system.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header) + "\n" + done.stdout)
    shutil.rmtree(folder)
    read_lock(out)  # every line pinned
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system")
    parser.add_argument("--upstream", required=True, type=Path, help="upstream cloned at the pinned commit")
    parser.add_argument("--uv", default=shutil.which("uv") or "uv")
    parser.add_argument("--exclude-newer", default=None, metavar="YYYY-MM-DD",
                        help="resolve as of this date (recorded in the header; --check reuses the header's)")
    parser.add_argument("--generate-hashes", action="store_true", help="record each file's sha256 (--require-hashes)")
    parser.add_argument("--check", action="store_true",
                        help="rebuild the committed lock with the date and options its header records and fail "
                             "on any difference (make locks-check)")
    args = parser.parse_args(argv)
    if not args.check:
        print(resolve(args.system, args.upstream.resolve(), args.uv, args.exclude_newer, args.generate_hashes))
        return 0
    import difflib
    import tempfile

    committed = lock_path(args.system)
    lock = read_lock(committed)
    date = lock.header.get("resolved", "").split(" ", 1)[0]
    hashes = "--generate-hashes" in lock.header.get("command", "").split()
    with tempfile.TemporaryDirectory() as tmp:
        rebuilt = resolve(args.system, args.upstream.resolve(), args.uv, date, hashes, Path(tmp) / "lock.txt")
        diff = list(difflib.unified_diff(committed.read_text().splitlines(), rebuilt.read_text().splitlines(),
                                         str(committed), "rebuilt", lineterm=""))
    print("\n".join(diff[:200]) if diff else f"{committed}: rebuilt byte for byte")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
