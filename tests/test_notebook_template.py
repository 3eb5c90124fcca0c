"""Every notebook follows the one template (tools/nbtemplate.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

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
                assert nbtemplate.CHECK in text(c), text(c)[:80]

    def test_closes_with_what_we_measured(self, path):
        heads = [text(c) for c in cells(path) if c["cell_type"] == "markdown" and text(c).startswith("## ")]
        assert heads[-1].startswith(nbtemplate.MEASURED_HEADING)

    def test_has_a_builder_and_a_readme_row(self, path):
        assert (ROOT / "tools" / "notebooks" / f"{path.stem}.py").exists()
        assert nbtemplate.colab_url(path.name) in (ROOT / "README.md").read_text()
