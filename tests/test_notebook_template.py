"""Every notebook follows the one template (tools/nbtemplate.py) and matches its source in notebooks/src/."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtemplate  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def cells(path):
    return json.loads(path.read_text())["cells"]


def text(cell):
    return "".join(cell["source"])


def test_there_are_notebooks():
    assert any(p.name == "00_gpu_check.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
class TestTemplate:
    def test_title_and_badge_from_the_one_repository_url(self, path):
        first = cells(path)[0]
        assert first["cell_type"] == "markdown" and text(first).startswith("# ")
        url = nbtemplate.colab_url(path.name)
        assert url.startswith("https://colab.research.google.com/github/")
        assert nbtemplate.repository_url().removeprefix("https://github.com/") in url
        assert url in text(first)

    def test_what_you_will_learn_then_install_cell(self, path):
        cs = cells(path)
        learn = [i for i, c in enumerate(cs) if c["cell_type"] == "markdown"
                 and text(c).startswith(nbtemplate.LEARN_HEADING)]
        assert learn, "no 'What you will learn' section"
        first_code = next(c for c in cs if c["cell_type"] == "code")
        assert cs.index(first_code) > learn[0]
        src = text(first_code)
        assert src.startswith(nbtemplate.INSTALL_MARK) and "google.colab" in src
        assert "torch" not in src.split("pip")[-1].split("requirements")[0], "never reinstall torch on Colab"

    def test_install_cell_does_nothing_off_colab(self, path, tmp_path):
        src = text(next(c for c in cells(path) if c["cell_type"] == "code"))
        guard = "import subprocess\nsubprocess.run = lambda *a, **k: (_ for _ in ()).throw(SystemExit('installed'))\n"
        env = {k: v for k, v in os.environ.items() if k != "COLAB_RELEASE_TAG"}
        done = subprocess.run([sys.executable, "-c", guard + src], capture_output=True, text=True, env=env,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        env["COLAB_RELEASE_TAG"] = "release-colab"
        done = subprocess.run([sys.executable, "-c", guard + src], capture_output=True, text=True, env=env,
                              cwd=tmp_path)
        assert "installed" in done.stderr, "on Colab the cell must install"

    def test_exactly_one_parameters_cell(self, path):
        tagged = [c for c in cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1 and tagged[0]["cell_type"] == "code"

    def test_outputs_only_on_checked_cells(self, path):
        for c in cells(path):
            if c["cell_type"] == "code" and c.get("outputs"):
                assert nbtemplate.CHECK in c.get("metadata", {}).get("tags", []), text(c)[:80]

    def test_closes_with_what_we_measured(self, path):
        heads = [text(c) for c in cells(path) if c["cell_type"] == "markdown" and text(c).startswith("## ")]
        assert heads[-1].startswith(nbtemplate.MEASURED_HEADING)

    def test_has_a_source_and_a_readme_row(self, path):
        assert (nbtemplate.SOURCES / f"{path.stem}.py").exists()
        assert nbtemplate.colab_url(path.name) in (ROOT / "README.md").read_text()

    def test_matches_its_source_exactly_apart_from_outputs(self, path):
        """The drift gate: rebuild from notebooks/src/ (no execution) and compare. Fix: `make notebooks`."""
        built = nbtemplate.notebook_from_source(nbtemplate.SOURCES / f"{path.stem}.py")
        committed = nbformat.read(path, as_version=4)
        assert nbtemplate.without_outputs(committed) == nbtemplate.without_outputs(built), (
            f"{path.name} is out of step with notebooks/src/{path.stem}.py: run `make notebooks`")


def _source(tmp_path, text):
    path = tmp_path / "99_demo.py"
    path.write_text(text)
    return path


GOOD = """# %% [markdown]
# # 99 · Demo
#
# Intro line.

# %% [markdown]
# ## What you will learn
#
# - one thing

# %% tags=["parameters"]
X = 1

# %%
print(X)

# %% [markdown]
# ## What we measured
#
# Nothing.
"""


def test_build_injects_badge_and_install_cell(tmp_path):
    nb = nbtemplate.notebook_from_source(_source(tmp_path, GOOD))
    assert nb.cells[0].source.startswith("# 99 · Demo\n\n" + nbtemplate.badge("99_demo.ipynb"))
    assert nb.cells[0].source.endswith("Intro line.")
    assert nb.cells[2].source.startswith(nbtemplate.INSTALL_MARK)
    assert nb.cells[3].metadata["tags"] == ["parameters"] and nb.cells[3].source == "X = 1"
    assert nb.cells[4].source == "print(X)"


def test_header_adds_packages_to_the_install_cell(tmp_path):
    header = "# ---\n# jupyter:\n#   colab_tts:\n#     install: [somepkg]\n# ---\n\n"
    nb = nbtemplate.notebook_from_source(_source(tmp_path, header + GOOD))
    assert '"somepkg"' in nb.cells[2].source


@pytest.mark.parametrize("broken, fix", [
    (GOOD.replace("## What we measured", "## Something else"), "What we measured"),
    (GOOD.replace(' tags=["parameters"]', ""), "parameters"),
    (GOOD.replace("# ## What you will learn", "# ## Learn"), "What you will learn"),
    (GOOD.replace("# # 99 · Demo", "# 99 · Demo"), "title"),
])
def test_a_source_that_breaks_the_template_names_the_fix(tmp_path, broken, fix):
    with pytest.raises(nbtemplate.SourceError, match=fix):
        nbtemplate.notebook_from_source(_source(tmp_path, broken))


def test_every_source_has_a_notebook():
    built = {p.stem for p in NOTEBOOKS}
    assert {s.stem for s in nbtemplate.sources([])} == built


# --- the install cell on a pretend Colab: the exact commands it would run, captured instead of run ---

FAKE_COLAB = r'''
import atexit, importlib.metadata, json, os, subprocess, sys, types
SCENARIO = os.environ["FAKE_COLAB"]
CALLS = []
VERSIONS = {"torch": "2.11.0+cu128", "vllm": None}
_version = importlib.metadata.version
def version(name):
    if name in VERSIONS:
        if VERSIONS[name] is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return VERSIONS[name]
    return _version(name)
importlib.metadata.version = version
def run(cmd, **kwargs):
    CALLS.append([str(c) for c in cmd])
    if cmd[0] == "nvidia-smi":
        if SCENARIO == "cpu":
            raise FileNotFoundError("nvidia-smi")
        return subprocess.CompletedProcess(cmd, 0, "Tesla T4, 7.5, 570.124.06\n", "")
    if cmd[1:4] == ["-m", "pip", "install"]:
        if any(str(c).startswith("vllm==") for c in cmd):
            VERSIONS["vllm"] = str(cmd[5]).split("==")[1]
            if SCENARIO == "replaced":
                VERSIONS["torch"] = "2.13.0"
        return subprocess.CompletedProcess(cmd, 0, "", "")
    if cmd[1] == "-c":
        lost = SCENARIO == "lost_gpu"
        out = {"torch": "2.13.0+cu130" if lost else "2.11.0+cu128", "torch_cuda": "13.0" if lost else "12.8",
               "driver_cuda": "12.8", "available": not lost, "device": None if lost else "Tesla T4",
               "torch_error": "driver too old (found version 12080)" if lost else "",
               "vllm": None if lost else VERSIONS["vllm"]}
        return subprocess.CompletedProcess(cmd, 0, "COLAB_TTS_CHECK " + json.dumps(out), "")
    raise AssertionError(cmd)
subprocess.run = run
os.kill = lambda pid, sig: CALLS.append(["os.kill", str(sig)])
if SCENARIO == "replaced":
    sys.modules["torch"] = types.ModuleType("torch")  # the kernel had imported torch before the cell
atexit.register(lambda: print("CALLS " + json.dumps(CALLS)))
'''


def run_install_cell(notebook: str, scenario: str, tmp_path):
    path = ROOT / "notebooks" / notebook
    src = text(next(c for c in cells(path) if c["cell_type"] == "code"))
    env = {k: v for k, v in os.environ.items() if k != "COLAB_TTS_BACKEND"} | {"COLAB_RELEASE_TAG": "release-colab_20260819", "FAKE_COLAB": scenario, "PYTHONPATH": str(ROOT),
            "COLAB_TTS_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", FAKE_COLAB + src], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    calls = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("CALLS "))[6:])
    return calls, done.stdout


def base_install():
    repo = nbtemplate.repository_url()
    return [sys.executable, "-m", "pip", "install", "-q", "-r", f"{repo}/raw/main/requirements-colab.txt",
            f"git+{repo}"]


VLLM_INSTALL = [sys.executable, "-m", "pip", "install", "-q", "vllm==0.25.1+cu129", "--extra-index-url",
                "https://wheels.vllm.ai/0.25.1/cu129"]
SMI = ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]


def test_install_cell_without_vllm_runs_one_pip_command(tmp_path):
    calls, _ = run_install_cell("00_gpu_check.ipynb", "t4", tmp_path)
    assert calls == [base_install()]


def test_install_cell_on_a_colab_t4_installs_vllm_cu129_then_checks_the_gpu(tmp_path):
    calls, out = run_install_cell("01_t4_float16_setup.ipynb", "t4", tmp_path)
    assert calls[:3] == [base_install(), SMI, VLLM_INSTALL]
    assert calls[3][:2] == [sys.executable, "-c"] and len(calls) == 4
    assert "sees Tesla T4" in out and "TRITON_ATTN" in out


def test_install_cell_on_a_cpu_runtime_installs_no_cuda_vllm(tmp_path):
    calls, out = run_install_cell("01_t4_float16_setup.ipynb", "cpu", tmp_path)
    assert calls == [base_install(), SMI]
    assert "No GPU" in out and "transformers" in out


def test_install_cell_when_torch_lost_the_gpu_says_so_and_falls_back(tmp_path):
    calls, out = run_install_cell("02_kv_cache_sizing.ipynb", "lost_gpu", tmp_path)
    assert calls[:3] == [base_install(), SMI, VLLM_INSTALL] and ["os.kill", "9"] not in calls
    assert "does NOT see the GPU" in out and "found version 12080" in out and "transformers" in out


def test_install_cell_restarts_when_torch_was_replaced_after_import(tmp_path):
    calls, out = run_install_cell("01_t4_float16_setup.ipynb", "replaced", tmp_path)
    assert calls == [base_install(), SMI, VLLM_INSTALL, ["os.kill", "9"]]
    assert "restarting now" in out
