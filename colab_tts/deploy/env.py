"""The kernel side: make the system's environment, clone upstream, fetch weights, run the worker.

Nothing here imports torch or upstream code: the notebook kernel (Colab's Python 3.13 image) only
runs shell commands and reads JSON. Every step is idempotent (a marker file per install command),
so re-running a cell after a disconnect skips what is done.

Faults end in one message and leave nothing a second run would trust: the clone goes to
``upstream.partial`` and is renamed when complete (``systems.clone_command``), downloads are written under
a temporary name and renamed after their size and sha256 match (``download``, ``weights``), a full disk
raises ``DiskFullError`` (bytes needed, bytes free, where to free), and a stale ``result.json`` is deleted
before the worker starts, which writes its files atomically and deletes a failed call's partial outputs.

Colab specifics: ``uv`` is installed with pip when missing; Colab's ``UV_CONSTRAINT`` /
``UV_BUILD_CONSTRAINT`` point at a file that may not exist and would also pin upstream's
environment to Colab's versions, so they are cleared for every command
(github.com/googlecolab/colabtools/issues/5237). When Google Drive is mounted, the hub cache lives
on Drive (``HF_HOME``), so weights are downloaded once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

from .._files import atomic_path
from ..errors import DiskFullError
from .download import download, free_bytes
from .lockfile import check_lock
from .protocol import RESULT, read_result
from .systems import SYSTEMS
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


def command_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({"UV_CONSTRAINT": "", "UV_BUILD_CONSTRAINT": ""})
    cache = hub_cache()
    if cache and "HF_HOME" not in os.environ:
        env["HF_HOME"] = cache
    env.update(extra or {})
    return env


def ensure_uv() -> None:
    """uv is not in Colab's image (pip freeze of googlecolab/backend-info): install it when a plan needs it."""
    if shutil.which("uv") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "uv"], check=True)


def run_step(command: str, root: Path, log: Path, env: dict | None = None) -> bool:
    """Run one install command once (a marker in ``root`` remembers it). True if it ran now."""
    marker = root / ".done" / hashlib.sha1(command.encode()).hexdigest()[:16]
    if marker.exists():
        return False
    if command.lstrip().startswith("uv ") or " uv " in command:
        ensure_uv()
    with open(log, "a") as f:
        f.write(f"$ {command}\n")
        f.flush()
        start = f.tell()
        done = subprocess.run(["bash", "-c", command], stdout=f, stderr=subprocess.STDOUT, env=command_env(env))
    if done.returncode != 0:
        tail = log.read_text()[-1500:]
        with open(log, "rb") as f:
            f.seek(start)
            own = f.read().decode(errors="replace")  # this step's output only
        if "No space left on device" in own:
            raise DiskFullError(f"the install step '{command[:80]}'", root, None, free_bytes(root),
                                free_up_hints(root.parent))
        raise RuntimeError(f"install step failed (exit {done.returncode}): {command}\n--- {log} (end) ---\n{tail}")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(command)
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
    """PYTHONPATH gets this colab_tts (pure Python, imported by the worker beside upstream)."""
    extra = dict(plan.get("environment", {}))
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
    with open(out / "worker.log", "w") as log:
        subprocess.run([str(py), "-m", "colab_tts.deploy.worker", str(plan_path)], stdout=log,
                       stderr=subprocess.STDOUT, env=command_env(worker_env(plan)), cwd=plan["clone"],
                       timeout=timeout)
    return read_result(out)


def deploy(system=None, overrides: dict | None = None, workdir="colab_tts_deploy", plan: dict | None = None,
           weights: bool = True, progress: bool = True, timeout: float | None = None, out=None) -> dict:
    """Everything the non-dry run does: env, clone, install, reference clip, weights, worker, result.

    ``out``: the folder for this run's result.json and audio (default ``WORKDIR/SYSTEM/out``; give each
    configuration its own to keep them side by side; the environment and weights are shared). Pass
    ``plan`` (from ``systems.plan``, possibly edited) instead of ``system`` to run a custom one.
    """
    if plan is None:
        if system is None:
            raise ValueError("deploy needs a system name ('gpt-sovits', 'indextts2', 'metavoice') or a plan")
        plan = make_plan(system, overrides, workdir=str(Path(workdir).resolve()),
                         out=str(Path(out).resolve()) if out else None)
    spec = SYSTEMS.get(plan["system"])
    if spec is not None and spec.lock is not None and plan.get("lock"):
        check_lock(spec)  # a lock that no longer matches the runner: one message, nothing installed
    root = Path(plan["env"]).parent
    root.mkdir(parents=True, exist_ok=True)
    log = root / "install.log"
    steps = list(plan["install"])
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"{plan['system']}: environment")
    for command in steps:
        run_step(command, root, log)
    fetch_reference(plan["reference"])
    if weights and plan["weights"]:
        download_weights(plan, log)
    return run_worker(plan, timeout=timeout)
