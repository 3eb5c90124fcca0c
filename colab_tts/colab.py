"""Colab's runtime: detect it, install vLLM so that torch keeps the GPU, and fall back when it cannot.

Which vLLM, and why (read 2026-11-29):

- Colab's GPU image ships torch 2.11.0+cu128 on a CUDA 12.8 driver, Python 3.13
  (googlecolab/backend-info pip-freeze.gpu.txt @a72407924822, 2026-08-19; a dated copy is in
  tests/data/colab_packages_gpu_2026-08-19.txt).
- Since vLLM 0.20.0 the default PyPI wheel is built for CUDA 13.0
  (https://github.com/vllm-project/vllm/pull/39878), and a CUDA 13 torch on a 12.8 driver stops seeing
  the GPU: "The NVIDIA driver on your system is too old (found version 12080)"
  (https://github.com/modelscope/FunASR/issues/2973, https://github.com/verl-project/verl-omni/issues/133).
  A plain ``pip install vllm`` therefore breaks Colab. vLLM also publishes ``+cu129`` wheels
  (https://github.com/vllm-project/vllm/issues/42756), which run on 12.x drivers by CUDA's minor-version
  compatibility (https://github.com/allenai/open-instruct/pull/1874).
- **vLLM 0.25.1, the +cu129 wheel from https://wheels.vllm.ai/0.25.1/cu129**: "works for me on CUDA 12.8"
  (https://github.com/vllm-project/vllm/issues/44335, 2026-08-03). Its wheel requires torch==2.11.0,
  torchaudio==2.11.0, torchvision==0.26.0 and transformers>=5.5.3 (METADATA of the 0.25.1 wheel, copied to
  tests/data/vllm_0.25.1_requires.txt). Under PEP 440 a pin without a local label matches
  ``2.11.0+cu128`` (https://peps.python.org/pep-0440/#version-matching), so pip keeps Colab's torch,
  torchvision, torchaudio, transformers 5.15 and numpy 2.1.3: no restart. It does change numba
  (0.61.2 -> 0.65.0), torchcodec (0.11 -> >=0.14; torchaudio 2.11 uses it to load files, this project
  does not), fastapi, lark, setuptools and nvtx, and adds about forty packages (tests/test_packaging.py
  checks which of Colab's packages it changes). These requirements are read from the PyPI wheel of the
  release; the +cu129 wheel's CUDA-specific extras (PyPI's name ``[cu13]`` ones) may differ.
- On a T4 (CC 7.5) 0.25.1 keeps FlashInfer off below SM80 after its sm75 crash
  (vllm-project/vllm vllm/v1/attention/backends/flashinfer.py @752a3a504;
  https://github.com/flashinfer-ai/flashinfer/issues/3620),
  FlashAttention needs SM80, so attention runs on TRITON_ATTN; bfloat16 raises below CC 8.0
  (vllm-project/vllm vllm/platforms/cuda.py @752a3a504). Hence ``dtype="float16"`` (vLLM's "half") and
  ``attention_backend="TRITON_ATTN"``: the rule lives in ``colab_tts.vllm_versions.below_sm80``, which the
  planner's ``engine_kwargs()`` and :func:`vllm_engine_kwargs` here both use.
- Not chosen: vLLM 0.11.2, which Unsloth installs on a T4
  (https://github.com/unslothai/notebooks/commit/08486c9). It pins
  torch 2.9.0 and so replaces Colab's torch, torchvision and torchaudio (a restart, and a torch other
  notebooks here were not written against).
- Not verified on a real Colab GPU yet: the +cu129 wheel is built against torch 2.11.0+cu129 and runs here
  against +cu128. That is why :func:`setup_vllm` checks, right after the install, that torch still sees
  the GPU and that vLLM's CUDA extension loads, and falls back to transformers when either fails.

What the rest of the package reads: ``VLLM_VERSION`` (the planner's default vLLM version:
``colab_tts.vllm_versions.COLAB_VLLM`` is this constant, so ``plan_vllm`` and ``fit_vllm`` plan for what is
installed here) and :func:`preferred_backend` (``$COLAB_TTS_BACKEND``, else the last setup's choice).
This module imports only the standard library (and ``colab_release``) at import time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .colab_release import VLLM_CUDA, VLLM_VERSION  # one home: also the planner's default (vllm_versions.COLAB_VLLM)

VLLM_REQUIREMENT = f"vllm=={VLLM_VERSION}+{VLLM_CUDA}"
VLLM_INDEX = f"https://wheels.vllm.ai/{VLLM_VERSION}/{VLLM_CUDA}"
BACKEND_ENV = "COLAB_TTS_BACKEND"  # "vllm" or "transformers": what the Orpheus loader should use
MIN_VLLM_CC = (7, 0)  # vLLM's CUDA build runs from Volta on
FRESH_RUNTIME = "Runtime > Disconnect and delete runtime, then run this notebook again from the top"


def in_colab() -> bool:
    """True inside a Colab runtime (its module is loaded, or its release tag is set)."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def _run(cmd, **kwargs):
    # looked up at call time, so that a test (or the notebook test) can stand in for subprocess.run
    return subprocess.run(cmd, **kwargs)


# --- what the machine has, read without importing torch -------------------------------------------

@dataclass(frozen=True)
class GpuInfo:
    """The first GPU as nvidia-smi sees it."""

    name: str
    compute_capability: tuple[int, int]
    driver: str


def query_gpu(run=None) -> GpuInfo | None:
    """The GPU from ``nvidia-smi`` (None on a CPU runtime). Does not import torch."""
    run = run or _run
    cmd = ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]
    try:
        done = run(cmd, capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or not done.stdout.strip():
        return None
    name, cc, driver = (x.strip() for x in done.stdout.strip().splitlines()[0].split(","))
    major, minor = cc.split(".")
    return GpuInfo(name, (int(major), int(minor)), driver)


def installed_version(package: str) -> str | None:
    """The version pip has on disk (not what is imported)."""
    import importlib
    import importlib.metadata

    importlib.invalidate_caches()
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# Run in a fresh interpreter, so it sees the torch on disk even when the kernel imported an older one.
CHECK_SCRIPT = r"""
import ctypes, json, warnings
out = {}
try:
    lib = ctypes.CDLL("libcuda.so.1"); v = ctypes.c_int()
    if lib.cuDriverGetVersion(ctypes.byref(v)) == 0:
        out["driver_cuda"] = f"{v.value // 1000}.{v.value % 1000 // 10}"
except OSError:
    pass
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import torch
    out.update(torch=torch.__version__, torch_cuda=torch.version.cuda, available=torch.cuda.is_available())
out["torch_error"] = " ".join(str(w.message) for w in caught if "driver" in str(w.message).lower())[:400]
if out["available"]:
    out["device"] = torch.cuda.get_device_name(0)
if CHECK_VLLM:
    import importlib
    try:
        import vllm
        # the CUDA extension (0.25: _C_stable_libtorch; older: _C) fails to load from a CUDA 13 wheel
        for ext in ("vllm._C_stable_libtorch", "vllm._C"):
            try:
                importlib.import_module(ext)
                break
            except ModuleNotFoundError:
                continue
        else:
            raise ImportError("vLLM has no CUDA extension (vllm._C_stable_libtorch or vllm._C)")
        out["vllm"] = vllm.__version__
    except Exception as err:
        out["vllm_error"] = f"{type(err).__name__}: {err}"[:400]
print("COLAB_TTS_CHECK " + json.dumps(out))
"""


@dataclass
class TorchCheck:
    """Torch's CUDA build next to the driver's CUDA version, and whether vLLM's CUDA extension loads."""

    torch: str | None = None
    torch_cuda: str | None = None
    driver_cuda: str | None = None
    available: bool = False
    device: str | None = None
    torch_error: str = ""
    vllm: str | None = None
    vllm_error: str = ""

    def lines(self) -> list[str]:
        gpu = f"sees {self.device}" if self.available else "does NOT see the GPU"
        out = [f"torch {self.torch} (built for CUDA {self.torch_cuda}) on a driver for CUDA {self.driver_cuda}: {gpu}"]
        if self.torch_error:
            out.append(f"  torch says: {self.torch_error}")
        if self.vllm:
            out.append(f"vLLM {self.vllm}: its CUDA extension loads")
        elif self.vllm_error:
            out.append(f"vLLM does not load: {self.vllm_error}")
        return out


def check_torch_gpu(run=None, with_vllm: bool = True) -> TorchCheck:
    """Ask a fresh Python whether torch sees the GPU (and whether vLLM's CUDA extension loads)."""
    run = run or _run
    script = CHECK_SCRIPT.replace("CHECK_VLLM", "True" if with_vllm else "False")
    try:
        done = run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return TorchCheck(torch_error="the check timed out after 10 minutes")
    found = [x for x in (done.stdout or "").splitlines() if x.startswith("COLAB_TTS_CHECK ")]
    if not found:
        return TorchCheck(torch_error=f"the check failed: {(done.stderr or '').strip()[-400:]}")
    fields = json.loads(found[-1].removeprefix("COLAB_TTS_CHECK "))
    return TorchCheck(**{k: v for k, v in fields.items() if k in TorchCheck.__dataclass_fields__})


# --- the install and its outcome -------------------------------------------------------------------

def vllm_install_command() -> list[str]:
    """The pip command that installs vLLM's CUDA 12.9 build and keeps Colab's torch."""
    return [sys.executable, "-m", "pip", "install", "-q", VLLM_REQUIREMENT, "--extra-index-url", VLLM_INDEX]


def marker_path() -> Path:
    """Where the last setup's outcome is kept, so that it survives the runtime restart."""
    root = Path(os.environ.get("COLAB_TTS_CACHE") or Path.home() / ".cache" / "colab_tts")
    return root / "vllm_setup.json"


@dataclass
class Setup:
    """What :func:`setup_vllm` did: the backend to use, whether it restarts the runtime, and why."""

    backend: str
    lines: list[str] = field(default_factory=list)
    restart: bool = False
    check: TorchCheck | None = None

    def __str__(self) -> str:
        return "\n".join(self.lines)


def preferred_backend(default: str | None = None) -> str | None:
    """``$COLAB_TTS_BACKEND`` if set, else the backend the last :func:`setup_vllm` chose, else ``default``."""
    if os.environ.get(BACKEND_ENV):
        return os.environ[BACKEND_ENV]
    try:
        return json.loads(marker_path().read_text()).get("backend", default)
    except (OSError, ValueError):
        return default


def _finish(setup: Setup, show: bool, **record) -> Setup:
    os.environ[BACKEND_ENV] = setup.backend
    path = marker_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"backend": setup.backend, "vllm": VLLM_REQUIREMENT, **record}))
    if show:
        print(setup)
    return setup


def _transformers(setup: Setup, why: str, show: bool) -> Setup:
    setup.backend = "transformers"
    setup.lines.append(f"{why} This notebook runs Orpheus with transformers instead (${BACKEND_ENV}=transformers).")
    return _finish(setup, show)


def setup_vllm(*, show: bool = True, run=None, kill=None, restart_delay: float = 2.0) -> Setup:
    """Install vLLM's CUDA 12.9 build on a Colab GPU, check torch still sees the GPU, restart if needed.

    Safe to run twice: an installed vLLM at ``VLLM_VERSION`` is not installed again. Outcomes:
    - CPU runtime (or a GPU below CC 7.0): nothing is installed; backend "transformers".
    - torch replaced while the kernel had imported it: says so and restarts the runtime the way Colab
      notebooks do (the process kills itself; Colab reconnects); run the cell again afterwards.
    - torch lost the GPU, or vLLM's CUDA extension does not load: says what happened; backend
      "transformers" (and how to get a clean runtime back when torch lost the GPU).
    - otherwise backend "vllm", with :func:`vllm_engine_kwargs` below CC 8.0.
    ``run`` and ``kill`` stand in for subprocess.run and os.kill in tests; ``restart_delay`` lets the
    message reach the notebook before the process ends.
    """
    run, kill = run or _run, kill or os.kill
    setup = Setup("vllm")
    gpu = query_gpu(run)
    if gpu is None:
        return _transformers(setup, "No GPU in this runtime, so vLLM's CUDA build is not installed "
                             "(Runtime > Change runtime type > T4 GPU to use vLLM).", show)
    if gpu.compute_capability < MIN_VLLM_CC:
        return _transformers(setup, f"{gpu.name} has compute capability {gpu.compute_capability}; vLLM's CUDA "
                             f"build needs {MIN_VLLM_CC[0]}.{MIN_VLLM_CC[1]} or newer.", show)
    setup.lines.append(f"GPU: {gpu.name} (CC {gpu.compute_capability[0]}.{gpu.compute_capability[1]}, "
                       f"driver {gpu.driver})")
    torch_before, torch_imported = installed_version("torch"), "torch" in sys.modules
    have = installed_version("vllm")
    if have == f"{VLLM_VERSION}+{VLLM_CUDA}":
        setup.lines.append(f"vLLM {have} is already installed.")
    else:
        setup.lines.append(f"Installing {VLLM_REQUIREMENT} from {VLLM_INDEX} (keeps Colab's torch {torch_before}) ...")
        done = run(vllm_install_command(), capture_output=True, text=True)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or "").strip().splitlines()[-3:])
            return _transformers(setup, f"pip could not install {VLLM_REQUIREMENT}: {tail}.", show)
    torch_after = installed_version("torch")
    if torch_after != torch_before:
        setup.lines.append(f"The install replaced torch {torch_before} with {torch_after}.")
        if torch_imported:
            setup.restart = True
            setup.lines.append("torch was already imported in this runtime, so it must restart to load the new "
                               "one: restarting now. When it has reconnected, run this cell again.")
            _finish(setup, show, restarted_for=torch_after)
            sys.stdout.flush()
            time.sleep(restart_delay)
            kill(os.getpid(), 9)
            return setup
    check = setup.check = check_torch_gpu(run)
    setup.lines += check.lines()
    if not check.available:
        return _transformers(setup, f"torch cannot use the GPU after the install. To get Colab's own torch "
                             f"back: {FRESH_RUNTIME}, and skip vLLM (set ${BACKEND_ENV}=transformers).", show)
    if not check.vllm:
        return _transformers(setup, "vLLM is installed but does not load.", show)
    if gpu.compute_capability < (8, 0):
        setup.lines.append(f"CC {gpu.compute_capability[0]}.{gpu.compute_capability[1]} < 8.0: no bfloat16 and no "
                           f"FlashAttention; pass {vllm_engine_kwargs(gpu.compute_capability)} to vLLM "
                           "(plan_vllm's engine_kwargs() and vllm_engine_kwargs() do).")
    return _finish(setup, show)


def vllm_engine_kwargs(compute_capability) -> dict:
    """The engine arguments a GPU of this compute capability needs with the pinned vLLM (empty from CC 8.0)."""
    from .vllm_versions import below_sm80  # imported here: it needs `packaging`, which the install cell may lack

    return below_sm80(VLLM_VERSION, compute_capability)[0]
