"""colab_tts.colab: the vLLM install on Colab, simulated (no real installs): a T4 runtime, a CPU runtime,
torch losing the GPU, torch replaced after import, a failed pip, a vLLM that does not load."""

import json
import subprocess
import sys

import pytest

from colab_tts import colab

T4_SMI = "Tesla T4, 7.5, 570.124.06\n"
GOOD = {"torch": "2.11.0+cu128", "torch_cuda": "12.8", "driver_cuda": "12.8", "available": True,
        "device": "Tesla T4", "torch_error": "", "vllm": "0.25.1+cu129"}
LOST = GOOD | {"torch": "2.13.0+cu130", "torch_cuda": "13.0", "available": False, "device": None, "vllm": None,
               "torch_error": "The NVIDIA driver on your system is too old (found version 12080)."}


class FakeColab:
    """Stands in for subprocess.run and os.kill, and for the package versions pip has on disk."""

    def __init__(self, smi=T4_SMI, check=GOOD, pip_rc=0, torch_after=None, vllm=None):
        self.smi, self.check, self.pip_rc, self.torch_after = smi, check, pip_rc, torch_after
        self.versions = {"torch": "2.11.0+cu128", "vllm": vllm}
        self.calls, self.killed = [], []

    def run(self, cmd, **kwargs):
        self.calls.append(list(cmd))
        if cmd[0] == "nvidia-smi":
            if self.smi is None:
                raise FileNotFoundError("nvidia-smi")
            return subprocess.CompletedProcess(cmd, 0, self.smi, "")
        if cmd[1:4] == ["-m", "pip", "install"]:
            if self.pip_rc == 0:
                self.versions["vllm"] = f"{colab.VLLM_VERSION}+{colab.VLLM_CUDA}"
                self.versions["torch"] = self.torch_after or self.versions["torch"]
            return subprocess.CompletedProcess(cmd, self.pip_rc, "", "ERROR: No matching distribution found")
        if cmd[1] == "-c":
            return subprocess.CompletedProcess(cmd, 0, "noise\nCOLAB_TTS_CHECK " + json.dumps(self.check), "")
        raise AssertionError(f"unexpected command {cmd}")

    def kill(self, pid, sig):
        self.killed.append(sig)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("COLAB_TTS_CACHE", str(tmp_path))
    monkeypatch.delenv(colab.BACKEND_ENV, raising=False)

    def make(**kw):
        f = FakeColab(**kw)
        monkeypatch.setattr(colab, "installed_version", lambda name: f.versions.get(name))
        return f
    return make


def setup(f, **kw):
    return colab.setup_vllm(show=False, run=f.run, kill=f.kill, restart_delay=0, **kw)


def commands(f):
    """nvidia-smi, pip or check, in the order they ran."""
    return ["nvidia-smi" if c[0] == "nvidia-smi" else "pip" if c[1:3] == ["-m", "pip"] else "check" for c in f.calls]


def test_t4_installs_the_cu129_wheel_keeps_torch_and_uses_vllm_with_turing_settings(fake):
    f = fake()
    done = setup(f)
    assert commands(f) == ["nvidia-smi", "pip", "check"]
    install = f.calls[1]
    assert install[install.index("install") + 1:] == ["-q", "vllm==0.25.1+cu129", "--extra-index-url",
                                                      "https://wheels.vllm.ai/0.25.1/cu129"]
    assert done.backend == "vllm" and not done.restart and not f.killed
    text = str(done)
    assert "torch 2.11.0+cu128 (built for CUDA 12.8) on a driver for CUDA 12.8: sees Tesla T4" in text
    assert "'attention_backend': 'TRITON_ATTN'" in text and "'dtype': 'float16'" in text
    assert colab.preferred_backend() == "vllm"


def test_running_the_cell_twice_does_not_install_again(fake):
    f = fake(vllm=f"{colab.VLLM_VERSION}+{colab.VLLM_CUDA}")
    done = setup(f)
    assert not any("pip" in c for c in f.calls) and "already installed" in str(done) and done.backend == "vllm"


def test_cpu_runtime_installs_nothing_and_says_transformers(fake):
    f = fake(smi=None)
    done = setup(f)
    assert commands(f) == ["nvidia-smi"] and done.backend == "transformers"
    assert "No GPU" in str(done) and "transformers" in str(done)


def test_torch_lost_the_gpu_falls_back_and_says_how_to_recover(fake):
    f = fake(check=LOST)
    done = setup(f)
    assert done.backend == "transformers" and not f.killed
    text = str(done)
    assert "built for CUDA 13.0) on a driver for CUDA 12.8: does NOT see the GPU" in text
    assert "found version 12080" in text and "Disconnect and delete runtime" in text
    assert colab.preferred_backend() == "transformers"


def test_torch_replaced_after_import_restarts_the_runtime(fake, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", sys.modules.get("torch") or object())
    f = fake(torch_after="2.13.0")
    done = setup(f)
    assert f.killed == [9] and done.restart
    assert "replaced torch 2.11.0+cu128 with 2.13.0" in str(done) and "run this cell again" in str(done)
    assert not any(c[1] == "-c" for c in f.calls[1:]), "no check in a kernel that is about to die"


def test_torch_replaced_before_any_import_needs_no_restart(fake, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    f = fake(torch_after="2.11.0+cu129")
    done = setup(f)
    assert not f.killed and "replaced torch" in str(done) and done.backend == "vllm"


def test_failed_pip_falls_back_with_pips_message(fake):
    f = fake(pip_rc=1)
    done = setup(f)
    assert done.backend == "transformers" and "No matching distribution" in str(done)


def test_vllm_that_does_not_load_falls_back(fake):
    f = fake(check=GOOD | {"vllm": None, "vllm_error": "ImportError: libcudart.so.13: cannot open shared object"})
    done = setup(f)
    assert done.backend == "transformers" and "libcudart.so.13" in str(done)


def test_the_environment_variable_wins_over_the_last_setup(fake, monkeypatch):
    setup(fake())
    monkeypatch.setenv(colab.BACKEND_ENV, "transformers")
    assert colab.preferred_backend() == "transformers"


def test_preferred_backend_without_any_setup_is_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("COLAB_TTS_CACHE", str(tmp_path))
    monkeypatch.delenv(colab.BACKEND_ENV, raising=False)
    assert colab.preferred_backend("vllm") == "vllm"


def test_query_gpu_parses_nvidia_smi():
    f = FakeColab(smi="NVIDIA A100-SXM4-40GB, 8.0, 570.124.06\nNVIDIA A100-SXM4-40GB, 8.0, 570.124.06\n")
    assert colab.query_gpu(f.run) == colab.GpuInfo("NVIDIA A100-SXM4-40GB", (8, 0), "570.124.06")
    assert colab.query_gpu(FakeColab(smi=None).run) is None


def test_check_script_runs_here_and_reports_torch_without_a_gpu():
    check = colab.check_torch_gpu(with_vllm=False)
    import torch

    assert check.torch == torch.__version__ and check.available is torch.cuda.is_available()
    assert "does NOT see the GPU" in check.lines()[0] or torch.cuda.is_available()


def test_engine_kwargs_by_compute_capability():
    # the planner's rule at the pinned version: the same arguments a T4 plan carries
    from colab_tts.kv_cache import plan_vllm

    assert colab.vllm_engine_kwargs((7, 5)) == {"dtype": "float16", "attention_backend": "TRITON_ATTN"}
    t4 = plan_vllm("orpheus-3b", "T4", max_model_len=2048).engine_kwargs()
    assert {k: t4[k] for k in ("dtype", "attention_backend")} == colab.vllm_engine_kwargs((7, 5))
    assert colab.vllm_engine_kwargs((8, 0)) == {}
    with pytest.raises(TypeError):
        colab.vllm_engine_kwargs("7.5")


def test_check_script_finds_vllms_extension_by_its_current_name(tmp_path, monkeypatch):
    """vLLM 0.25's CUDA extension is vllm._C_stable_libtorch (its wheel has no vllm._C): a fake package with
    only that module must pass the check, one whose extension fails to load must not."""
    for name, ext_body in [("good", ""), ("bad", "raise ImportError('libcudart.so.13: cannot open shared object')")]:
        root = tmp_path / name / "vllm"
        root.mkdir(parents=True)
        (root / "__init__.py").write_text("__version__ = '0.25.1+cu129'\n")
        (root / "_C_stable_libtorch.py").write_text(ext_body + "\n")
        script = colab.CHECK_SCRIPT.replace("CHECK_VLLM", "True")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env={"PYTHONPATH": str(tmp_path / name), "PATH": "/usr/bin:/bin"}, timeout=300)
        fields = json.loads(done.stdout.split("COLAB_TTS_CHECK ")[1])
        if name == "good":
            assert fields["vllm"] == "0.25.1+cu129" and not fields.get("vllm_error")
        else:
            assert "libcudart.so.13" in fields["vllm_error"] and "vllm" not in fields
