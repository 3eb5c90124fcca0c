"""ModelSpec: shapes from Hugging Face configs, exact parameter counts, bundled configs."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from colab_tts.models import ModelSpec, known_models

SMALL = dict(num_hidden_layers=3, hidden_size=96, num_attention_heads=6, intermediate_size=160, vocab_size=301,
             max_position_embeddings=256)


def meta_param_count(config_dict: dict) -> int:
    """Parameters of the transformers model built from this config on the meta device (tied counted once)."""
    cfg = AutoConfig.for_model(**config_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("config", [
    dict(model_type="llama", num_key_value_heads=2, **SMALL),
    dict(model_type="llama", num_key_value_heads=2, head_dim=24, attention_bias=True, mlp_bias=True, **SMALL),
    dict(model_type="llama", tie_word_embeddings=True, **SMALL),
    dict(model_type="qwen2", num_key_value_heads=3, **SMALL),
    dict(model_type="qwen3", num_key_value_heads=3, head_dim=32, **SMALL),
    dict(model_type="mistral", num_key_value_heads=2, head_dim=32, **SMALL),
    dict(model_type="phi3", num_key_value_heads=6, pad_token_id=0, eos_token_id=1, bos_token_id=1, **SMALL),
    dict(model_type="gpt2", n_layer=3, n_embd=96, n_head=6, vocab_size=301, n_positions=128),
    dict(model_type="gpt2", n_layer=2, n_embd=64, n_head=4, n_inner=100, vocab_size=50, n_positions=32,
         tie_word_embeddings=False),
], ids=["llama-gqa", "llama-bias-headdim", "llama-tied", "qwen2", "qwen3", "mistral-headdim", "phi3", "gpt2", "gpt2-untied"])
def test_num_params_matches_transformers(config):
    spec = ModelSpec.from_config(config)
    assert spec.num_params == meta_param_count(config)


@pytest.mark.parametrize("name", ["orpheus-3b", "llama-3.2-3b", "indextts2-gpt"])
def test_bundled_configs_match_transformers(name):
    entry = known_models()[name]
    assert ModelSpec.known(name).num_params == meta_param_count(entry["config"])


def test_metavoice_counts_the_two_modules_a_llama_lacks():
    # metavoiceio/metavoice-src fam/llm/fast_model.py @de3fa21 Transformer: the Llama layers transformers builds
    # from this config, plus pos_embeddings (block_size x dim) and speaker_cond_pos (Linear(256 -> dim), no bias).
    # Upstream's Transformer built on the meta device holds 1,248,438,272 (tests/test_deploy_upstream.py counts
    # it at a reduced shape where upstream's environment is installed); the lesson counts Linear by Linear.
    from colab_tts.lessons import metavoice

    config = known_models()["metavoice-1b"]["config"]
    spec = ModelSpec.known("metavoice-1b")
    llama = meta_param_count({k: v for k, v in config.items() if k not in ("position_embeddings", "speaker_emb_dim")})
    assert spec.num_params - llama == spec.max_position_embeddings * spec.hidden_size + 256 * spec.hidden_size
    assert spec.num_params == metavoice.first_stage_params()["total"] == 1_248_438_272
    assert not spec.rotary  # learned positions: no cos/sin cache


def test_weights_are_what_vllm_holds_not_the_bare_parameter_count():
    # Orpheus's 156,940-row vocabulary is padded to 156,992 rows (tied: one matrix), and vLLM keeps the rotary
    # cos/sin cache (131,072 positions x head_dim) in the model's dtype; vLLM's own log says 6.18 GB
    # (tests/test_kv_cache.py), the bare count 6.15. tests/test_vllm_quant_real.py checks it on a real engine.
    spec = ModelSpec.known("orpheus-3b")
    assert spec.padded_vocab_size == 156_992
    bare = spec.num_params * 2
    assert spec.weight_bytes("float16") - bare == 52 * 3072 * 2 + 131_072 * 128 * 2
    assert round(bare / 2**30, 2) == 6.15 and round(spec.weight_gib("float16"), 2) == 6.18
    assert spec.weight_bytes("float32") - 2 * spec.weight_bytes("float16") == 0
    two = spec.weight_bytes("float16", tensor_parallel_size=2)
    assert two == bare / 2 + 52 * 3072 + 131_072 * 128 * 2  # parameters split, the cache on every GPU


def test_orpheus_shape_and_weights():
    spec = ModelSpec.known("orpheus-3b")
    assert (spec.num_layers, spec.hidden_size, spec.num_attention_heads, spec.num_kv_heads, spec.head_dim) == (
        28, 3072, 24, 8, 128)
    assert spec.vocab_size == 156940 and spec.max_position_embeddings == 131072 and spec.tie_word_embeddings
    assert spec.num_params == pytest.approx(3.30e9, rel=0.01)  # Orpheus: a Llama-3.2-3B shape with a 156,940 vocabulary
    assert "canopylabs/orpheus-3b-0.1-ft" in spec.source


def test_every_known_model_has_a_source_and_loads():
    table = known_models()
    assert {"orpheus-3b", "llama-3.2-3b", "gpt-sovits-v2-t2s", "indextts2-gpt", "metavoice-1b"} <= set(table)
    for name, entry in table.items():
        assert entry["source"], name
        spec = ModelSpec.known(name)
        assert spec.num_params > 0 and spec.num_layers > 0


def test_gpt_sovits_counts_its_real_modules():
    spec = ModelSpec.known("gpt-sovits-v2-t2s")
    assert spec.num_params == pytest.approx(77e6, rel=0.02)  # GPT-SoVITS v2 T2S: about 77 M parameters
    assert spec.head_dim == 32 and spec.num_kv_heads == 16


def test_head_dim_and_kv_heads_defaults():
    spec = ModelSpec.from_config(dict(model_type="llama", **SMALL))
    assert spec.head_dim == 16 and spec.num_kv_heads == 6
    spec = ModelSpec.from_config(dict(model_type="llama", head_dim=40, num_key_value_heads=3, **SMALL))
    assert spec.head_dim == 40 and spec.num_kv_heads == 3


def test_from_config_path(tmp_path):
    cfg = dict(model_type="llama", num_key_value_heads=2, **SMALL)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert ModelSpec.from_config(tmp_path) == ModelSpec.from_config(tmp_path / "config.json")
    assert ModelSpec.from_config(tmp_path).num_params == ModelSpec.from_config(cfg).num_params


def test_from_transformers_config_object():
    cfg = AutoConfig.for_model(model_type="llama", num_key_value_heads=2, **SMALL)
    assert ModelSpec.from_config(cfg).num_kv_heads == 2


@pytest.mark.parametrize("missing", ["num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size",
                                     "intermediate_size", "max_position_embeddings"])
def test_missing_field_names_it(missing):
    cfg = dict(model_type="llama", **SMALL)
    del cfg[missing]
    with pytest.raises(ValueError, match=missing):
        ModelSpec.from_config(cfg)


def test_bad_inputs():
    with pytest.raises(ValueError, match="No config.json"):
        ModelSpec.from_config("/nonexistent/model")
    with pytest.raises(TypeError, match="config must be"):
        ModelSpec.from_config(42)
    with pytest.raises(ValueError, match="Did you mean 'orpheus-3b'"):
        ModelSpec.known("orpheus3b")
    with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
        ModelSpec.from_config(dict(model_type="llama", num_key_value_heads=4, **SMALL))
    with pytest.raises(ValueError, match="Unknown dtype"):
        ModelSpec.known("orpheus-3b").weight_bytes("fp12")


def test_every_bundled_source_is_public():
    # a URL, or "owner/repo path @commit" (what colab_tts.cited accepts), never an internal document
    import re

    for name, entry in known_models().items():
        source = entry["source"]
        assert re.match(r"^(https://\S+|[\w.-]+/[\w.-]+ \S+ @[0-9a-f]{7,40})( |$)", source), (name, source)
        assert "facts" not in source and "shared/" not in source, name


def test_metavoice_is_one_size_wherever_it_shows():
    # notebook 00's weights table, notebook 02's fit table and the model spec show one number
    from colab_tts import hardware, systems

    gib = ModelSpec.known("metavoice-1b").weight_gib("float16")
    weights = {r["model"]: r["float16 GiB"] for r in hardware.weights_fit_rows("float16", gpus=["T4"])}
    fit = {r["system"]: r["weights GiB"] for r in systems.fit_table(30, gpus=["T4"])}
    assert weights["MetaVoice-1B (GPT)"] == gib == fit["MetaVoice-1B (first-stage GPT)"]
    assert round(gib, 2) == 2.33  # 1,248,438,272 parameters, the 2,562-row vocabulary padded to 2,624, float16
    snac = weights["SNAC 24 kHz codec"]
    assert snac == pytest.approx(systems.snac_gib("float16")) and snac == pytest.approx(19.8e6 * 2 / 1024**3)


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe{}", b"[1, 2]", b'{"num_hidden_layers": "x"}',
                                     b'{"num_hidden_layers": 2.5}', b'{"num_hidden_layers": -1}'])
def test_a_malformed_config_json_is_one_error_naming_the_file(tmp_path, content):
    path = tmp_path / "my model" / "config.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(ValueError, match="config"):
        ModelSpec.from_config(path.parent)
