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
HASH = "    --hash=sha256:" + "ab" * 32


def edited(tmp_path, system, old, new, count=1):
    """A copy of the system's lock with ``old`` replaced by ``new`` (which must occur)."""
    text = lock_path(system).read_text()
    assert old in text, old
    path = tmp_path / f"{system}.txt"
    path.write_text(text.replace(old, new, count))
    beside = tmp_path / lockfile.build_constraint_path(system).name  # the build constraint its header names
    if not beside.exists():
        beside.write_bytes(lockfile.build_constraint_path(system).read_bytes())
    return read_lock(path)


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_committed_lock_matches_the_runner(system):
    spec = SYSTEMS[system]
    lock = read_lock(lock_path(system))
    assert mismatches(spec, lock) == []
    assert lock.header["upstream"] == f"{spec.repo} @ {spec.commit}"
    date = re.fullmatch(r"(\S+Z) \(--exclude-newer\) with uv \S+ against \S+", lock.header["resolved"])[1]
    command = lock.header["command"].split()
    assert command[command.index("--exclude-newer") + 1] == date and "--generate-hashes" in command
    assert set(lock.hashes) == set(lock.pins)
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
    lock = edited(tmp_path, "gpt-sovits", "\ntorch==2.11.0 ", "\ntorch==2.12.0 ")
    assert mismatches(SYSTEMS["gpt-sovits"], lock) == [
        "the lock has torch==2.12.0, which the runner's torch==2.11.0 excludes"]
    lock = edited(tmp_path, "gpt-sovits", "\nnumpy==1.26.4 ", "\nnumpy==2.1.3 ")
    assert any("numpy<2.0 excludes" in p for p in mismatches(SYSTEMS["gpt-sovits"], lock))


def test_a_package_the_runner_needs_missing_from_the_lock_is_refused(tmp_path):
    lock = edited(tmp_path, "metavoice", "\nxformers==0.0.25 \\\n", "\nother==1.0 \\\n")
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
    lock = edited(tmp_path, "gpt-sovits", "\ntorch==2.11.0 ", f"\nnvidia-cudnn-cu13==9.19.0.56 \\\n{HASH}\ntorch==2.11.0 ")
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

    text = lock_path("metavoice").read_text().replace("\ntorch==2.2.1 ", "\ntorch==2.1.0 ")
    (tmp_path / "metavoice.txt").write_text(text)
    (tmp_path / "metavoice.build.txt").write_bytes(lockfile.build_constraint_path("metavoice").read_bytes())
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
    marker = "\nxformers==0.0.25 \\\n"
    assert marker in text
    path.write_bytes(text.replace(marker, f"\n{line}{marker}").encode())
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


def _fake_uv(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "uv").write_text(f"#!/bin/sh\necho 'uv {version} (x86_64-unknown-linux-gnu)'\n")
    (folder / "uv").chmod(0o755)
    return folder


def test_the_runner_uses_the_uv_that_resolved_the_locks(tmp_path, monkeypatch):
    from colab_tts.deploy import env as deploy_env

    for system in SYSTEMS:
        assert f" with uv {lockfile.UV_VERSION} " in read_lock(lock_path(system)).header["resolved"], system
    monkeypatch.setattr(deploy_env, "UV_HOME", tmp_path / "home")
    real_run, pip = subprocess.run, []

    def run(argv, **kw):
        if argv[1:3] == ["-m", "pip"]:
            pip.append(argv)
            _fake_uv(Path(argv[argv.index("--target") + 1]) / "bin", lockfile.UV_VERSION)  # what pip leaves
            return subprocess.CompletedProcess(argv, 0)
        return real_run(argv, **kw)

    monkeypatch.setattr(deploy_env.subprocess, "run", run)
    monkeypatch.setenv("PATH", f"{_fake_uv(tmp_path / 'right', lockfile.UV_VERSION)}:/usr/bin:/bin")
    assert deploy_env.ensure_uv() is None and pip == []  # the pinned version on PATH: used as it is
    monkeypatch.setenv("PATH", f"{_fake_uv(tmp_path / 'colab', '0.1.0')}:/usr/bin:/bin")  # another uv (Colab's)
    assert deploy_env.ensure_uv() == str(tmp_path / "home" / "bin")
    assert pip == [[sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary", ":all:",
                    "--require-hashes", "--target", str(tmp_path / "home.partial"), "-r",
                    str(tmp_path / ".home.requirements.txt")]]  # renamed into place once its uv answers
    wanted = (tmp_path / ".home.requirements.txt").read_text()  # pinned and checked, as the locks are
    assert wanted.startswith(f"uv=={lockfile.UV_VERSION} --hash=sha256:") and wanted.count("--hash=") == 4
    assert not (tmp_path / "home.partial").exists()
    pip.clear()
    assert deploy_env.ensure_uv() == str(tmp_path / "home" / "bin") and pip == []  # installed once
    with open(tmp_path / "log", "w") as log:  # every uv step finds the pinned one first on PATH
        done = deploy_env._run(["uv", "--version"], log, capture=True)
    assert done.stdout.split()[1] == lockfile.UV_VERSION


def test_locks_carry_hashes_and_install_under_require_hashes_and_the_build_constraint(tmp_path, monkeypatch):
    for system in SYSTEMS:
        lock = read_lock(lock_path(system))
        step = next(s for s in plan(system)["install"] if s.get("lock_sha256"))
        build = lockfile.build_constraint_path(system)
        assert step["argv"][-5:] == ["--build-constraint", str(build), "--require-hashes", "-r", str(lock.path)]
        assert "--no-deps" in step["argv"]
        assert step["build_constraint_sha256"] == read_lock(build).sha256  # a new constraint reruns the step
        assert mismatches(SYSTEMS[system], lock) == []
    # a lock stripped of its hashes installs without --require-hashes, and check_lock refuses it
    text = lock_path("metavoice").read_text()
    bare = re.sub(r" \\\n    --hash=sha256:[0-9a-f]{64}(?: \\\n    --hash=sha256:[0-9a-f]{64})*", "", text)
    assert "--hash" not in bare and bare.count("==") == text.count("==")
    (tmp_path / "metavoice.txt").write_text(bare)
    (tmp_path / "metavoice.build.txt").write_bytes(lockfile.build_constraint_path("metavoice").read_bytes())
    monkeypatch.setattr(lockfile, "LOCKS", tmp_path)
    step = next(s for s in plan("metavoice")["install"] if s.get("lock_sha256"))
    assert "--require-hashes" not in step["argv"]
    with pytest.raises(ValueError, match="carries no hashes"):
        check_lock(SYSTEMS["metavoice"])


def test_a_lock_records_its_resolution_time_and_a_build_constraint_for_its_sdists(tmp_path, monkeypatch):
    spec = SYSTEMS["gpt-sovits"]
    lock = read_lock(lock_path("gpt-sovits"))
    date = lock.header["resolved"].split()[0]
    build = read_lock(lockfile.build_constraint_path("gpt-sovits"))
    assert build.header["resolved"] == lock.header["resolved"] and build.listed("sdists") == lock.listed("sdists")
    assert {"opencc", "pyopenjtalk"} <= set(lock.listed("sdists")) and "cmake" in build.pins
    undated = edited(tmp_path, "gpt-sovits", f"--exclude-newer {date} ", "")
    assert mismatches(spec, undated) == [f"the lock's command does not pass --exclude-newer {date}, the time it records"]
    older = edited(tmp_path, "gpt-sovits", f"# resolved: {date} (--exclude-newer)", "# resolved: 2026-12-03")
    assert any("records no --exclude-newer time" in p for p in mismatches(spec, older))
    other_uv = edited(tmp_path, "gpt-sovits", f"with uv {lockfile.UV_VERSION} ", "with uv 0.1.0 ")
    assert any("resolved with uv 0.1.0, the runner installs uv" in p for p in mismatches(spec, other_uv))
    no_list = edited(tmp_path, "gpt-sovits", "\n# sdists: ", "\n# sdist: ")
    assert any("does not list the packages that install from sdists" in p for p in mismatches(spec, no_list))
    no_file = edited(tmp_path, "gpt-sovits", "# build-constraint: gpt-sovits.build.txt", "# build-constraint: none")
    assert f"{len(lock.listed('sdists'))} packages install from sdists but the lock names no build constraint" \
        in mismatches(spec, no_file)
    missing = edited(tmp_path, "gpt-sovits", "# build-constraint: gpt-sovits.build.txt",
                     "# build-constraint: ../../evil.txt")
    assert any("is not a file beside it" in p for p in mismatches(spec, missing))
    (tmp_path / "gpt-sovits.build.txt").write_text(build.path.read_text().replace("; pyopenjtalk", ""))
    fewer = edited(tmp_path, "gpt-sovits", "x", "x")  # beside the edited build constraint
    assert any("made for other sdists" in p for p in mismatches(spec, fewer))


def test_the_dry_run_says_what_compiles_and_where_the_python_comes_from(tmp_path):
    done = subprocess.run([sys.executable, "-m", "colab_tts.deploy", "gpt-sovits", "--dry-run", "--workdir",
                           str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""})
    p = json.loads(done.stdout)
    sdists = read_lock(lock_path("gpt-sovits")).listed("sdists")
    assert p["lock"]["compiles_from_source"] == sdists and all(name in p["lock"]["compiles_note"] for name in sdists)
    assert p["lock"]["compiles_note"].startswith(f"{len(sdists)} locked packages have no wheel for CPython 3.10")
    assert "g++ and cmake" in p["lock"]["compiles_note"]
    assert p["lock"]["build_constraint"]["path"] == str(lockfile.build_constraint_path("gpt-sovits"))
    shown = next(s["shown"] for s in p["install"] if s.get("lock_sha256"))
    assert f"--build-constraint {lockfile.build_constraint_path('gpt-sovits')} --require-hashes -r" in shown
    assert "/usr/bin/python3.10" in p["python_from"]  # Colab's image ships Ubuntu's 3.10
    assert "Colab's image has no Python 3.11" in plan("metavoice")["python_from"]


def _deploy_locks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_locks", ROOT / "tools" / "deploy_locks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generator_counts_a_package_without_a_wheel_for_the_target_as_an_sdist(tmp_path):
    tool = _deploy_locks()
    path = tmp_path / "x.txt"
    path.write_text("# build-options: --no-binary d\n--no-binary d\n" + "".join(f"{n}==1.0 \\\n{HASH}\n" for n in "abcdefg"))
    lock = read_lock(path)
    files = {"a": ["a-1.0-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "a-1.0.tar.gz"],
             "b": ["b-1.0-py3-none-any.whl"],
             "c": ["c-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", "c-1.0.tar.gz"],  # another Python
             "d": ["d-1.0-cp310-cp310-manylinux_2_28_x86_64.whl", "d-1.0.tar.gz"],  # locked --no-binary
             "e": ["e-1.0-cp310-cp310-manylinux_2_31_x86_64.whl", "e-1.0.tar.gz"],  # newer glibc than 2.28
             "f": ["f-1.0-cp310-cp310-macosx_11_0_arm64.whl", "f-1.0.zip"],
             "g": ["g-1.0-cp37-abi3-manylinux1_x86_64.whl"]}  # abi3 from 3.7 on
    built = tool.sdists(lock, {n: [{"filename": f} for f in fs] for n, fs in files.items()}, "3.10")
    assert built == ["c", "d", "e", "f"]


def test_the_generator_reads_an_sdists_build_requirements_and_checks_its_sha256(monkeypatch):
    import hashlib
    import io
    import tarfile

    tool = _deploy_locks()

    def sdist(pyproject: str | None) -> bytes:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w:gz") as t:
            for name, text in (("x-1.0/setup.py", "x"), ("x-1.0/pyproject.toml", pyproject),
                               ("x-1.0/sub/pyproject.toml", "[build-system]\nrequires = ['evil']")):
                if text is not None:
                    info = tarfile.TarInfo(name)
                    info.size = len(text.encode())
                    t.addfile(info, io.BytesIO(text.encode()))
        return raw.getvalue()

    def requirements(data, sha=None):
        monkeypatch.setattr(tool.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(data))
        files = [{"filename": "x-1.0.tar.gz", "url": "https://files.example/x-1.0.tar.gz",
                  "hashes": {"sha256": sha or hashlib.sha256(data).hexdigest()}}]
        return tool.build_requirements("x", files)

    assert requirements(sdist("[build-system]\nrequires = ['scikit-build', 'cmake']\n"
                              "build-backend = 'scikit_build_core.build'\n")) == ["scikit-build", "cmake"]
    assert requirements(sdist("[build-system]\nrequires = ['setuptools>=64']\n"
                              "build-backend = 'setuptools.build_meta'\n")) == ["setuptools>=64", "wheel"]
    assert requirements(sdist(None)) == ["setuptools>=40.8.0", "wheel"]  # setup.py only: the legacy backend
    assert requirements(sdist("[tool.black]\n")) == ["setuptools>=40.8.0", "wheel"]
    with pytest.raises(RuntimeError, match="does not match the sha256 the lock records"):
        requirements(sdist(None), sha="0" * 64)


@pytest.mark.parametrize("hidden", ["\r", "\r\n", "\x0c", "\x0b", "\x00", "\t", "\x1b"])
def test_a_control_character_that_uv_may_read_as_a_line_break_is_refused(tmp_path, hidden):
    # uv 0.13.9 ends a comment at a bare CR: "# note\r--index-url URL" installs from URL (tried: it fetched
    # six from the index after the CR); Python's split("\n") saw one comment line
    text = lock_path("metavoice").read_text()
    marker = "\nxformers==0.0.25 \\\n"
    path = tmp_path / "metavoice.txt"
    path.write_bytes(text.replace(marker, f"\n# a note{hidden}--index-url https://evil.example/simple{marker}")
                     .encode())
    with pytest.raises(ValueError, match=r"metavoice\.txt:\d+ holds a control character"):
        read_lock(path)


def test_a_no_binary_option_names_a_locked_package_the_header_lists_as_an_sdist(tmp_path):
    # a --no-binary added to both the header and the body built numpy from source with build dependencies no
    # build constraint pins, and check_lock accepted it
    spec = SYSTEMS["gpt-sovits"]
    widened = edited(tmp_path, "gpt-sovits", "# build-options: --no-binary opencc",
                     "# build-options: --no-binary opencc; --no-binary numpy")
    path = widened.path
    path.write_text(path.read_text().replace("\n--no-binary opencc\n", "\n--no-binary opencc\n--no-binary numpy\n"))
    lock = read_lock(path)
    assert "--no-binary numpy" in lock.options
    assert any("--no-binary numpy" in p and "sdists" in p for p in mismatches(spec, lock))
    unlocked = edited(tmp_path, "gpt-sovits", "# build-options: --no-binary opencc",
                      "# build-options: --no-binary opencc; --no-binary evil")
    unlocked.path.write_text(unlocked.path.read_text().replace("\n--no-binary opencc\n",
                                                              "\n--no-binary opencc\n--no-binary evil\n"))
    assert any("--no-binary evil" in p for p in mismatches(spec, read_lock(unlocked.path)))
    assert mismatches(spec, read_lock(lock_path("gpt-sovits"))) == []


@pytest.mark.parametrize("left", ["truncated", "empty", "not executable", "partial folder", "other version"])
def test_a_uv_install_cut_short_is_redone_not_run(tmp_path, monkeypatch, left):
    # a Ctrl-C or full disk during pip's copy left home/bin/uv cut short: every later run raised
    # "OSError: [Errno 8] Exec format error: 'uv'" (a traceback) and nothing reinstalled it
    from colab_tts.deploy import env as deploy_env

    home = tmp_path / "home"
    monkeypatch.setattr(deploy_env, "UV_HOME", home)
    uv = home / "bin" / "uv"
    uv.parent.mkdir(parents=True)
    if left == "truncated":
        uv.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(100))
    elif left == "empty":
        uv.write_bytes(b"")
    elif left == "not executable":
        _fake_uv(uv.parent, lockfile.UV_VERSION).joinpath("uv").chmod(0o644)
    elif left == "partial folder":  # pip killed while writing beside it; home holds no uv
        uv.parent.rmdir()
        _fake_uv(tmp_path / "home.partial" / "bin", lockfile.UV_VERSION)
    else:
        _fake_uv(uv.parent, "0.1.0")
    if left in ("truncated", "empty"):
        uv.chmod(0o755)
    real_run, pip = subprocess.run, []

    def run(argv, **kw):
        if argv[1:3] == ["-m", "pip"]:
            pip.append(argv)
            target = Path(argv[argv.index("--target") + 1])
            assert not target.exists()  # a fresh folder: nothing of the interrupted install reused
            _fake_uv(target / "bin", lockfile.UV_VERSION)
            return subprocess.CompletedProcess(argv, 0)
        return real_run(argv, **kw)

    monkeypatch.setattr(deploy_env.subprocess, "run", run)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert deploy_env.ensure_uv() == str(home / "bin") and len(pip) == 1
    assert deploy_env._uv_version({"PATH": f"{home / 'bin'}:/usr/bin:/bin"}) == lockfile.UV_VERSION

    def failing(argv, **kw):  # no network: one clear error, and no folder that looks installed
        if argv[1:3] == ["-m", "pip"]:
            target = Path(argv[argv.index("--target") + 1])
            (target / "bin").mkdir(parents=True)
            (target / "bin" / "uv").write_bytes(b"")
            return subprocess.CompletedProcess(argv, 1)
        return real_run(argv, **kw)

    uv.write_bytes(b"")
    monkeypatch.setattr(deploy_env.subprocess, "run", failing)
    with pytest.raises(RuntimeError, match=rf"could not install uv {lockfile.UV_VERSION} .*pip exited 1"):
        deploy_env.ensure_uv()
    assert not (tmp_path / "home.partial").exists()


@pytest.mark.parametrize("key, value", [("for", "indextts2.txt"), ("python", "3.11"),
                                        ("platform", "aarch64-manylinux_2_28")])
def test_a_build_constraint_made_for_another_lock_or_python_is_refused(tmp_path, key, value):
    # the build constraint's own header ("for", "python", "platform") was never compared with the lock's: one
    # resolved for another interpreter with the same sdists and date passed
    build = lockfile.build_constraint_path("gpt-sovits")
    text = build.read_text()
    line = next(x for x in text.splitlines() if x.startswith(f"# {key}: "))
    (tmp_path / build.name).write_text(text.replace(line, f"# {key}: {value}"))
    lock = edited(tmp_path, "gpt-sovits", "x", "x")
    assert any(f"records {key} {value!r}" in p for p in mismatches(SYSTEMS["gpt-sovits"], lock))


def test_uv_reads_no_index_or_setting_the_plan_does_not_name(tmp_path, monkeypatch):
    # uv 0.13.9 read a uv.toml in the current folder ([pip] extra-index-url) and UV_EXTRA_INDEX_URL from the
    # environment: the runner's installs went to that index (tried with uv pip compile -v: it fetched from it)
    from colab_tts.deploy import env as deploy_env

    folder = _fake_uv(tmp_path / "bin", lockfile.UV_VERSION)
    (folder / "uv").write_text(f"#!/bin/sh\n[ \"$1\" = --version ] && echo 'uv {lockfile.UV_VERSION} (x)' && exit 0\n"
                               "env\n")
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    for name, value in (("UV_EXTRA_INDEX_URL", "https://evil.example/simple"), ("UV_INDEX_URL", "https://e.x"),
                        ("UV_DEFAULT_INDEX", "https://e.x"), ("UV_FIND_LINKS", "/tmp"), ("UV_CONSTRAINT", "/x"),
                        ("UV_PYTHON_INSTALL_MIRROR", "https://evil.example/python"), ("UV_NO_VERIFY_HASHES", "1"),
                        ("UV_INSECURE_HOST", "evil.example"), ("UV_CONFIG_FILE", "/tmp/uv.toml"),
                        ("UV_CACHE_DIR", str(tmp_path / "cache"))):
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "log", "w") as log:
        seen = deploy_env._run(["uv", "pip", "install", "x"], log, capture=True).stdout
    env = dict(line.split("=", 1) for line in seen.splitlines() if "=" in line)
    assert env["UV_NO_CONFIG"] == "1" and env["UV_CACHE_DIR"] == str(tmp_path / "cache")
    assert sorted(k for k in env if k.startswith("UV_")) == ["UV_CACHE_DIR", "UV_NO_CONFIG"]
