"""Under nbval (`make test` runs `pytest tests notebooks --nbval-lax`), the rules of tools/nbrules.py on what
each notebook in this folder prints when it runs: every cell's output fits a screen and every product it prints next to its inputs multiplies out, and after the last cell
every number typed in the notebook's prose appears in an output of this run or sits beside its citation."""

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import nbrules  # noqa: E402

_RUN: dict[str, dict[int, list]] = {}  # notebook path -> {id(cell): outputs of this run}


def _prose_check(item) -> str | None:
    nb = getattr(item.parent, "nb", None)
    if nb is None:
        return None
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or item.cell is not code[-1]:
        return None
    ran = copy.deepcopy(nb)
    outputs = _RUN.pop(str(item.parent.fspath), {})
    for cell, original in zip(ran.cells, nb.cells):
        if cell.cell_type == "code":
            cell.outputs = outputs.get(id(original), [])
    unbacked = nbrules.unbacked_numbers(ran)
    if unbacked:
        return ("numbers typed in markdown that no output of this run shows and no citation backs: "
                + ", ".join(f"cell {i}: {n}" for i, n in unbacked[:12])
                + " (print the figure, cite it beside the number, or drop it)")
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    outputs = getattr(item, "test_outputs", None)
    if outputs is not None:
        _RUN.setdefault(str(item.parent.fspath), {})[id(item.cell)] = outputs
        problem = nbrules.output_problem(outputs) or nbrules.arithmetic_problem(outputs)
        if problem:
            pytest.fail(f"{item.name}: {problem}", pytrace=False)
        problem = _prose_check(item)
        if problem:
            pytest.fail(f"{Path(str(item.parent.fspath)).name}: {problem}", pytrace=False)
    return result
