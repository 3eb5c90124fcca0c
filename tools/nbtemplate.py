"""The one notebook template, and the builder that writes notebooks/ from tools/notebooks/*.py.

Each notebook is written by a short builder script (tools/notebooks/NN_name.py) so that the
template parts - title, Open-in-Colab badge, "What you will learn", the Colab-only install cell,
the one `parameters` cell, the closing "What we measured" - are the same everywhere:

    from nbtemplate import Notebook
    nb = Notebook("00_gpu_check.ipynb", "Which GPU did I get?", learn=["...", "..."])
    nb.parameters('SIMULATE_GPU = "T4"')
    nb.md("## A section ...")
    nb.code("report = detect(SIMULATE_GPU)\\nprint(report)")
    nb.md("## What we measured ...")
    nb.write()

`python tools/nbtemplate.py build [NAME ...]` runs the builders, then executes each notebook once
and keeps the outputs of cells marked `# NBVAL_CHECK_OUTPUT` only (nbval compares those in CI).
"""

from __future__ import annotations

import os
import re
import runpy
import sys
import tempfile
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BUILDERS = Path(__file__).resolve().parent / "notebooks"
CHECK = "NBVAL_CHECK_OUTPUT"
LEARN_HEADING = "## What you will learn"
MEASURED_HEADING = "## What we measured"
INSTALL_MARK = "# Colab only:"


def repository_url() -> str:
    """The one repository URL, from pyproject.toml [project.urls] Repository."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return meta["project"]["urls"]["Repository"].rstrip("/")


def colab_url(filename: str) -> str:
    path = repository_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/main/notebooks/{filename}"


def badge(filename: str) -> str:
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(filename)})"


def install_source(colab_pip: tuple[str, ...] = ()) -> str:
    """First code cell: install on Colab only (never torch), do nothing anywhere else."""
    extra = "".join(f'"{p}", ' for p in colab_pip)
    note = (
        f"\n# {', '.join(colab_pip)} pins its own torch, so it goes in here, before anything is imported."
        if colab_pip else ""
    )
    return (
        f"{INSTALL_MARK} install what the runtime lacks (Colab's own torch is kept). Elsewhere: nothing.{note}\n"
        "import os, subprocess, sys\n"
        'if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ:\n'
        f'    REPO = "{repository_url()}"\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", '
        f'{extra}"-r", f"{{REPO}}/raw/main/requirements-colab.txt", f"git+{{REPO}}"], check=True)\n'
    )


class Notebook:
    def __init__(self, filename: str, title: str, learn: list[str], intro: str = "",
                 colab_pip: tuple[str, ...] = ()):
        self.filename = filename
        self.nb = nbformat.v4.new_notebook()
        self.nb.metadata.update({
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "colab": {"provenance": [], "gpuType": "T4"},
            "accelerator": "GPU",
        })
        head = f"# {title}\n\n{badge(filename)}"
        if intro:
            head += f"\n\n{intro.strip()}"
        self.md(head)
        self.md(LEARN_HEADING + "\n\n" + "\n".join(f"- {item}" for item in learn))
        self.code(install_source(tuple(colab_pip)))

    def md(self, text: str) -> "Notebook":
        self.nb.cells.append(nbformat.v4.new_markdown_cell(text.strip()))
        return self

    def code(self, source: str) -> "Notebook":
        self.nb.cells.append(nbformat.v4.new_code_cell(source.strip()))
        return self

    def parameters(self, source: str) -> "Notebook":
        cell = nbformat.v4.new_code_cell("# Parameters: change these, or let papermill set them.\n"
                                         + source.strip())
        cell.metadata["tags"] = ["parameters"]
        self.nb.cells.append(cell)
        return self

    def write(self) -> Path:
        for i, cell in enumerate(self.nb.cells):
            cell["id"] = f"c{i:02d}"  # stable ids keep diffs small
        path = NOTEBOOKS / self.filename
        nbformat.write(self.nb, path)
        return path


def _strip_unchecked(nb) -> None:
    nb.metadata.pop("widgets", None)  # progress-bar widget state changes every run
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        if CHECK not in cell.source:  # checked cells keep their count: nbval skips "unrun" cells
            cell.outputs, cell.execution_count = [], None


def store_checked_outputs(path: Path, timeout: int = 1800) -> None:
    """Execute the notebook once and keep only the outputs of `# NBVAL_CHECK_OUTPUT` cells."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if not any(CHECK in c.source for c in nb.cells if c.cell_type == "code"):
        return
    with tempfile.TemporaryDirectory() as out:
        os.environ["COLAB_TTS_OUTPUT_DIR"] = out
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    _strip_unchecked(nb)
    nbformat.write(nb, path)


def build(names: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    builders = sorted(BUILDERS.glob("[0-9]*.py"))
    if names:
        builders = [b for b in builders if any(n in b.stem for n in names)]
        if not builders:
            raise SystemExit(f"no builder matches {names}; have: {[b.stem for b in BUILDERS.glob('*.py')]}")
    for builder in builders:
        print(f"building {builder.stem} ...", flush=True)
        runpy.run_path(str(builder), run_name="__main__")
        store_checked_outputs(NOTEBOOKS / f"{builder.stem}.ipynb")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "build":
        raise SystemExit("usage: python tools/nbtemplate.py build [NAME ...]")
    build(sys.argv[2:])
