"""The runner's faults, simulated: an interrupted clone or download, a full disk, a CUDA OOM mid-run.

Each ends in one clear message and leaves nothing a second run would trust (checked by listing the
folders and by sizes/hashes), and the second run then completes.
"""

import errno
import hashlib
import io
import json
import os
import subprocess
import sys
import types
import wave
from pathlib import Path

import pytest

from colab_tts.deploy import download as dl
from colab_tts.deploy import env as deploy_env
from colab_tts.deploy import weights, worker
from colab_tts.deploy.protocol import read_result, write_wav
from colab_tts.deploy.systems import clone_step
from colab_tts.errors import DiskFullError

PAYLOAD = bytes(range(256)) * 1000  # 256,000 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class Response(io.BytesIO):
    """What urlopen returns: a readable body with headers; ``cut_at`` ends the body early, ``interrupt_at``
    raises KeyboardInterrupt there (a Colab interrupt mid-download)."""

    def __init__(self, data=PAYLOAD, cut_at=None, interrupt_at=None):
        super().__init__(data[:cut_at] if cut_at else data)
        self.headers = {"Content-Length": str(len(data))}
        self.interrupt_at = interrupt_at

    def read(self, n=-1):
        if self.interrupt_at is not None and self.tell() >= self.interrupt_at:
            raise KeyboardInterrupt
        return super().read(min(n, 4096))


def opener(**kw):
    calls = []

    def open_url(url):
        calls.append(url)
        return Response(**kw)

    open_url.calls = calls
    return open_url


# --- an interrupted clone -------------------------------------------------------------------------------

def source_repo(tmp_path) -> tuple[Path, str]:
    repo = tmp_path / "src"
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "f.txt").write_text("x")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    return repo, subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_an_interrupted_clone_leaves_no_clone_and_the_next_run_clones_afresh(tmp_path, monkeypatch):
    repo, commit = source_repo(tmp_path)
    dest = tmp_path / "work" / "upstream"
    dest.parent.mkdir()
    fake = tmp_path / "bin"
    fake.mkdir()
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip()
    # a git whose clone writes part of the repository and is then interrupted (Ctrl-C: exit 130)
    (fake / "git").write_text(f'#!/bin/sh\nif [ "$1" = clone ]; then for d; do :; done; mkdir -p "$d/.git/objects" && '
                              f'echo "ref: refs/heads/ma" > "$d/.git/HEAD"; exit 130; fi\nexec {real_git} "$@"\n')
    (fake / "git").chmod(0o755)
    step = clone_step(str(repo), str(dest))
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match="exit 130"):
        deploy_env.run_step(step, tmp_path / "work", tmp_path / "log")
    assert not dest.exists(), "an interrupted clone must not look cloned"
    assert (tmp_path / "work" / "upstream.partial" / ".git").exists()  # what it left, under another name
    monkeypatch.setenv("PATH", os.environ["PATH"].split(":", 1)[1])
    assert deploy_env.run_step(step, tmp_path / "work", tmp_path / "log") is True  # not marked done before
    deploy_env.run_step({"argv": ["git", "-C", str(dest), "checkout", "-q", commit]}, tmp_path / "work",
                        tmp_path / "log")
    head = subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert head.strip() == commit and (dest / "f.txt").read_text() == "x"
    assert "upstream.partial" not in leftovers(tmp_path / "work")


# --- an interrupted download ----------------------------------------------------------------------------

def test_a_cut_download_is_refused_and_nothing_is_kept(tmp_path):
    dest = tmp_path / "w" / "model.bin"
    with pytest.raises(ValueError, match=r"got 100,000 of 256,000 bytes from https://x/model.bin \(the download was cut\); nothing was kept"):
        dl.download("https://x/model.bin", dest, len(PAYLOAD), SHA, opener=opener(cut_at=100_000))
    assert leftovers(dest.parent) == []


def test_an_interrupt_mid_download_leaves_no_partial_file(tmp_path):
    dest = tmp_path / "w" / "model.bin"
    with pytest.raises(KeyboardInterrupt):
        dl.download("https://x/model.bin", dest, len(PAYLOAD), SHA, opener=opener(interrupt_at=120_000))
    assert leftovers(dest.parent) == []


def test_a_file_whose_size_or_hash_does_not_match_is_downloaded_again(tmp_path):
    dest = tmp_path / "model.bin"
    dest.write_bytes(PAYLOAD[:1000])  # what an older runner's cut download left under the final name
    fetch = opener()
    dl.download("https://x/model.bin", dest, len(PAYLOAD), SHA, opener=fetch)
    assert len(fetch.calls) == 1 and hashlib.sha256(dest.read_bytes()).hexdigest() == SHA
    dl.download("https://x/model.bin", dest, len(PAYLOAD), SHA, opener=fetch)
    assert len(fetch.calls) == 1, "a verified file is not fetched again"
    dest.write_bytes(b"\0" * len(PAYLOAD))  # same size, other bytes (and another mtime): hashed again
    dl.download("https://x/model.bin", dest, len(PAYLOAD), SHA, opener=fetch)
    assert len(fetch.calls) == 2 and hashlib.sha256(dest.read_bytes()).hexdigest() == SHA


def test_the_reference_clip_is_checked_and_written_whole(tmp_path):
    src = tmp_path / "clip.wav"
    with wave.open(str(src), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\1\0" * 8000)
    ref = {"url": src.as_uri(), "path": str(tmp_path / "out" / "ref.wav"), "pad_to_seconds": 1.0,
           "size": src.stat().st_size, "sha256": "0" * 64}
    with pytest.raises(ValueError, match="sha256"):
        deploy_env.fetch_reference(ref)
    assert leftovers(tmp_path / "out") == []  # a second run would have trusted any ref.wav there
    ref["sha256"] = hashlib.sha256(src.read_bytes()).hexdigest()
    with wave.open(str(deploy_env.fetch_reference(ref))) as w:
        assert w.getnframes() == 16000
    assert leftovers(tmp_path / "out") == ["ref.wav"]


def hub(tmp_path, content=PAYLOAD, fail=None):
    """Stand-ins for the hub listing and hf_hub_download into a local_dir."""
    calls = []

    def download(repo, name, dest, force):
        calls.append((name, force))
        if fail:
            raise fail
        path = Path(dest) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return str(path)

    def list_files(repo, patterns):
        return [{"name": "sub/model.bin", "size": len(PAYLOAD), "sha256": SHA}]

    spec = {"hub_repo": "org/model", "patterns": ["*"], "dest": str(tmp_path / "ckpt"), "free_up": ["the Drive cache"]}
    return spec, {"list_files": list_files, "download": download}, calls


def test_weights_cut_earlier_are_fetched_again_and_kept_when_whole(tmp_path):
    spec, fakes, calls = hub(tmp_path)
    (tmp_path / "ckpt" / "sub").mkdir(parents=True)
    (tmp_path / "ckpt" / "sub" / "model.bin").write_bytes(PAYLOAD[:5000])
    weights.fetch(spec, **fakes)
    assert calls == [("sub/model.bin", True)]
    assert hashlib.sha256((tmp_path / "ckpt" / "sub" / "model.bin").read_bytes()).hexdigest() == SHA
    weights.fetch(spec, **fakes)
    assert len(calls) == 1


def test_a_corrupted_weight_download_is_deleted_with_one_message(tmp_path):
    spec, fakes, calls = hub(tmp_path, content=b"\0" * len(PAYLOAD))
    with pytest.raises(ValueError, match=r"org/model/sub/model.bin: the downloaded file \(256,000 bytes\) does not "
                                         r"match .* it was deleted"):
        weights.fetch(spec, **fakes)
    assert leftovers(tmp_path / "ckpt" / "sub") == []


# --- a full disk ----------------------------------------------------------------------------------------

class FullDiskFile(io.FileIO):
    """A file whose writes fail with ENOSPC after ``room`` bytes, as on a full disk."""

    room = 50_000

    def write(self, data):
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_a_full_disk_while_writing_is_one_message_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "open", lambda path, mode: FullDiskFile(path, "w"), raising=False)
    dest = tmp_path / "w" / "model.bin"
    with pytest.raises(DiskFullError) as err:
        dl.download("https://x/model.bin", dest, len(PAYLOAD), SHA, what="model.bin", opener=opener(),
                    free_up=["the hub cache on Drive (/content/drive/MyDrive/colab_tts_cache)"])
    message = str(err.value)
    assert message.startswith("model.bin needs 0.00 GiB (256,000 bytes); ") and " GiB (" in message
    assert "bytes) free" in message and "colab_tts_cache" in message and err.value.errno == errno.ENOSPC
    assert leftovers(dest.parent) == []


def test_too_little_free_disk_is_named_before_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: types.SimpleNamespace(free=1000))
    spec, fakes, calls = hub(tmp_path)
    with pytest.raises(DiskFullError, match=r"(?s)org/model \(1 files\) needs 0.00 GiB \(256,000 bytes\); .* has 0.00 GiB "
                                            r"\(1,000 bytes\) free.*the Drive cache"):
        weights.fetch(spec, **fakes)
    assert calls == []  # nothing started


def test_a_full_disk_during_a_weight_download_reaches_the_kernel_as_one_disk_full_error(tmp_path):
    spec, fakes, calls = hub(tmp_path, fail=OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(DiskFullError) as err:
        weights.fetch(spec, **fakes)
    assert err.value.needed == len(PAYLOAD) and err.value.free_up == ["the Drive cache"]
    # what the env's process hands the kernel: the report, turned back into the same exception
    weights.report(tmp_path / "report.json", err.value)
    again = deploy_env.weights_failure(tmp_path / "report.json", 1)
    assert isinstance(again, DiskFullError) and str(again) == str(err.value)
    assert "stopped (exit 137) before saying why" in str(deploy_env.weights_failure(tmp_path / "none.json", 137))


def test_a_full_disk_in_an_install_step_is_one_disk_full_error(tmp_path):
    say = "import sys; print('OSError: [Errno 28] No space left on device', file=sys.stderr); sys.exit(1)"
    with pytest.raises(DiskFullError, match=r"the install step '.*python.* -c .*' ran out of disk; .* free"):
        deploy_env.run_step({"argv": [sys.executable, "-c", say]}, tmp_path, tmp_path / "log")


# --- a CUDA out-of-memory error mid-run -----------------------------------------------------------------

STANDIN = "colab_tts.deploy._oom_standin"
FAILURE = {}


def oom_plan(tmp_path) -> dict:
    out = tmp_path / "out"
    out.mkdir()
    (out / "ref.wav").write_bytes(b"reference")  # the kernel's, from before the run
    calls = [{"target": "Model", "kwargs": {}},
             {"target": "Model.speak", "label": "short", "kwargs": {"n": 800}},
             {"target": "Model.speak", "label": "long", "kwargs": {"n": 10**9}}]
    return {"system": "stand-in", "upstream": {"repo": "x/y", "commit": "0" * 40}, "clone": str(tmp_path),
            "out": str(out), "import_paths": [], "settings": {}, "calls": calls,
            "oom_advice": ["is_half=True", "a shorter text"]}


@pytest.fixture
def oom_system(monkeypatch):
    import torch

    class Model:
        def __init__(self):
            self.out = None

        def speak(self, n):
            if n > 10**6:  # upstream writes part of its output, then CUDA (or the disk) runs out
                (self.out / "long.wav").write_bytes(b"RIFF" + b"\0" * 100)
                raise FAILURE["error"]
            return [0.1] * n

    module = types.ModuleType(STANDIN)
    module.import_upstream = lambda plan: {"Model": Model}
    module.after_build = lambda name, obj, plan: setattr(obj, "out", Path(plan["out"]))
    module.audio = lambda call, value, out, i: write_wav(out / f"{call['label']}.wav", value, 8000)
    monkeypatch.setitem(sys.modules, STANDIN, module)
    monkeypatch.setitem(worker.MODULES, "stand-in", STANDIN.rsplit(".", 1)[1])
    monkeypatch.chdir(os.getcwd())  # run_plan changes into the clone
    FAILURE["error"] = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.81 GiB")


def test_a_cuda_oom_mid_run_is_one_message_with_advice_and_no_partial_output(tmp_path, oom_system):
    p = oom_plan(tmp_path)
    result = worker.run_plan(p)
    assert result["ok"] is False
    assert result["error"] == ("OutOfMemoryAdvice: upstream's Model.speak [long] ran out of GPU memory. Try:\n"
                               "  - is_half=True\n  - a shorter text")
    out = Path(p["out"])
    assert leftovers(out) == ["ref.wav", "result.json", "short.wav"]  # the partial long.wav is gone
    assert result["removed_partial_outputs"] == ["long.wav"]
    assert [c.get("label") for c in result["calls"]] == [None, "short"]  # what finished, with its audio
    with wave.open(str(out / "short.wav")) as w:
        assert w.getnframes() == 800
    with pytest.raises(ValueError, match=r"(?s)the stand-in runner failed: OutOfMemoryAdvice: .*is_half=True"):
        read_result(out)  # what the kernel (and a second look at this folder) gets


def test_a_full_disk_mid_run_is_one_disk_full_message_and_no_partial_output(tmp_path, oom_system):
    FAILURE["error"] = OSError(errno.ENOSPC, "No space left on device")
    p = oom_plan(tmp_path)
    result = worker.run_plan(p)
    assert result["error"].startswith(f"DiskFullError: upstream's Model.speak [long] writing into {p['out']} ran "
                                      f"out of disk; {p['out']} has ")
    assert "bytes) free. Free space" in result["error"] and "hub cache" in result["error"]
    assert leftovers(Path(p["out"])) == ["ref.wav", "result.json", "short.wav"]


def test_a_worker_that_dies_leaves_no_result_a_second_run_would_read(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text(json.dumps({"system": "metavoice", "upstream": {}, "device": "T4", "ok": True,
                                                 "calls": []}))  # the previous run's
    env = tmp_path / "env" / "bin"
    env.mkdir(parents=True)
    (env / "python").write_text("#!/bin/sh\nexit 137\n")  # killed (the kernel's OOM killer, a timeout)
    (env / "python").chmod(0o755)
    p = {"system": "metavoice", "env": str(env.parent), "out": str(out), "clone": str(tmp_path), "environment": {}}
    with pytest.raises(ValueError, match="did not finish"):
        deploy_env.run_worker(p)


@pytest.mark.parametrize("error,kind,says", [
    (ConnectionError("Max retries exceeded with url: /api/models/org/model"), RuntimeError,
     "weight download failed (ConnectionError): Max retries exceeded"),
    (RuntimeError("Cannot access gated repo for url https://huggingface.co/org/model"), RuntimeError,
     "HF_TOKEN"),
])
def test_a_hub_failure_reaches_the_kernel_as_one_message_not_a_silent_stop(tmp_path, monkeypatch, error, kind, says):
    def refuse(repo, patterns):
        raise error
    monkeypatch.setattr(weights, "listing", refuse)
    monkeypatch.setattr(weights.fetch, "__defaults__", (refuse, *weights.fetch.__defaults__[1:]))
    spec, _, _ = hub(tmp_path)
    report = tmp_path / "report.json"
    assert weights.main([json.dumps(spec), str(report)]) == 1
    failure = deploy_env.weights_failure(report, 1)
    assert isinstance(failure, kind) and says in str(failure) and "before saying why" not in str(failure)


# --- an interrupted run ---------------------------------------------------------------------------------

def test_ctrl_c_mid_run_leaves_no_partial_output(tmp_path, oom_system):
    FAILURE["error"] = KeyboardInterrupt()
    p = oom_plan(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        worker.run_plan(p)
    out = Path(p["out"])
    assert leftovers(out) == ["ref.wav", "result.json", "short.wav"]  # long.wav, half written, is gone
    with pytest.raises(ValueError, match=r"interrupted \(KeyboardInterrupt\) during 2 of 3 calls"):
        read_result(out)


SLOW_WORKER = """#!{python}
import os, sys, time
out = os.path.dirname(sys.argv[-1])
open(os.path.join(out, ".long.123.partial.wav"), "wb").write(b"RIFF half")
open(os.path.join(out, "long.wav"), "wb").write(b"RIFF half")
{body}
"""


@pytest.mark.parametrize("body", ["time.sleep(60)",  # stopped by SIGTERM (no handler: dies at once)
                                  "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
def test_a_timeout_stops_the_worker_and_deletes_its_partial_outputs(tmp_path, monkeypatch, body):
    out = tmp_path / "out"
    out.mkdir()
    (out / "ref.wav").write_bytes(b"reference")
    (out / "result.json").write_text(json.dumps({"system": "metavoice", "upstream": {}, "device": "T4", "ok": True,
                                                 "calls": []}))  # the previous run's
    env = tmp_path / "env" / "bin"
    env.mkdir(parents=True)
    (env / "python").write_text(SLOW_WORKER.format(python=sys.executable, body=body))
    (env / "python").chmod(0o755)
    monkeypatch.setattr(deploy_env._stop, "__defaults__", (0.5,))  # the grace before SIGKILL
    p = {"system": "metavoice", "env": str(env.parent), "out": str(out), "clone": str(tmp_path), "environment": {}}
    with pytest.raises(TimeoutError, match=r"took longer than timeout=2 s and was stopped; its partial outputs "
                                           r"were deleted \(2 files\)"):
        deploy_env.run_worker(p, timeout=2)
    assert leftovers(out) == ["plan.json", "ref.wav", "worker.log"]


@pytest.mark.parametrize("raised, code, first", [
    (RuntimeError("install step failed (exit 1): uv pip install ...\n--- install.log (end) ---\nno network"), 1,
     "error: install step failed (exit 1)"),
    (KeyboardInterrupt(), 130, "interrupted: run the same command again")])
def test_the_deploy_cli_reports_a_failed_install_or_ctrl_c_without_a_traceback(raised, code, first, tmp_path,
                                                                                monkeypatch, capsys):
    # a failed install (no network for the pinned uv, a step that exits 1) or Ctrl-C printed a traceback
    from colab_tts.deploy.__main__ import main

    def deploy(*args, **kwargs):
        raise raised

    monkeypatch.setattr(deploy_env, "deploy", deploy)
    assert main(["gpt-sovits", "--workdir", str(tmp_path / "w")]) == code
    err = capsys.readouterr().err
    assert err.startswith(first) and "Traceback" not in err, err
