"""Fixtures shared across test modules: the flow-stage models, and the vLLM code paths the run exercised."""

import sys

import pytest
import torch
from tiny_flow import TINY_DIT, TINY_VOCODER

from colab_tts import flow, vllm_cpu

# COLAB_TTS_VLLM_CPU_LIBRARY (e.g. _C_AVX2) before any test imports vLLM: this run takes the kernel library
# and CPU branches of that CPU family (`make test-kernel-libraries` runs the vLLM tests under each).
vllm_cpu.force_kernel_library_from_env()



@pytest.fixture(scope="module")
def one_thread():
    # Two OpenMP threads on a busy 2-core machine wait on each other; one is steadier and faster here.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    """A tiny DiT and vocoder with IndexTTS-2's layout, random weights, in eval mode."""
    torch.manual_seed(0)
    return flow.DiT(TINY_DIT).eval(), flow.Vocoder(TINY_VOCODER).eval()


@pytest.fixture(scope="session")
def vllm_engines(tmp_path_factory):
    """What every engine of tests/vllm_engines.py reported, started once in one subprocess for the session."""
    import vllm_engines as script

    result = script.run(tmp_path_factory.mktemp("vllm_engines"))
    KERNEL_LIBRARY_LINES.append(f"engine subprocess: {result['kernel_library']}")
    return result


VLLM_PATHS: list[str] = []
KERNEL_LIBRARY_LINES: list[str] = []  # from processes other than this one


@pytest.fixture
def report_vllm_path(request):
    """Record which vLLM code path a real-engine test exercised; the run's summary lists them all."""
    def report(path: str) -> None:
        VLLM_PATHS.append(f"{request.node.name}: {path}")
        print(f"vLLM code path: {path}")
    return report


def pytest_terminal_summary(terminalreporter):
    if VLLM_PATHS or KERNEL_LIBRARY_LINES or "vllm" in sys.modules:
        terminalreporter.section("vLLM code paths exercised")
        if "vllm" in sys.modules:
            terminalreporter.write_line(f"this process: {vllm_cpu.kernel_library_line()}")
        for line in KERNEL_LIBRARY_LINES:
            terminalreporter.write_line(line)
        for line in VLLM_PATHS:
            terminalreporter.write_line(line)
