"""Real vLLM (vllm-cpu 0.32.0) with the quantization settings the planner hands out.

What vllm-cpu does with each, started in one subprocess on tiny random-weight models. Where vLLM's
choice depends on the CPU, ``colab_tts.vllm_cpu`` says which branch this CPU takes (the other branch of
each switch is covered on any CPU by tests/test_vllm_cpu.py), and each test reports the path it ran:
- an fp8 KV cache: accepted only on x86 with AVX-512 or AMX; there its block count must be the planner's
  fp8 page arithmetic, elsewhere vLLM must refuse;
- AWQ weights (a random AWQ-format checkpoint): the engine loads them, and the bytes it holds must be
  exactly what colab_tts.quantization says an AWQ model weighs on this CPU's branch (W4A16 keeps the
  checkpoint's bytes, W4A8 on AMX more); the GEMM then runs, or fails naming that branch's kernel;
- online fp8 weights: no kernel in this build; the engine must refuse rather than run;
- a ``fit_vllm`` plan: its engine_kwargs start an engine that generates, with the KV blocks of the
  planner's arithmetic.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from colab_tts import quantization as quant
from colab_tts import vllm_cpu
from colab_tts.hardware import GIB
from colab_tts.kv_cache import kv_blocks
from colab_tts.models import ModelSpec

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

KV_SPACE_GIB = 1
CONFIG = dict(model_type="llama", vocab_size=512, intermediate_size=256, max_position_embeddings=1024,
              bos_token_id=1, eos_token_id=2, num_hidden_layers=3, hidden_size=128, num_attention_heads=4,
              num_key_value_heads=2)
INT4_KERNEL = {vllm_cpu.W4A16: "cpu_gemm_wna16", vllm_cpu.W4A8: "int4_scaled_mm_cpu"}

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    from safetensors.torch import save_file
    from colab_tts import kv_probe, vllm_cpu
    from colab_tts.kv_cache import plan_vllm
    from colab_tts.kv_fit import fit_vllm
    from colab_tts.models import ModelSpec

    def save_random_awq(path, cfg, group=128):
        # AWQ (GEMM) layout as vLLM allocates it: qweight [in, out/8] int32, qzeros [in/g, out/8], scales [in/g, out]
        os.makedirs(path, exist_ok=True)
        g = torch.Generator().manual_seed(0)
        h, i, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
        kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
        t = {"model.embed_tokens.weight": torch.randn(cfg["vocab_size"], h, generator=g).half() * 0.02,
             "model.norm.weight": torch.ones(h).half(),
             "lm_head.weight": torch.randn(cfg["vocab_size"], h, generator=g).half() * 0.02}
        shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (h, kv), "self_attn.v_proj": (h, kv),
                  "self_attn.o_proj": (h, h), "mlp.gate_proj": (h, i), "mlp.up_proj": (h, i), "mlp.down_proj": (i, h)}
        for layer in range(n):
            p = f"model.layers.{layer}."
            t[p + "input_layernorm.weight"] = torch.ones(h).half()
            t[p + "post_attention_layernorm.weight"] = torch.ones(h).half()
            for name, (a, b) in shapes.items():
                t[p + name + ".qweight"] = torch.randint(-2**31, 2**31 - 1, (a, b // 8), dtype=torch.int32, generator=g)
                t[p + name + ".qzeros"] = torch.randint(-2**31, 2**31 - 1, (a // group, b // 8), dtype=torch.int32,
                                                        generator=g)
                t[p + name + ".scales"] = (torch.rand(a // group, b, generator=g) * 0.01).half()
        save_file(t, f"{path}/model.safetensors")
        c = dict(cfg, architectures=["LlamaForCausalLM"], torch_dtype="float16",
                 quantization_config={"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True,
                                      "version": "gemm"})
        json.dump(c, open(f"{path}/config.json", "w"))
        return path

    def attempt(path, kv_space, **kwargs):
        try:
            llm, kv = kv_probe.start_engine(path, kv_space, skip_tokenizer_init=True, **kwargs)
        except Exception as err:  # what vLLM says when it cannot
            return dict(error=f"{type(err).__name__}: {err}"[:1000], path="refused at start; " + vllm_cpu.describe())
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        model = llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner.model
        got = dict(blocks=kv.num_blocks, block_size=kv.block_size, line=kv.log_line, path=kv.path,
                   param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()))
        try:
            out = llm.generate([TokensPrompt(prompt_token_ids=[1, 5, 9])],
                               SamplingParams(max_tokens=4, ignore_eos=True, detokenize=False))
            got["generated"] = list(out[0].outputs[0].token_ids)
        except Exception as err:
            got["generate_error"] = f"{type(err).__name__}: {err}"[:1000]
        kv_probe.stop_engine(llm)
        return got

    def main():
        cfg, kv_space, root = json.loads(sys.argv[1])
        spec = ModelSpec.from_config(cfg)
        plain = kv_probe.save_random_model(f"{root}/plain", cfg)
        res = {}
        fp8_kv = plan_vllm(spec, "L4", kv_cache_dtype="fp8", max_model_len=256, max_num_seqs=4, enforce_eager=True)
        res["fp8_kv"] = dict(attempt(plain, kv_space, **fp8_kv.engine_kwargs()), kwargs=fp8_kv.engine_kwargs())
        res["fp8_weights"] = attempt(plain, kv_space, quantization="fp8", dtype="bfloat16", max_model_len=256,
                                     max_num_seqs=4, enforce_eager=True)
        res["awq"] = attempt(save_random_awq(f"{root}/awq", cfg), kv_space, quantization="awq", dtype="bfloat16",
                             max_model_len=256, max_num_seqs=4, enforce_eager=True)
        fitted = fit_vllm(spec, "RTX-3070", max_model_len=300)
        res["fit"] = dict(attempt(plain, kv_space, **fitted.engine_kwargs()), kwargs=fitted.engine_kwargs(),
                          dtype=fitted.dtype)
        print("RESULT " + json.dumps(res))

    if __name__ == "__main__":
        main()
""")


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm_quant")
    script = root / "run_engines.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), json.dumps([CONFIG, KV_SPACE_GIB, str(root)])],
                          capture_output=True, text=True, timeout=540)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_fp8_kv_cache_is_the_planners_arithmetic_where_vllm_accepts_it(engines, report_vllm_path):
    got = engines["fp8_kv"]
    report_vllm_path(got["path"])
    assert got["kwargs"]["kv_cache_dtype"] == "fp8"
    if vllm_cpu.fp8_kv_cache_supported():
        spec = ModelSpec.from_config(CONFIG)
        assert got["blocks"] == kv_blocks(KV_SPACE_GIB * GIB, spec, "fp8", block_size=got["block_size"])
        assert len(got["generated"]) == 4
    else:
        assert "FP8 KV cache on CPU requires x86 with AVX-512 or AMX" in got["error"]


def test_awq_weights_in_the_engine_are_the_planners_bytes_for_this_cpus_branch(engines, report_vllm_path):
    got = engines["awq"]
    report_vllm_path(got["path"])
    spec = ModelSpec.from_config(CONFIG)
    branch = vllm_cpu.int4_weight_path(torch.bfloat16)
    assert ("W4A8" in got["path"]) == (branch == vllm_cpu.W4A8) and "CPUWNA16LinearKernel" in got["path"]
    assert got["param_bytes"] == quant.weight_bytes(spec, "bfloat16", "awq", platform=branch)
    assert got["param_bytes"] < 0.5 * quant.weight_bytes(spec, "bfloat16")
    assert got["blocks"] == kv_blocks(KV_SPACE_GIB * GIB, spec, "bfloat16", block_size=got["block_size"])
    # a build with this branch's GEMM generates; one without it fails naming that kernel
    assert len(got.get("generated", [])) == 4 or INT4_KERNEL[branch] in got["generate_error"]


def test_this_cpu_build_refuses_online_fp8_weights(engines, report_vllm_path):
    got = engines["fp8_weights"]
    report_vllm_path(got["path"])  # on a GPU the same argument runs Marlin FP8 or CUTLASS FP8
    assert len(got.get("generated", [])) == 4 or "static_scaled_fp8_quant" in got.get("error", "")


def test_fit_vllm_engine_kwargs_start_a_real_engine(engines, report_vllm_path):
    got = engines["fit"]
    report_vllm_path(got["path"])
    spec = ModelSpec.from_config(CONFIG)
    assert len(got["generated"]) == 4
    assert got["blocks"] == kv_blocks(KV_SPACE_GIB * GIB, spec, got["dtype"], block_size=got["block_size"])
    assert got["kwargs"]["max_model_len"] == 300 and "quantization" not in got["kwargs"]
