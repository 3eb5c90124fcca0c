"""Nothing a user types as a path deletes or changes anything outside the work directory, or runs code.

Every deploy step runs with work directories whose names hold spaces, quotes, ``$``, backticks, unicode,
a leading ``-`` and 200 characters. ``subprocess.run`` is replaced at the bottom: git runs for real (a local
stand-in upstream), shells run for real (a step that went back to shell text would do its damage here),
uv and the system's Python are emulated (no install), and the network is a local stub; everything above
(plans, markers, clone, archive extraction, reference clip, worker protocol) is the real code. Beside each
work directory lie folders named after the pieces of its name (``my`` next to ``my dir``), snapshotted
before and compared after. The same names go through every file-writing entry point.
"""

import io
import json
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from colab_tts.deploy import env as deploy_env
from colab_tts.deploy.protocol import write_result, write_wav
from colab_tts.deploy.systems import SYSTEMS, plan

NAMES = ["my dir", "it's \"quoted\"", "$HOME $(touch pwned) `touch pwned2`", "ünïcødé ☃ 語", "-rf",
         "x" * 200, "a;b&c|d > e", "new\nline", "*glob?[ab]", "..."]
REAL_RUN = subprocess.run
REAL_POPEN = subprocess.Popen
REAL_URLOPEN = urllib.request.urlopen


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _tgz(members: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ARCHIVES = {".zip": _zip({"nltk_data/corpora/x.txt": b"nltk"}),
            ".tar.gz": _tgz({"open_jtalk_dic_utf_8-1.11/sys.dic": b"dic"})}


class _Body(io.BytesIO):
    headers: dict = {}


def fake_urlopen(url, *args, **kwargs):
    if url.startswith("file:"):
        return REAL_URLOPEN(url, *args, **kwargs)
    return _Body(next(data for suffix, data in ARCHIVES.items() if url.endswith(suffix)))


def fake_run(calls):
    def run(argv, *args, **kwargs):
        assert isinstance(argv, list) and all(isinstance(w, str) for w in argv), f"not an argument list: {argv!r}"
        assert not kwargs.get("shell"), argv
        calls.append(argv)
        if argv[0] in ("bash", "sh", "/bin/sh", "git"):  # real: a shell string's damage would show
            return REAL_RUN(argv, *args, **kwargs)
        done = subprocess.CompletedProcess(argv, 0, stdout="")
        if argv[:2] == ["uv", "venv"]:
            Path(argv[-1], "bin").mkdir(parents=True)
            Path(argv[-1], "bin", "python").write_text("")
        elif argv[0] == "uv" or argv[1:4] == ["-m", "pip", "install"]:
            pass
        elif argv[1] == "-c" and "find_spec" in argv[2]:  # where the installed module lives
            folder = Path(argv[0]).parents[1] / "lib" / argv[-1]
            folder.mkdir(parents=True, exist_ok=True)
            done.stdout = f"{folder}\n"
        elif argv[1:3] == ["-m", "colab_tts.deploy.weights"]:
            pass
        elif argv[1:3] == ["-m", "colab_tts.deploy.worker"]:
            p = json.loads(Path(argv[3]).read_text())
            assert Path(kwargs["cwd"]) == Path(p["clone"])
            write_result(p["out"], {"system": p["system"], "upstream": p["upstream"], "device": "cpu",
                                    "ok": True, "calls": []})
        else:
            raise AssertionError(f"a command the runner should not run: {argv!r}")
        return done
    return run


def tree(folder: Path, skip: Path | None = None) -> dict:
    """relative path -> (size, mtime) of everything under ``folder`` except ``skip``."""
    out = {}
    for p in folder.rglob("*"):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        st = p.lstat()
        out[str(p.relative_to(folder))] = (st.st_size if p.is_file() else None, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    repo = tmp_path_factory.mktemp("upstream") / "stand-in"
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    REAL_RUN(["git", "init", "-q", str(repo)], check=True)
    (repo / "f.txt").write_text("x")
    REAL_RUN([*git, "add", "."], check=True)
    REAL_RUN([*git, "commit", "-qm", "c"], check=True)
    return repo, REAL_RUN([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


@pytest.fixture
def harness(tmp_path, monkeypatch, upstream):
    calls: list = []
    monkeypatch.setattr(subprocess, "run", fake_run(calls))

    class Popen:  # the worker is started with Popen (to stop it gently on a timeout)
        def __new__(cls, argv, *args, **kwargs):
            if argv[0] in ("bash", "sh", "/bin/sh", "git"):  # what subprocess.run starts for real
                return REAL_POPEN(argv, *args, **kwargs)
            return super().__new__(cls)

        def __init__(self, argv, *args, **kwargs):
            self.returncode = subprocess.run(argv, *args, **kwargs).returncode

        def wait(self, timeout=None):
            return self.returncode

    monkeypatch.setattr(subprocess, "Popen", Popen)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(deploy_env, "hub_cache", lambda: None)
    monkeypatch.setattr(deploy_env, "ensure_uv", lambda: None)  # uv is emulated: the pinned one (test_deploy_locks)
    base = tmp_path / "x"
    base.mkdir()
    clip = tmp_path / "clip.wav"
    write_wav(clip, np.ones(16000, np.int16), 16000)  # 1 s

    def make(system, name):
        for piece in {*name.split(), "my", "HOME", "rf", "x", "a", "e", "new", "line", "glob"} - {name}:
            if "/" not in piece and piece not in (".", ".."):
                (base / piece).mkdir(exist_ok=True)
                (base / piece / "keep.txt").write_text("mine")
        monkeypatch.chdir(base / "my")
        repo, commit = upstream
        p = plan(system, {}, workdir=str(base / name), repo_url=str(repo), commit=commit)
        p["reference"].update(url=clip.as_uri(), size=None, sha256=None)
        return base, p

    make.calls = calls
    return make


def run_deploy(p):
    return deploy_env.deploy(plan=p, progress=False)


@pytest.mark.parametrize("name", NAMES)
def test_every_deploy_step_with_a_hostile_workdir_touches_only_the_workdir(harness, name):
    base, p = harness("gpt-sovits", name)
    work = base / name
    before = tree(base, skip=work)
    result = run_deploy(p)
    assert result["ok"] and result["system"] == "gpt-sovits"
    assert tree(base, skip=work) == before, "something outside the work directory changed"
    assert not [q for q in base.rglob("pwned*") if q.is_file()] and not Path.home().joinpath("pwned").exists()
    root = work / "gpt-sovits"
    assert (root / "upstream" / "f.txt").read_text() == "x"  # cloned and checked out, under the hostile name
    assert (root / "env" / "nltk_data" / "corpora" / "x.txt").read_bytes() == b"nltk"
    assert (root / "env" / "lib" / "pyopenjtalk" / "open_jtalk_dic_utf_8-1.11" / "sys.dic").exists()
    assert (root / "out" / "ref.wav").exists() and (root / "out" / "result.json").exists()
    assert sorted(q.name for q in root.iterdir()) == [".done", ".run.lock", "env", "install.log", "out", "upstream"]


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_each_system_runs_its_steps_as_argument_lists(harness, system):
    base, p = harness(system, "my dir")
    before = tree(base, skip=base / "my dir")
    run_deploy(p)
    assert tree(base, skip=base / "my dir") == before
    ran = harness.calls
    assert all(argv[0] not in ("bash", "sh") for argv in ran), "a step ran through a shell"
    for step in p["install"]:  # what the dry run shows is what a shell would read as the same argument list
        if "argv" in step:
            import shlex

            assert shlex.split(step["shown"])[-len(step["argv"]):] == step["argv"]


def test_a_rerun_after_the_clone_or_the_env_is_deleted_redoes_what_is_missing(harness):
    import shutil

    base, p = harness("gpt-sovits", "my dir")
    run_deploy(p)
    root = base / "my dir" / "gpt-sovits"
    harness.calls.clear()
    run_deploy(p)
    assert [a[:2] for a in harness.calls if a[0] in ("git", "uv")] == [], "a complete work dir reran steps"
    shutil.rmtree(root / "upstream")  # the step markers remain
    run_deploy(p)
    assert (root / "upstream" / "f.txt").read_text() == "x"
    assert ["git", "clone"] in [a[:2] for a in harness.calls]
    assert any(a[:3] == ["uv", "pip", "install"] for a in harness.calls), "what builds on the clone reran"
    harness.calls.clear()
    shutil.rmtree(root / "env")
    run_deploy(p)
    assert (root / "env" / "bin" / "python").exists() and (root / "env" / "nltk_data").is_dir()
    assert [a[:2] for a in harness.calls if a[0] == "uv"][0] == ["uv", "venv"]


def test_an_archive_member_that_would_land_outside_is_refused(tmp_path):
    into = tmp_path / "work" / "env"
    into.mkdir(parents=True)
    evil = tmp_path / "work" / "evil.zip"
    evil.write_bytes(_zip({"../../outside.txt": b"x"}))
    with pytest.raises(ValueError, match=r"'\.\./\.\./outside\.txt', which would be written outside"):
        deploy_env._extract(evil, into)
    evil_tar = tmp_path / "work" / "evil.tar.gz"
    evil_tar.write_bytes(_tgz({"../outside2.txt": b"x"}))
    with pytest.raises(ValueError, match="holds a member this runner does not extract"):
        deploy_env._extract(evil_tar, into)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_a_work_directory_that_cannot_be_one_is_refused_before_anything_runs(harness, tmp_path):
    base, p = harness("gpt-sovits", "my dir")
    (base / "my dir").write_text("a file, not a folder")
    with pytest.raises(ValueError, match=r"the work directory .*my dir/gpt-sovits is inside .*my dir, which is a file"):
        run_deploy(p)
    assert harness.calls == []


def test_a_step_may_delete_only_inside_the_work_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    step = {"argv": [sys.executable, "-c", "pass"], "fresh": str(tmp_path / "mine")}
    with pytest.raises(ValueError, match="outside the work directory"):
        deploy_env.run_step(step, tmp_path / "work", tmp_path / "log")
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("name", NAMES)
def test_every_file_writer_writes_exactly_the_hostile_name(tmp_path, monkeypatch, name):
    from colab_tts.audio import Speech
    from colab_tts.deploy.download import download

    (tmp_path / "my").mkdir()
    (tmp_path / "my" / "keep.txt").write_text("mine")
    folder = tmp_path / name
    monkeypatch.chdir(tmp_path / "my")
    before = tree(tmp_path, skip=folder)
    speech = Speech(np.zeros(160, dtype=np.float32), 16000)
    stem = name[:60]
    assert speech.save(folder / f"{stem}.wav") == folder / f"{stem}.wav"
    write_wav(folder / f"{stem}-2.wav", np.zeros(16), 16000)
    write_result(folder, {"system": "s", "upstream": {}, "device": "cpu", "ok": True, "calls": []})
    monkeypatch.setattr(urllib.request, "urlopen", lambda url: _Body(b"abc"))
    download("https://example.invalid/f", folder / f"{stem}.bin", size=3)
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{stem}.wav", f"{stem}-2.wav", "result.json",
                                                               f"{stem}.bin"])
    assert tree(tmp_path, skip=folder) == before


@pytest.mark.parametrize("workdir", ["file", "file/inside", "/proc/colab_tts", "y" * 300, "y" * 300 + "/sub"])
def test_deploy_cli_refuses_a_workdir_that_cannot_be_one_in_one_line(tmp_path, capsys, monkeypatch, workdir):
    from colab_tts.deploy.__main__ import main

    def never(*args, **kwargs):
        raise AssertionError("an install step ran")

    monkeypatch.setattr(deploy_env, "run_step", never)
    (tmp_path / "file").write_text("mine")
    folder = workdir if workdir.startswith("/") else str(tmp_path / workdir)
    assert main(["gpt-sovits", "--workdir", folder]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: the work directory ") and folder[:50] in err, err
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.parametrize("blank", ["", "  "])
def test_an_empty_workdir_is_asked_for_as_a_folder_not_a_file_name(capsys, blank):
    from colab_tts.deploy.__main__ import main

    assert main(["gpt-sovits", "--dry-run", "--workdir", blank]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --workdir is empty: give a folder") and ".wav" not in err


@pytest.mark.parametrize("fresh", ["..", "env/../..", "./."])
def test_a_step_may_not_delete_the_work_directory_or_above_through_dots(tmp_path, fresh):
    root = tmp_path / "work" / "gpt-sovits"
    (root / "env").mkdir(parents=True)
    (tmp_path / "work" / "keep.txt").write_text("mine")
    step = {"argv": [sys.executable, "-c", "pass"], "fresh": f"{root}/{fresh}"}
    with pytest.raises(ValueError, match="outside the work directory"):
        deploy_env.run_step(step, root, tmp_path / "log")
    assert (tmp_path / "work" / "keep.txt").read_text() == "mine" and (root / "env").is_dir()


def test_a_second_run_on_the_same_work_directory_is_refused_before_anything_runs(harness):
    import fcntl

    base, p = harness("gpt-sovits", "my dir")
    root = Path(p["env"]).parent
    root.mkdir(parents=True)
    with open(root / ".run.lock", "a") as first_run:  # what a run in another process holds
        fcntl.flock(first_run, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another run is using the work directory"):
            run_deploy(p)
    assert harness.calls == [] and sorted(q.name for q in root.iterdir()) == [".run.lock"]
    run_deploy(p)  # the lock is the run's, not the work directory's: the next run goes ahead
    assert harness.calls


def test_an_output_folder_of_the_users_is_refused_before_anything_runs(harness):
    base, p = harness("gpt-sovits", "w")
    mine = base / "my"  # holds the user's keep.txt
    (mine / "plan.json").write_text("my own plan")
    p["out"] = str(mine)
    with pytest.raises(ValueError, match="holds files no run of this runner wrote"):
        run_deploy(p)
    assert harness.calls == [] and (mine / "plan.json").read_text() == "my own plan"
    assert sorted(q.name for q in mine.iterdir()) == ["keep.txt", "plan.json"]
    run_deploy(p := {**p, "out": str(base / "w" / "new out")})
    run_deploy(p)  # a run's own folder is used again


def test_a_path_starting_with_tilde_is_the_home_folder_in_every_entry_point(tmp_path, monkeypatch, capsys):
    # the dry run put "--workdir ~/w" under the home folder, but deploy() installed into ./~/w, and
    # "synth -o ~/a.wav" (quoted) made a folder named "~" here: a later "rm -rf ~" meant for it takes home
    from colab_tts import cli
    from colab_tts.audio import Speech
    from colab_tts.deploy.__main__ import main as deploy_main

    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    assert Speech(np.zeros(160, dtype=np.float32), 16000).save("~/a.wav") == home / "a.wav"
    assert (home / "a.wav").is_file()
    assert deploy_main(["gpt-sovits", "--dry-run", "--workdir", "~/w"]) == 0
    shown = json.loads(capsys.readouterr().out)
    ran = []
    monkeypatch.setattr(deploy_env, "_deploy", lambda p, *a: ran.append(p) or {"ok": True})
    deploy_env.deploy("gpt-sovits", workdir="~/w", out="~/o", progress=False)
    assert ran[0]["env"] == shown["env"] == str(home / "w" / "gpt-sovits" / "env")
    assert ran[0]["out"] == str(home / "o")
    args = cli.build_parser().parse_args(["synth", "hi", "-o", "~/b.wav"])
    assert cli.check_synth_args(args).output == home / "b.wav"  # what synth then writes
    assert list(here.iterdir()) == []  # no folder named "~" (nor anything else) made here
