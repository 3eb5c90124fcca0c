"""Under nbval (`make test` runs `pytest tests notebooks --nbval-lax`): every executed cell's output must fit
a screen (tools/nbrules.py), in every notebook in this folder."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import nbrules  # noqa: E402


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    outputs = getattr(item, "test_outputs", None)
    if outputs is not None:
        problem = nbrules.output_problem(outputs)
        if problem:
            pytest.fail(f"{item.name}: {problem}", pytrace=False)
    return result
