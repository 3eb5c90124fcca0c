"""The one notebook template: builds notebooks/*.ipynb from the sources in notebooks/src/*.py.

Each source is a jupytext "percent" script (https://jupytext.readthedocs.io/en/latest/formats-scripts.html),
linted with the rest of the code. Cells start with `# %%` (code) or `# %% [markdown]` (prose, each line
commented); the one `parameters` cell is `# %% tags=["parameters"]`. An optional header sets what the
Colab install cell adds:

    # ---
    # jupyter:
    #   colab_tts:
    #     install: [vllm]
    # ---

The source holds the lesson; the build injects the template parts so they are the same everywhere:
the Open-in-Colab badge under the title (from the one repository URL in pyproject.toml) and the
Colab-only install cell after "What you will learn". The build checks the rest of the template: a
`# ` title first, "What you will learn" second, exactly one `parameters` cell, "What we measured" last.

    python tools/nbtemplate.py build [NAME ...]   # write, execute once, keep checked outputs
    python tools/nbtemplate.py write [NAME ...]   # write only; unchanged checked cells keep their outputs

Executing keeps the outputs of cells tagged `nbval-check-output` only (nbval compares those in CI):
`# %% tags=["nbval-check-output"]`. The rules of tools/nbrules.py hold for every code cell: no markdown
written as comments, no test markers a reader sees.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import tomllib
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = NOTEBOOKS / "src"
sys.path.insert(0, str(Path(__file__).resolve().parent))
import nbrules  # noqa: E402

CHECK = nbrules.CHECK_TAG  # the nbval tag on cells whose stored output CI compares
LEARN_HEADING = "## What you will learn"
MEASURED_HEADING = "## What we measured"
INSTALL_MARK = "# Colab only:"
_CELL = re.compile(r"^# %%(?P<rest>.*)$")


def repository_url() -> str:
    """The one repository URL, from pyproject.toml [project.urls] Repository."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return meta["project"]["urls"]["Repository"].rstrip("/")


def colab_url(filename: str) -> str:
    path = repository_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/main/notebooks/{filename}"


def badge(filename: str) -> str:
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(filename)})"


def install_source(install: tuple[str, ...] = ()) -> str:
    """First code cell: on Colab install only what the runtime lacks (nothing it ships); elsewhere nothing.

    ``vllm`` in ``install`` adds ``colab_tts.colab.setup_vllm()``: vLLM's CUDA 12.9 build, which keeps
    Colab's torch, a check that torch still sees the GPU, a restart if torch was replaced, and the
    transformers backend when vLLM cannot run (CPU runtime, failed check). Other names go to pip.
    """
    extra = "".join(f'"{p}", ' for p in install if p != "vllm")
    vllm = "vllm" in install
    note = ("\n# vLLM: its CUDA 12.9 build keeps Colab's torch; setup_vllm() checks the GPU after the install,"
            "\n# restarts the runtime if torch had to change, and falls back to transformers if vLLM cannot run."
            if vllm else "")
    setup = "    from colab_tts.colab import setup_vllm\n    setup_vllm()\n" if vllm else ""
    return (
        f"{INSTALL_MARK} install what the runtime lacks; everything Colab ships (torch, IPython, numpy) is kept. "
        f"Elsewhere: nothing.{note}\n"
        "import os, subprocess, sys\n"
        'if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ:\n'
        f'    REPO = "{repository_url()}"\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", '
        f'{extra}"-r", f"{{REPO}}/raw/main/requirements-colab.txt", f"git+{{REPO}}"], check=True)\n'
        f"{setup}"
    )


class SourceError(ValueError):
    """A notebook source breaks the template; the message names the file and the fix."""


def _header(lines: list[str]) -> tuple[dict, list[str]]:
    if not lines or lines[0].strip() != "# ---":
        return {}, lines
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "# ---"), None)
    if end is None:
        raise SourceError("the '# ---' header is not closed by a second '# ---' line")
    meta = yaml.safe_load("\n".join(line[2:] for line in lines[1:end])) or {}
    return meta, lines[end + 1:]


def _uncomment(line: str) -> str:
    if line.startswith("# "):
        return line[2:]
    if line.rstrip() in ("#", ""):
        return ""
    raise SourceError(f"markdown lines start with '# ': {line!r}")


def parse(path: Path) -> tuple[dict, list]:
    """Read a percent source into (header metadata, cells) with nbformat cells."""
    meta, lines = _header(path.read_text().splitlines())
    cells, kind, tags, body = [], None, [], []

    def flush():
        if kind is None:
            if any(line.strip() for line in body):
                raise SourceError(f"{path.name}: text before the first '# %%' cell marker")
            return
        text = "\n".join(_uncomment(x) for x in body) if kind == "markdown" else "\n".join(body)
        cell = (nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell)(text.strip())
        if tags:
            cell.metadata["tags"] = tags
        cells.append(cell)

    for line in lines:
        m = _CELL.match(line)
        if not m:
            body.append(line)
            continue
        flush()
        rest = m.group("rest").strip()
        kind = "markdown" if rest.startswith("[markdown]") else "code"
        rest = rest.removeprefix("[markdown]").strip()
        tags = json.loads(rest.split("=", 1)[1]) if rest.startswith("tags=") else []
        body = []
    flush()
    return meta, cells


def _check(name: str, cells: list) -> None:
    def problem(msg):
        raise SourceError(f"notebooks/src/{name}.py: {msg}")

    md = [c for c in cells if c.cell_type == "markdown"]
    if not cells or cells[0].cell_type != "markdown" or not cells[0].source.startswith("# "):
        problem("the first cell must be markdown starting with the '# ' title")
    if len(md) < 2 or not md[1].source.startswith(LEARN_HEADING):
        problem(f"the second markdown cell must start with {LEARN_HEADING!r}")
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    if len(params) != 1 or params[0].cell_type != "code":
        problem('exactly one code cell must be tagged parameters: # %% tags=["parameters"]')
    for i, cell in enumerate(cells):
        why = nbrules.markdown_in_code(cell.source) if cell.cell_type == "code" else None
        if why:
            problem(f"cell {i} ({cell.source.splitlines()[0][:60]!r}...): {why}")
    heads = [c.source for c in md if c.source.startswith("## ")]
    if not heads[-1].startswith(MEASURED_HEADING):
        problem(f"the last '## ' section must be {MEASURED_HEADING!r}")


def notebook_from_source(path: Path):
    """The notebook (no outputs) that a source builds: the template around the lesson."""
    meta, cells = parse(path)
    _check(path.stem, cells)
    install = tuple((meta.get("jupyter", {}).get("colab_tts", {}) or {}).get("install", []))
    title, _, intro = cells[0].source.partition("\n")
    cells[0].source = f"{title}\n\n{badge(path.stem + '.ipynb')}" + (f"\n\n{intro.strip()}" if intro.strip() else "")
    learn = next(i for i, c in enumerate(cells) if c.source.startswith(LEARN_HEADING))
    cells.insert(learn + 1, nbformat.v4.new_code_cell(install_source(install).strip()))
    nb = nbformat.v4.new_notebook()
    nb.metadata.update({
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": [], "gpuType": "T4"},
        "accelerator": "GPU",
    })
    for i, cell in enumerate(cells):
        cell["id"] = f"c{i:02d}"  # stable ids keep diffs small
    nb.cells = cells
    return nb


def checked(cell) -> bool:
    """Whether nbval compares this cell's stored output (its `nbval-check-output` tag)."""
    return cell.cell_type == "code" and CHECK in cell.metadata.get("tags", [])


def without_outputs(nb):
    """What the drift test compares: cell types, sources, tags and ids, and the notebook metadata."""
    return {
        # the kernel fills in language_info (its version, lexer) when it runs: not part of the source
        "metadata": {k: v for k, v in nb.metadata.items() if k not in ("widgets", "language_info")},
        "cells": [(c.get("id"), c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells],
    }


def _strip_unchecked(nb) -> None:
    nb.metadata.pop("widgets", None)  # progress-bar widget state changes every run
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        if not checked(cell):  # checked cells keep their count: nbval skips "unrun" cells
            cell.outputs, cell.execution_count = [], None


def store_checked_outputs(path: Path, timeout: int = 1800) -> None:
    """Execute the notebook once and keep only the outputs of cells tagged `nbval-check-output`."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if not any(checked(c) for c in nb.cells):
        return
    with tempfile.TemporaryDirectory() as out:
        os.environ["COLAB_TTS_OUTPUT_DIR"] = out
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    _strip_unchecked(nb)
    nbformat.write(nb, path)


def sources(names: list[str]) -> list[Path]:
    found = sorted(SOURCES.glob("[0-9]*.py"))
    if names:
        found = [s for s in found if any(n in s.stem for n in names)]
        if not found:
            raise SystemExit(f"no source matches {names}; have: {[s.stem for s in SOURCES.glob('*.py')]}")
    return found


def _keep_checked_outputs(nb, path: Path) -> None:
    """Carry over the stored outputs of checked cells whose id and source did not change."""
    if not path.exists():
        return
    old = {c.get("id"): c for c in nbformat.read(path, as_version=4).cells}
    for cell in nb.cells:
        prev = old.get(cell.get("id"))
        if checked(cell) and prev is not None and prev.source == cell.source:
            cell.outputs, cell.execution_count = prev.outputs, prev.execution_count


def build(names: list[str], execute: bool = True) -> None:
    for source in sources(names):
        print(f"building {source.stem} ...", flush=True)
        path = NOTEBOOKS / f"{source.stem}.ipynb"
        nb = notebook_from_source(source)
        if not execute:
            _keep_checked_outputs(nb, path)
        nbformat.write(nb, path)
        if execute:
            store_checked_outputs(path)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("build", "write"):
        raise SystemExit("usage: python tools/nbtemplate.py build|write [NAME ...]")
    try:
        build(sys.argv[2:], execute=sys.argv[1] == "build")
    except SourceError as e:
        raise SystemExit(str(e)) from None
