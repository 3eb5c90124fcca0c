"""Execute every notebook in order and write executed copies and HTML under an output folder.

    python tools/run_notebooks.py notebooks build/notebooks [NAME ...]

Each notebook writes its audio and plots to build/notebooks/<name>/ (via COLAB_TTS_OUTPUT_DIR).
Prints a summary: notebook, pass/fail, seconds, files written; exits 1 naming the cell that broke, or the
cell whose output does not fit a screen (tools/nbrules.py: at most 40 lines and 4,000 characters), or the
numbers typed in markdown that no output of the run shows and no citation backs.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nbrules  # noqa: E402


def failing_cell(nb) -> tuple[int, str]:
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return i, f"{out.get('ename')}: {out.get('evalue')}"
    return -1, "unknown error"


def too_long(nb) -> str | None:
    """The first code cell whose output does not fit a screen or shows a product its inputs do not give, as
    'cell N: why', or None."""
    for i, cell in enumerate(nb.cells):
        outputs = cell.get("outputs") if cell.cell_type == "code" else None
        problem = outputs is not None and (nbrules.output_problem(outputs) or nbrules.arithmetic_problem(outputs))
        if problem:
            return f"cell {i}: {problem}"
    return None


def run_one(path: Path, out_dir: Path) -> dict:
    files_dir = out_dir / path.stem
    files_dir.mkdir(parents=True, exist_ok=True)
    os.environ["COLAB_TTS_OUTPUT_DIR"] = str(files_dir.resolve())
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=1800, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError:
        index, message = failing_cell(nb)
        error = f"cell {index}: {message}"
    except Exception as exc:  # kernel died, timeout: still write what ran
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    error = error or too_long(nb)
    unbacked = [] if error else nbrules.unbacked_numbers(nb)
    if unbacked:
        error = "numbers in the prose no output shows and no citation backs: " + ", ".join(
            f"cell {i}: {n}" for i, n in unbacked[:12])
    nbformat.write(nb, out_dir / path.name)
    body, _ = HTMLExporter().from_notebook_node(nb)
    (out_dir / f"{path.stem}.html").write_text(body, encoding="utf-8")
    files = sorted(p.relative_to(out_dir.parent) for p in files_dir.rglob("*") if p.is_file())
    return {"notebook": path.name, "ok": error is None, "seconds": seconds, "error": error, "files": files}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    src, out_dir, names = Path(argv[0]), Path(argv[1]), argv[2:]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = sorted(p for p in src.glob("*.ipynb") if not names or any(n in p.stem for n in names))
    if not paths:
        print(f"no notebooks found in {src}")
        return 2
    results = []
    bar = tqdm(paths, desc="notebooks", unit="nb")
    for path in bar:
        bar.set_postfix_str(path.stem)
        result = run_one(path, out_dir)
        bar.write(f"{'ok    ' if result['ok'] else 'FAILED'} {path.name} in {result['seconds']:.0f} s")
        results.append(result)
    print(f"\nSummary (executed copies and HTML in {out_dir}/):")
    for r in results:
        print(f"  {'PASS' if r['ok'] else 'FAIL'}  {r['notebook']:<40} {r['seconds']:6.1f} s")
        if r["error"]:
            print(f"        broke at {r['error']}")
        for f in r["files"]:
            print(f"        wrote {f}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
