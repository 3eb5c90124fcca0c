"""Each system's committed lock matches the runner, and the runner installs from it (no network here)."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from colab_tts.deploy import lockfile, plan
from colab_tts.deploy.lockfile import check_lock, lock_path, mismatches, read_lock
from colab_tts.deploy.systems import SYSTEMS, TORCH_CU128

ROOT = Path(__file__).resolve().parents[1]


def edited(tmp_path, system, old, new, count=1):
    """A copy of the system's lock with ``old`` replaced by ``new`` (which must occur)."""
    text = lock_path(system).read_text()
    assert old in text, old
    path = tmp_path / f"{system}.txt"
    path.write_text(text.replace(old, new, count))
    return read_lock(path)


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_committed_lock_matches_the_runner(system):
    spec = SYSTEMS[system]
    lock = read_lock(lock_path(system))
    assert mismatches(spec, lock) == []
    assert lock.header["upstream"] == f"{spec.repo} @ {spec.commit}"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} with uv \S+ against \S+", lock.header["resolved"])
    assert lock.header["command"].startswith("uv pip compile --python-version " + spec.python)
    assert "--python-platform x86_64-manylinux_2_28" in lock.header["command"]
    assert len(lock.pins) > 50  # a whole environment, not the direct requirements alone


def test_a_lock_for_another_commit_or_python_is_refused(tmp_path):
    spec = SYSTEMS["indextts2"]
    other = edited(tmp_path, "indextts2", spec.commit, "0" * 40)
    assert any("upstream" in p for p in mismatches(spec, other))
    older = edited(tmp_path, "indextts2", "# python: 3.11", "# python: 3.10")
    assert any("python" in p and "'3.10'" in p for p in mismatches(spec, older))


def test_a_locked_version_the_runners_pins_exclude_is_refused(tmp_path):
    lock = edited(tmp_path, "gpt-sovits", "\ntorch==2.11.0\n", "\ntorch==2.12.0\n")
    assert mismatches(SYSTEMS["gpt-sovits"], lock) == [
        "the lock has torch==2.12.0, which the runner's torch==2.11.0 excludes"]
    lock = edited(tmp_path, "gpt-sovits", "\nnumpy==1.26.4\n", "\nnumpy==2.1.3\n")
    assert any("numpy<2.0 excludes" in p for p in mismatches(SYSTEMS["gpt-sovits"], lock))


def test_a_package_the_runner_needs_missing_from_the_lock_is_refused(tmp_path):
    lock = edited(tmp_path, "metavoice", "\nxformers==0.0.25\n", "\n")
    assert mismatches(SYSTEMS["metavoice"], lock) == [
        "xformers (the runner requires xformers==0.0.25) is not in the lock"]


def test_runner_requirements_changed_since_the_lock_was_resolved_are_refused():
    spec = SYSTEMS["metavoice"]
    moved = dataclasses.replace(spec, lock=dataclasses.replace(spec.lock, overrides=(
        "torch==2.2.2", "torchaudio==2.2.2", "xformers==0.0.25.post1")))
    problems = mismatches(moved, read_lock(lock_path("metavoice")))
    assert any("resolved with overrides" in p for p in problems)
    assert any("torch==2.2.1, which the runner's torch==2.2.2 excludes" in p for p in problems)
    gsv = SYSTEMS["gpt-sovits"]
    fewer = dataclasses.replace(gsv, lock=dataclasses.replace(gsv.lock, excludes=gsv.lock.excludes[:-1]))
    assert any("resolved with excludes" in p for p in mismatches(fewer, read_lock(lock_path("gpt-sovits"))))


@pytest.mark.parametrize("change,why", [
    (dict(inputs=("requirements.txt",)), "resolved with inputs"),
    (dict(upstream_lock=True), "resolved with inputs"),
    (dict(no_sources=True), "--no-sources"),
])
def test_a_lock_resolved_from_other_inputs_or_modes_is_refused(change, why):
    gsv = SYSTEMS["gpt-sovits"]
    other = dataclasses.replace(gsv, lock=dataclasses.replace(gsv.lock, **change))
    assert any(why in p for p in mismatches(other, read_lock(lock_path("gpt-sovits"))))


def test_an_excluded_package_in_the_lock_is_refused(tmp_path):
    lock = edited(tmp_path, "gpt-sovits", "\ntorch==2.11.0\n", "\ntorch==2.11.0\nnvidia-cudnn-cu13==9.19.0.56\n")
    assert mismatches(SYSTEMS["gpt-sovits"], lock) == [
        "nvidia-cudnn-cu13 is excluded by the runner but the lock installs it"]


def test_an_unpinned_line_is_refused(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("# upstream: a @ b\nnumpy==1.26.4\ntorch>=2.2\n")
    with pytest.raises(ValueError, match=r"x.txt:3 is not pinned"):
        read_lock(path)


def test_gpt_sovits_keeps_the_cuda_12_8_torch():
    """torch/torchaudio/torchcodec come from the cu128 index at the lock's versions, before the lock; the
    lock installs nothing of PyPI's CUDA 13 runtime."""
    lock = read_lock(lock_path("gpt-sovits"))
    install = [step.get("argv", []) for step in plan("gpt-sovits")["install"]]
    torch_step = next(i for i, c in enumerate(install) if c[-2:] == ["--index-url", TORCH_CU128])
    lock_step = next(i for i, c in enumerate(install) if c[-2:] == ["-r", str(lock.path)])
    assert torch_step < lock_step
    assert [w for w in install[torch_step] if "==" in w] == [
        f"torch=={lock.pins['torch']}", f"torchaudio=={lock.pins['torchaudio']}",
        f"torchcodec=={lock.pins['torchcodec']}"]
    assert lock.pins["torch"] == "2.11.0"  # Colab's 2.11.0+cu128 satisfies it (PEP 440 local versions)
    cuda13 = [n for n in lock.pins if n.endswith("-cu13") or n.startswith("cuda-") or
              (n.startswith("nvidia-") and not n.endswith("-cu12"))]
    assert cuda13 == []


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_dry_run_installs_from_the_lock_and_resolves_nothing_else(system):
    done = subprocess.run([sys.executable, "-m", "colab_tts.deploy", system, "--dry-run"], capture_output=True,
                          text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    p = json.loads(done.stdout)
    lock = read_lock(lock_path(system))
    assert p["lock"]["path"] == str(lock.path) and p["lock"]["sha256"] == lock.sha256
    installs = [s for s in p["install"] if s.get("argv", [])[:3] == ["uv", "pip", "install"]]
    from_lock = [s for s in installs if s["argv"][-2:] == ["-r", str(lock.path)]]
    assert len(from_lock) == 1 and "--no-deps" in from_lock[0]["argv"]
    assert from_lock[0]["lock_sha256"] == lock.sha256  # a regenerated lock reruns the step (its marker is per step)
    for step in installs:  # anything else: pinned torch from its index, or upstream itself without deps
        words = step["argv"]
        assert "--no-deps" in words or "--index-url" in words, words
        if "--index-url" in words:
            assert all("==" in w for w in words[words.index("--python") + 2:words.index("--index-url")])


def test_the_runner_refuses_a_stale_lock_before_installing_anything(tmp_path, monkeypatch):
    from colab_tts.deploy import env as deploy_env

    text = lock_path("metavoice").read_text().replace("\ntorch==2.2.1\n", "\ntorch==2.1.0\n")
    (tmp_path / "metavoice.txt").write_text(text)
    monkeypatch.setattr(lockfile, "LOCKS", tmp_path)

    def install(*args, **kwargs):  # never a real install from a test, whatever the check does
        raise AssertionError("an install step ran from a stale lock")

    monkeypatch.setattr(deploy_env, "run_step", install)
    with pytest.raises(ValueError, match=r"(?s)no longer matches.*torch==2.1.0.*regenerate it: python tools/deploy_locks.py"
                                         r" metavoice"):
        deploy_env.deploy("metavoice", workdir=str(tmp_path / "work"), progress=False)
    assert not (tmp_path / "work").exists(), "nothing may be installed from a stale lock"
    monkeypatch.setattr(lockfile, "LOCKS", tmp_path / "none")
    with pytest.raises(ValueError, match="has no lock"):
        check_lock(SYSTEMS["metavoice"])
    with pytest.raises(ValueError, match="has no lock"):
        plan("metavoice")


HASH = "    --hash=sha256:" + "ab" * 32


@pytest.mark.parametrize("line", [
    "--extra-index-url https://evil.example/simple", "--index-url https://evil.example/simple",
    "-i https://evil.example/simple", "--find-links https://evil.example/", "-f /tmp/wheels",
    "--trusted-host evil.example", "-e git+https://evil.example/x.git#egg=x", "-e .", "-r other.txt",
    "-c constraints.txt", "--requirement other.txt", "--no-binary numpy", "--only-binary :all:",
    "--pre", "--prefer-binary", "--use-feature=truststore",
    "evil @ https://evil.example/evil-1.0.tar.gz", "https://evil.example/evil-1.0-py3-none-any.whl",
    "./evil-1.0-py3-none-any.whl", "/tmp/evil", "evil==1.0 --index-url https://evil.example/simple",
    "evil==1.0 ; python_version > '3'", "evil==${VERSION}", "evil>=1.0", "evil", "evil==1.0 # a note",
    "evil==1.0 \\", "    # a comment that joins the next line \\", "evil==1.0\r", "\u00e9vil==1.0",
    "numpy==1.26.4",  # already pinned: a second pin of the same package
])
def test_a_lock_line_the_generator_does_not_write_is_refused(tmp_path, line):
    text = lock_path("metavoice").read_text()
    path = tmp_path / "metavoice.txt"
    marker = "\nxformers==0.0.25\n"
    path.write_bytes(text.replace(marker, f"\nxformers==0.0.25\n{line}\n").encode())
    with pytest.raises(ValueError, match=r"metavoice\.txt(:\d+ | holds non-ASCII| ends inside)"):
        read_lock(path)


def test_the_option_lines_a_lock_may_hold_are_the_ones_its_header_records(tmp_path):
    lock = read_lock(lock_path("gpt-sovits"))
    assert lock.options == ("--no-binary opencc",) and lock.header["build-options"] == "--no-binary opencc"
    unrecorded = tmp_path / "gpt-sovits.txt"
    unrecorded.write_text(lock_path("gpt-sovits").read_text().replace("# build-options: --no-binary opencc",
                                                                        "# build-options: none"))
    with pytest.raises(ValueError, match=r"gpt-sovits\.txt:\d+ is an option line the lock's header does not record"):
        read_lock(unrecorded)
    widened = tmp_path / "indextts2.txt"  # an index recorded in the header is still not a build option
    widened.write_text(lock_path("indextts2").read_text()
                       .replace("# build-options: none", "# build-options: --extra-index-url https://evil.example")
                       .replace("\nnumpy==", "\n--extra-index-url https://evil.example\nnumpy=="))
    with pytest.raises(ValueError, match="does not record"):
        read_lock(widened)


def test_hash_lines_are_read_and_must_cover_every_pin(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text(f"# upstream: a @ b\nnumpy==1.26.4 \\\n{HASH} \\\n{HASH}\ntorch==2.2.1 \\\n{HASH}\n")
    lock = read_lock(path)
    assert lock.pins == {"numpy": "1.26.4", "torch": "2.2.1"} and len(lock.hashes["numpy"]) == 2
    path.write_text(f"numpy==1.26.4 \\\n{HASH}\ntorch==2.2.1\n")
    with pytest.raises(ValueError, match=r"hashes for some pins only \(\['torch'\]"):
        read_lock(path)
    path.write_text("numpy==1.26.4 \\\n--extra-index-url https://evil.example\n")
    with pytest.raises(ValueError, match=r"x\.txt:2 should be a '--hash=sha256:\.\.\.' line"):
        read_lock(path)


def test_the_runner_installs_the_uv_that_resolved_the_locks(monkeypatch):
    from colab_tts.deploy import env as deploy_env

    for system in SYSTEMS:
        assert f" with uv {lockfile.UV_VERSION} " in read_lock(lock_path(system)).header["resolved"], system
    ran = []
    monkeypatch.setattr(deploy_env.shutil, "which", lambda name: None)
    monkeypatch.setattr(deploy_env.subprocess, "run", lambda argv, **kw: ran.append(argv))
    deploy_env.ensure_uv()
    assert ran == [[sys.executable, "-m", "pip", "install", "-q", f"uv=={lockfile.UV_VERSION}"]]


def test_a_lock_with_hashes_is_installed_under_require_hashes(tmp_path, monkeypatch):
    committed, lines = lock_path("metavoice").parent, []
    for line in lock_path("metavoice").read_text().splitlines():
        lines += [line + " \\", HASH] if re.match(r"^[A-Za-z0-9].*==", line) else [line]
    (tmp_path / "metavoice.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(lockfile, "LOCKS", tmp_path)
    step = next(s for s in plan("metavoice")["install"] if s.get("lock_sha256"))
    assert step["argv"][-3:] == ["--require-hashes", "-r", str(tmp_path / "metavoice.txt")]
    monkeypatch.setattr(lockfile, "LOCKS", committed)  # the committed lock has none yet
    step = next(s for s in plan("metavoice")["install"] if s.get("lock_sha256"))
    assert "--require-hashes" not in step["argv"]
