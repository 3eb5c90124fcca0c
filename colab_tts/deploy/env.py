"""The kernel side: make the system's environment, clone upstream, fetch weights, run the worker.

Nothing here imports torch or upstream code: the notebook kernel (Colab's Python 3.13 image) only
runs commands (argument lists, never shell text: a path with a space or a quote stays one argument) and
reads JSON. Every step is idempotent (a marker file per install step, trusted only while what the step
creates exists; a step that runs makes every later one run), so re-running a cell after a disconnect skips
what is done and redoes what was deleted.

Faults end in one message and leave nothing a second run would trust: the clone goes to
``upstream.partial`` and is renamed when complete (``run_step``), downloads are written under
a temporary name and renamed after their size and sha256 match (``download``, ``weights``), a full disk
raises ``DiskFullError`` (bytes needed, bytes free, where to free), and a stale ``result.json`` is deleted
before the worker starts, which writes its files atomically and deletes a failed call's partial outputs.

Colab specifics: ``uv`` at the version that resolved the locks is installed with pip when missing or another
version is on PATH (``ensure_uv``); Colab's ``UV_CONSTRAINT`` /
``UV_BUILD_CONSTRAINT`` point at a file that may not exist and would also pin upstream's
environment to Colab's versions (github.com/googlecolab/colabtools/issues/5237), so they, and every
other uv setting that changes what is installed or from where (``command_env``), are cleared for every
command. When Google Drive is mounted, the hub cache lives
on Drive (``HF_HOME``), so weights are downloaded once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import wave
import zipfile
from contextlib import contextmanager
from pathlib import Path

from .._checks import positive
from .._files import atomic_path, path_text, writable_folder
from ..errors import DiskFullError
from .download import download, free_bytes
from .lockfile import UV_VERSION, UV_WHEEL_SHA256, check_lock
from .outputs import check_out_folder, remove_partial_outputs, snapshot
from .protocol import RESULT, read_result
from .setting_rules import check_calls
from .systems import SYSTEMS, settings, shown
from .systems import plan as make_plan

DRIVE = Path("/content/drive/MyDrive")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding colab_tts/


def hub_cache() -> str | None:
    """``HF_HOME`` on Drive when Drive is mounted (weights survive the runtime), else None."""
    return str(DRIVE / "colab_tts_cache" / "huggingface") if DRIVE.is_dir() else None


def free_up_hints(workdir) -> list[str]:
    """Where a full disk can be freed, for DiskFullError's message."""
    hints = [f"earlier runs and other systems under {workdir} (each system's env/, upstream/, out*/)"]
    cache = os.environ.get("HF_HOME") or hub_cache()
    hints.append(f"weights of systems you no longer run in the hub cache {cache or '~/.cache/huggingface'}"
                 + (" (on Drive: they survive the runtime, but count against the Drive quota)" if cache else ""))
    hints.append("'!df -h' shows which disk is full; Colab's local disk is reset with the runtime")
    return hints


# uv settings that say how it works here, not what it installs or where from: kept from the user's environment
UV_KEPT = {"UV_CACHE_DIR", "UV_NO_CACHE", "UV_NO_PROGRESS", "UV_HTTP_TIMEOUT", "UV_CONCURRENT_DOWNLOADS",
           "UV_CONCURRENT_BUILDS", "UV_CONCURRENT_INSTALLS", "UV_LINK_MODE", "UV_NATIVE_TLS",
           "UV_PYTHON_INSTALL_DIR"}


def command_env(extra: dict | None = None) -> dict:
    """The environment of every command. uv reads only what the plan says: no uv.toml/pyproject.toml settings
    from the current folder or ~/.config/uv (UV_NO_CONFIG) and no UV_* variable that changes what it installs
    or from where (an UV_EXTRA_INDEX_URL, a UV_PYTHON_INSTALL_MIRROR, Colab's UV_CONSTRAINT); tried with uv
    0.13.9: a uv.toml with extra-index-url in the current folder, or UV_EXTRA_INDEX_URL, sent it to that
    index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_") or k in UV_KEPT}
    env["UV_NO_CONFIG"] = "1"
    cache = hub_cache()
    if cache and "HF_HOME" not in os.environ:
        env["HF_HOME"] = cache
    env.update(extra or {})
    return env


UV_HOME = Path.home() / ".cache" / "colab_tts" / f"uv-{UV_VERSION}"  # pip install --target: bin/uv


def _uv_version(env: dict | None = None) -> str | None:
    try:  # a uv cut short (a killed install, a full disk) is no uv: "Exec format error" is an OSError
        done = subprocess.run(["uv", "--version"], capture_output=True, text=True, env=env)
    except OSError:
        return None
    words = (done.stdout or "").split()
    return words[1] if done.returncode == 0 and len(words) > 1 else None


def ensure_uv() -> str | None:
    """The uv that resolved the locks (``UV_VERSION``), never whatever is newest: None when ``uv`` on PATH is that
    version, else the folder (``UV_HOME/bin``) holding that version, installed there with pip when missing,
    which ``_run`` puts first on PATH. Colab's image has no uv in its pip freeze (googlecolab/backend-info),
    but sets UV_INSTALL_DIR, so one of another version may be there.

    pip writes into a folder beside ``UV_HOME`` that is renamed into place once its uv answers with the pinned
    version, so an interrupted install leaves no ``UV_HOME`` that looks installed; two runners (other work
    directories) install one at a time."""
    if shutil.which("uv") is not None and _uv_version() == UV_VERSION:
        return None
    folder = UV_HOME / "bin"

    def pinned(home: Path) -> dict:
        return {**os.environ, "PATH": f"{home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}

    if (folder / "uv").is_file() and _uv_version(pinned(UV_HOME)) == UV_VERSION:
        return str(folder)
    UV_HOME.parent.mkdir(parents=True, exist_ok=True)
    with open(UV_HOME.parent / f".{UV_HOME.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "uv").is_file() and _uv_version(pinned(UV_HOME)) == UV_VERSION:
            return str(folder)  # the other runner installed it meanwhile
        partial = UV_HOME.with_name(UV_HOME.name + ".partial")
        _delete(partial)  # what an interrupted install left
        wanted = UV_HOME.parent / f".{UV_HOME.name}.requirements.txt"  # the version and its wheels' hashes
        wanted.write_text(f"uv=={UV_VERSION}" + "".join(f" --hash=sha256:{h}" for h in UV_WHEEL_SHA256) + "\n")
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary", ":all:",
                               "--require-hashes", "--target", str(partial), "-r", str(wanted)])
        if done.returncode != 0 or _uv_version(pinned(partial)) != UV_VERSION:
            _delete(partial)
            raise RuntimeError(f"could not install uv {UV_VERSION} (the version the locks were resolved with) "
                               f"into {UV_HOME}: pip exited {done.returncode}; check the network, or install it "
                               f"yourself: pip install uv=={UV_VERSION}")
        _delete(UV_HOME)  # a broken or other uv left there
        os.replace(partial, UV_HOME)
    return str(folder)


def step_key(step: dict) -> str:
    """What a step's marker is named after: everything that decides what it does (not how it is shown)."""
    return hashlib.sha1(json.dumps({k: v for k, v in step.items() if k != "shown"}, sort_keys=True).encode()
                        ).hexdigest()[:16]


def _inside(path, root: Path) -> Path:
    """``path`` resolved, refused unless it lies inside ``root``: nothing outside the work directory is deleted."""
    path, root = Path(os.path.normpath(Path(path).absolute())), Path(root).resolve()  # 'root/..' is not inside
    if path.name and (path.parent.resolve() == root or path.parent.resolve().is_relative_to(root)):
        return path.parent.resolve() / path.name
    raise ValueError(f"{path} is outside the work directory {root}: the runner deletes nothing there")


def _delete(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _run(argv: list, log, env: dict | None = None, cwd=None, capture: bool = False):
    """One command as an argument list (no shell), its output appended to ``log``."""
    if not isinstance(argv, (list, tuple)) or not all(isinstance(w, str) for w in argv):
        raise TypeError(f"a step's command is a list of strings (an argument list, never shell text), got {argv!r}")
    argv = list(argv)
    env = command_env(env)
    if argv[0] == "uv" and (pinned := ensure_uv()):  # "uv" stays the word; PATH finds the pinned one first
        env["PATH"] = f"{pinned}{os.pathsep}{env.get('PATH', '')}"
    log.write(f"$ {shlex.join(argv)}\n")
    log.flush()
    if capture:
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=log, env=env, cwd=cwd, text=True)
    return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)


def _extract(archive: Path, into: Path) -> None:
    """Unpack a zip or tar archive into ``into``; a member that would land outside it is refused."""
    into = into.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if not (into / name).resolve().is_relative_to(into):
                    raise ValueError(f"{archive.name} holds {name!r}, which would be written outside {into}")
            z.extractall(into)
        return
    with tarfile.open(archive) as t:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: links, devices and escapes refused
            try:
                t.extractall(into, filter="data")
            except tarfile.FilterError as err:
                raise ValueError(f"{archive.name} holds a member this runner does not extract ({err}); "
                                 "nothing outside the work directory was written") from None
            return
        for member in t.getmembers():  # pragma: no cover (older Pythons)
            if not (member.isfile() or member.isdir()) or not (into / member.name).resolve().is_relative_to(into):
                raise ValueError(f"{archive.name} holds {member.name!r}, which this runner does not extract")
        t.extractall(into)


def _archive(step: dict, root: Path, log, env) -> int:
    if "into_module" in step:
        done = _run([step["python"], "-c", "import importlib.util, os, sys; "
                     "print(os.path.dirname(importlib.util.find_spec(sys.argv[1]).origin))", step["into_module"]],
                    log, env, capture=True)
        if done.returncode != 0:
            return done.returncode
        into = Path(done.stdout.strip())
    else:
        into = Path(step["into"])
    name = step["archive"].rsplit("/", 1)[-1]
    log.write(f"$ download {step['archive']} -> {into}\n")
    log.flush()
    raw = download(step["archive"], root / f".{name}.download", what=name, free_up=free_up_hints(root.parent))
    try:
        into.mkdir(parents=True, exist_ok=True)
        _extract(raw, into)
    finally:
        raw.unlink(missing_ok=True)
    return 0


def _clone(step: dict, root: Path, log, env) -> int:
    dest = _inside(step["dest"], root)
    if (dest / ".git").exists():
        return 0
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} exists but is not a git clone (no .git): move it away or delete it, "
                         "then run again")
    partial = dest.with_name(dest.name + ".partial")
    _delete(partial)  # what an interrupted clone left
    done = _run(["git", "clone", "--", step["clone"], str(partial)], log, env)
    if done.returncode == 0:
        if dest.exists():
            dest.rmdir()  # empty (checked above)
        os.replace(partial, dest)
    return done.returncode


def run_step(step: dict, root: Path, log: Path, env: dict | None = None, force: bool = False) -> bool:
    """Run one install step once (a marker in ``root`` remembers it). True if it ran now.

    A step is a dict: ``{"argv": [...]}`` (run without a shell), ``{"clone": URL, "dest": DIR}`` or
    ``{"archive": URL, "into": DIR}`` / ``{"archive": URL, "into_module": NAME, "python": PY}``. Its marker is
    trusted only while every path in ``creates`` exists; ``fresh`` (inside ``root``) is deleted before it
    runs; ``force`` runs it whatever its marker says (``deploy`` forces every step after one that ran)."""
    if not isinstance(step, dict):
        raise TypeError(f"an install step is a dict such as {{'argv': ['uv', 'venv', ...]}}, got {step!r}")
    root = Path(root)
    marker = root / ".done" / step_key(step)
    if not force and marker.exists() and all(Path(p).exists() for p in step.get("creates", ())):
        return False
    marker.unlink(missing_ok=True)  # from here on the step is not done until it has finished
    what = step.get("shown") or shown(step)
    with open(log, "a") as f:
        f.write(f"# {what}\n")
        f.flush()
        start = f.tell()
        if step.get("fresh"):
            _delete(_inside(step["fresh"], root))
        if "argv" in step:
            returncode = _run(step["argv"], f, env).returncode
        elif "clone" in step:
            returncode = _clone(step, root, f, env)
        elif "archive" in step:
            returncode = _archive(step, root, f, env)
        else:
            raise ValueError(f"unknown install step {step!r}: it needs 'argv', 'clone' or 'archive'")
    if returncode != 0:
        tail = log.read_text(errors="replace")[-1500:]
        with open(log, "rb") as f:
            f.seek(start)
            own = f.read().decode(errors="replace")  # this step's output only
        if "No space left on device" in own:
            raise DiskFullError(f"the install step '{what[:80]}'", root, None, free_bytes(root),
                                free_up_hints(root.parent))
        raise RuntimeError(f"install step failed (exit {returncode}): {what}\n--- {log} (end) ---\n{tail}")
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(step))
    return True


def fetch_reference(reference: dict) -> Path:
    """Download the reference clip (size and sha256 checked) and pad it with silence to ``pad_to_seconds``.

    Both files are written under temporary names and renamed, so an existing ``path`` is complete."""
    path = Path(reference["path"])
    if path.exists():
        return path
    raw = download(reference["url"], path.with_suffix(".download"), reference.get("size"), reference.get("sha256"),
                   what="the reference clip")
    with wave.open(str(raw), "rb") as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    want = int(reference.get("pad_to_seconds", 0) * params.framerate)
    have = len(frames) // (params.sampwidth * params.nchannels)
    frames += b"\0" * max(0, want - have) * params.sampwidth * params.nchannels
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as dst:
        dst.setnchannels(params.nchannels)
        dst.setsampwidth(params.sampwidth)
        dst.setframerate(params.framerate)
        dst.writeframes(frames)
    raw.unlink()
    return path


def weights_failure(report: Path, returncode: int) -> Exception:
    """The exception for a failed ``colab_tts.deploy.weights`` run, from the report it wrote."""
    try:
        fields = json.loads(report.read_text())
    except (OSError, ValueError):
        return RuntimeError(f"the weight download stopped (exit {returncode}) before saying why; run the cell "
                            "again (complete files are kept, the rest is fetched again)")
    if fields["error"] == "DiskFullError":
        return DiskFullError(fields["what"], fields["folder"], fields["needed"], fields["free"], fields["free_up"])
    if fields["error"] == "ValueError":
        return ValueError(fields["message"])
    return RuntimeError(f"the weight download failed ({fields['error']}): {fields['message']}")


def download_weights(plan: dict, log: Path) -> None:
    """Each weight entry through ``colab_tts.deploy.weights`` inside the system's env (its own progress bars,
    sizes first); every file checked by size and sha256, a full disk named before it fills."""
    py = Path(plan["env"]) / "bin" / "python"
    root = Path(plan["env"]).parent
    report = root / "weights-error.json"
    for w in plan["weights"]:
        dest = str(Path(plan["clone"]) / w["local_dir"]) if w["local_dir"] else ""
        spec = json.dumps({**w, "dest": dest, "free_up": free_up_hints(root.parent)})
        done = subprocess.run([str(py), "-m", "colab_tts.deploy.weights", spec, str(report)],
                              env=command_env(worker_env(plan)))
        if done.returncode != 0:
            raise weights_failure(report, done.returncode)


def package_path(root: Path) -> str:
    """A folder for the worker's PYTHONPATH from which it imports this colab_tts and nothing else.

    From a source checkout that is the checkout. From a pip install (Colab's install cell:
    ``pip install git+...``) the folder holding colab_tts is the kernel's site-packages, whose numpy and
    torch are built for another Python and would shadow the system's own; then a folder of its own under
    ``root`` holding only a link to this colab_tts.
    """
    if (PACKAGE_ROOT / "pyproject.toml").exists():
        return str(PACKAGE_ROOT)
    own = Path(root) / "colab_tts_only"
    link = own / "colab_tts"
    if not link.exists():
        own.mkdir(parents=True, exist_ok=True)
        link.symlink_to(PACKAGE_ROOT / "colab_tts", target_is_directory=True)
    return str(own)


def worker_env(plan: dict) -> dict:
    """PYTHONPATH gets this colab_tts (pure Python, imported by the worker beside upstream); torch.load is
    weights-only whatever upstream passes."""
    extra = dict(plan.get("environment", {}))
    # torch.load weights-only even where upstream passes weights_only=False (pytorch.org/docs/stable/
    # miscellaneous_environment_variables.html; torch >= 2.4, so not MetaVoice's 2.2.1: safe_load patches it too)
    extra.update(TORCH_FORCE_WEIGHTS_ONLY_LOAD="1", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="")
    own = package_path(Path(plan["env"]).parent)
    extra["PYTHONPATH"] = os.pathsep.join(p for p in (own, os.environ.get("PYTHONPATH", "")) if p)
    return extra


def run_worker(plan: dict, timeout: float | None = None) -> dict:
    """Run the plan's calls in the system's env (a subprocess); returns the checked result."""
    out = Path(plan["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT).unlink(missing_ok=True)  # a worker that dies must not leave the last run's result to be read
    plan_path = out / "plan.json"
    with atomic_path(plan_path) as tmp:
        tmp.write_text(json.dumps(plan, indent=1))
    py = Path(plan["env"]) / "bin" / "python"
    before = snapshot(out)
    try:
        with open(out / "worker.log", "w") as log:
            worker = subprocess.Popen([str(py), "-m", "colab_tts.deploy.worker", str(plan_path)], stdout=log,
                                      stderr=subprocess.STDOUT, env=command_env(worker_env(plan)),
                                      cwd=plan["clone"])
            try:
                worker.wait(timeout=timeout)
            except BaseException:  # the timeout, or Ctrl-C in the kernel: the worker stops and cleans up
                _stop(worker)
                raise
    except subprocess.TimeoutExpired:
        removed = _remove_unlisted(out, before)
        raise TimeoutError(f"the {plan['system']} run took longer than timeout={timeout} s and was stopped; "
                           f"its partial outputs were deleted ({len(removed)} files); see {out / 'worker.log'}, "
                           "or give it more time") from None
    except BaseException:
        _remove_unlisted(out, before)
        raise
    return read_result(out)


def _stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM (the worker then deletes its partial outputs), SIGKILL when it does not end in ``grace`` s."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _remove_unlisted(out: Path, before: dict) -> list[str]:
    """After a stopped worker: delete what it created or changed in ``out`` that a result of its own does
    not list (a worker killed before it wrote one lists nothing)."""
    try:
        result = json.loads((out / RESULT).read_text())
        if before.get(RESULT) == snapshot(out).get(RESULT):
            result = {}  # not this run's
    except (OSError, ValueError):
        result = {}
    (out / RESULT).unlink(missing_ok=True)  # an interrupted run leaves no result to be read as its own
    return remove_partial_outputs(out, result.get("calls", []) if result.get("ok") else [], before)


def deploy(system=None, overrides: dict | None = None, workdir="colab_tts_deploy", plan: dict | None = None,
           weights: bool = True, progress: bool = True, timeout: float | None = None, out=None) -> dict:
    """Everything the non-dry run does: env, clone, install, reference clip, weights, worker, result.

    ``out``: the folder for this run's result.json and audio (default ``WORKDIR/SYSTEM/out``; give each
    configuration its own to keep them side by side; the environment and weights are shared). Pass
    ``plan`` (from ``systems.plan``, possibly edited) instead of ``system`` to run a custom one.
    """
    for name, flag in (("weights", weights), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"deploy's {name} is True or False, got {flag!r}")
    if timeout is not None:  # used only after the installs: checked now
        positive(timeout, "deploy's timeout (seconds, or None for no limit)")
    if plan is None:
        if system is None:
            raise ValueError("deploy needs a system name ('gpt-sovits', 'indextts2', 'metavoice') or a plan")
        plan = make_plan(system, overrides, workdir=str(path_text(workdir, "deploy's workdir", folder=True).resolve()),
                         out=str(path_text(out, "deploy's out", folder=True).resolve()) if out else None)
    else:  # a plan edited by hand: its settings and its calls' values checked as --set values are
        if not isinstance(plan, dict) or plan.get("system") not in SYSTEMS:
            raise TypeError("plan must be a dict made by colab_tts.deploy.plan(...), possibly edited")
        plan = {**plan, "settings": settings(plan["system"], plan.get("settings"))}
        check_calls(plan["system"], plan.get("calls"), out=plan.get("out"))
    root = Path(plan["env"]).parent
    writable_folder(root, "the work directory")
    writable_folder(plan["out"], "the output folder")
    check_out_folder(plan["out"])
    spec = SYSTEMS.get(plan["system"])
    if spec is not None and spec.lock is not None and plan.get("lock"):
        check_lock(spec)  # a lock that no longer matches the runner: one message, nothing installed
    root.mkdir(parents=True, exist_ok=True)
    with _one_run(root):
        return _deploy(plan, root, weights, progress, timeout)


@contextmanager
def _one_run(root: Path):
    """Hold ``root``'s run lock: a second run on the same work directory (another notebook, a CLI beside the
    kernel) would install into the same env and take the first run's fresh outputs for its own partial ones."""
    with open(root / ".run.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another run is using the work directory {root}: wait for it to end, or give this "
                             "one another workdir") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _deploy(plan: dict, root: Path, weights: bool, progress: bool, timeout) -> dict:
    log = root / "install.log"
    steps = list(plan["install"])
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"{plan['system']}: environment")
    ran = False
    for step in steps:  # a step that ran makes every later one run again (it builds on what came before)
        ran = run_step(step, root, log, force=ran) or ran
    fetch_reference(plan["reference"])
    if weights and plan["weights"]:
        download_weights(plan, log)
    return run_worker(plan, timeout=timeout)
