"""One clear error everywhere: bad input to the public API ends in one ValueError/TypeError that
names the fix, raised from colab_tts itself (not from deep inside torch, numpy or vLLM)."""

import json
from pathlib import Path

import numpy as np
import pytest

import colab_tts.colab
import colab_tts.selftest
from colab_tts import (
    audio,
    decoding,
    flow,
    hardware,
    kv_cache,
    kv_fit,
    memory,
    models,
    orpheus,
    precision,
    quantization,
    snac_decode,
    t2s,
    t2s_runner,
    text,
)
from colab_tts.display import Table, save_figure
from colab_tts.lessons import diffusion_8gb, gpt_stage_deploy, indextts2_8gb


def _missing_field_config(tmp_path):
    cfg = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
           "max_position_embeddings": 256}  # no vocab_size
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


CASES = [
    # (call, exception, words the message must contain)
    ("unknown gpu", lambda tmp: hardware.get_gpu("Tesla T5"), ValueError, ["Unknown GPU", "T4"]),
    ("gpu of wrong type", lambda tmp: hardware.get_gpu(7.5), TypeError, ["catalog name"]),
    ("empty gpu name", lambda tmp: hardware.get_gpu(""), ValueError, ["Known"]),
    ("nonsense dtype", lambda tmp: hardware.resolve_dtype("float8", "T4"), ValueError, ["dtype", "float16"]),
    ("dtype of wrong type", lambda tmp: hardware.resolve_dtype(16, "T4"), TypeError, ["dtype"]),
    ("bf16 forced on a T4", lambda tmp: hardware.resolve_dtype("bf16", "T4", strict=True), ValueError,
     ["compute capability", "float16"]),
    ("unknown self-test check", lambda tmp: colab_tts.selftest.run(["snac"]), ValueError, ["self-test check", "snac_cuda"]),
    ("compute capability as text", lambda tmp: colab_tts.colab.vllm_engine_kwargs("7.5"), TypeError, ["(7, 5)"]),
    ("bfloat16 for vLLM below CC 8.0", lambda tmp: colab_tts.vllm_versions.below_sm80("0.25.1", (7, 5), "bfloat16"),
     ValueError, ["bfloat16", "float16"]),
    ("roofline of nothing", lambda tmp: hardware.decode_ceiling_tokens_per_s(0, "T4"), ValueError,
     ["weight_bytes"]),
    ("unknown model", lambda tmp: models.ModelSpec.known("orpheus-4b"), ValueError, ["Unknown model",
                                                                                     "orpheus-3b"]),
    ("config path that does not exist", lambda tmp: models.ModelSpec.from_config(tmp / "nope"), ValueError,
     ["config.json"]),
    ("config missing a field", lambda tmp: models.ModelSpec.from_config(_missing_field_config(tmp)),
     ValueError, ["vocab_size"]),
    ("config of wrong type", lambda tmp: models.ModelSpec.from_config(42), TypeError, ["config"]),
    ("other memory not a number", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4", other_gib=float("nan")),
     ValueError, ["other_gib", "finite"]),
    ("unknown weight platform", lambda tmp: quantization.weight_bytes(models.ModelSpec.known("orpheus-3b"),
                                                                     "float16", platform="tpu"),
     ValueError, ["platform", "cpu_w4a8", "vllm_cpu"]),
    ("layout of an unknown scheme", lambda tmp: quantization.layout("int3"), ValueError, ["quantization", "awq"]),
    ("gmu above 1", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4", gpu_memory_utilization=1.2),
     ValueError, ["gpu_memory_utilization"]),
    ("gmu of zero", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4", gpu_memory_utilization=0),
     ValueError, ["gpu_memory_utilization"]),
    ("negative max_model_len", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4", max_model_len=-5),
     ValueError, ["max_model_len"]),
    ("max_model_len as text", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4", max_model_len="4096"),
     TypeError, ["max_model_len"]),
    ("tp that does not divide kv heads", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4",
                                                                         tensor_parallel_size=3),
     ValueError, ["tensor_parallel_size"]),
    ("weights over budget", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "RTX-4060", dtype="float32"),
     ValueError, ["does not fit", "GiB"]),
    ("context that does not fit, strict", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4",
                                                                          max_model_len=131072, strict=True),
     ValueError, ["max_model_len"]),
    ("vLLM version below the modelled range, strict", lambda tmp: kv_cache.plan_vllm(
        "orpheus-3b", "T4", max_model_len=4096, vllm_version="0.4.0", strict=True), ValueError, ["modelled range"]),
    ("unknown vLLM engine", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "L4", max_model_len=4096, engine="v2"),
     ValueError, ["auto, v0, v1"]),
    ("vLLM engine as a number", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "L4", max_model_len=4096, engine=0),
     TypeError, ["engine", "string"]),
    ("V0 engine after vLLM removed it", lambda tmp: kv_cache.plan_vllm(
        "orpheus-3b", "L4", max_model_len=4096, vllm_version="0.11.0", engine="v0"), ValueError, ["0.11.0", "'auto'"]),
    ("V1 engine on a T4 before vLLM allowed it", lambda tmp: kv_cache.plan_vllm(
        "orpheus-3b", "T4", max_model_len=4096, vllm_version="0.9.2", engine="v1"), ValueError, ["8.0", "'v0'"]),
    ("bfloat16 on a T4, strict", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4", dtype="bf16", strict=True),
     ValueError, ["dtype='float16'"]),
    ("memory held by others beyond the card", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4", other_gib=15),
     ValueError, ["other_gib", "less than the card"]),
    ("a profile run beyond the card", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4", max_model_len=4096,
                                                                    max_num_batched_tokens=1_000_000),
     ValueError, ["profile run", "max_num_batched_tokens"]),
    ("fit of weights beyond the card", lambda tmp: kv_fit.fit_vllm(dict(
        model_type="llama", num_hidden_layers=80, hidden_size=8192, num_attention_heads=64, num_key_value_heads=8,
        intermediate_size=28672, vocab_size=128256, max_position_embeddings=8192), "T4", max_model_len=4096),
     ValueError, ["weights are", "14.74 GiB", "smaller model", "tensor_parallel_size="]),
    ("negative memory held by others", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4", other_gib=-1),
     ValueError, ["other_gib"]),
    ("negative audio length", lambda tmp: kv_cache.max_model_len_for_audio(-1), ValueError, ["seconds"]),
    ("model of wrong type", lambda tmp: kv_cache.kv_bytes_per_token(3.5), TypeError, ["model"]),
    ("split bytes", lambda tmp: text.split_text(b"hello"), TypeError, ["decode"]),
    ("split with zero budget", lambda tmp: text.split_text("hello", max_tokens=0), ValueError, ["max_tokens"]),
    ("join nothing at a bad rate", lambda tmp: text.join_audio([np.zeros(4)], sample_rate=0), ValueError,
     ["sample_rate"]),
    ("join text instead of audio", lambda tmp: text.join_audio(["abc"], 16000), TypeError, ["chunk"]),
    ("sampling with top_p above 1", lambda tmp: decoding.Sampling(top_p=1.5), ValueError, ["top_p"]),
    ("sampling with zero temperature", lambda tmp: decoding.Sampling(temperature=0), ValueError,
     ["temperature"]),
    ("sampling with fractional top_k", lambda tmp: decoding.Sampling(top_k=2.5), TypeError, ["top_k"]),
    ("checkpoint path that does not exist", lambda tmp: t2s.load_gpt_sovits_checkpoint(tmp / "s1.ckpt"),
     ValueError, ["does not exist"]),
    ("checkpoint that is not a dict", lambda tmp: t2s.load_gpt_sovits_checkpoint({"state_dict": {}}),
     ValueError, ["'config' and 'weight'"]),
    ("t2s model from a dict", lambda tmp: t2s.T2SModel({"n_layer": 2}), TypeError, ["T2SConfig"]),
    ("t2s heads that do not divide", lambda tmp: t2s.T2SConfig(hidden_dim=100, n_head=16), ValueError,
     ["multiple of n_head"]),
    ("int8 dynamic quantization on a GPU", lambda tmp: precision.choose_dtype("int8", "cuda"), ValueError,
     ["CPU only", "auto"]),
    ("precision on a device that does not exist", lambda tmp: precision.choose_dtype("auto", "gpu0"), ValueError,
     ["device", "cuda"]),
    ("decode no segments", lambda tmp: t2s_runner.T2SRunner(t2s.T2SModel(t2s.T2SConfig.small()), [], None),
     ValueError, ["at least one Segment"]),
    ("peak on an unknown device", lambda tmp: memory.track_peak("tpu").__enter__(), ValueError, ["device"]),
    ("offload something that is not a module", lambda tmp: memory.to_host("dit"), TypeError, ["Module"]),
    ("dit from a dict", lambda tmp: flow.DiT({"hidden": 512}), TypeError, ["DiTConfig"]),
    ("flow inputs of no length", lambda tmp: flow.make_inputs(flow.SMALL_DIT, 0), ValueError,
     ["target_frames"]),
    ("8 GB recipe for an unknown card", lambda tmp: diffusion_8gb.recommend_8gb("RTX 9090", None), ValueError,
     ["Unknown GPU"]),
    ("8 GB recipe: activations without their sweep", lambda tmp: diffusion_8gb.recommend_8gb("T4", None, {"dit": 1.0}),
     ValueError, ["claims_sweep"]),
    ("notebook 03 on no CPU threads", lambda tmp: diffusion_8gb.setup("T4", cpu_threads=0), ValueError, ["cpu_threads"]),
    ("roofline of an empty chunk", lambda tmp: diffusion_8gb.t4_step_roofline(0), ValueError, ["frames"]),
    ("IndexTTS-2 sweep with no text", lambda tmp: indextts2_8gb.sweep_plan(None, {}, workdir=tmp), ValueError,
     ["texts", "name"]),
    ("IndexTTS-2 sweep at 0 tokens a segment", lambda tmp: indextts2_8gb.sweep_plan(None, {"a": "Hi."}, (0,), tmp),
     ValueError, ["max_text_tokens_per_segment"]),
    ("IndexTTS-2 run summary named by a string", lambda tmp: indextts2_8gb.summary("fp32", {"calls": []}), TypeError,
     ["Setting", "SWEEP"]),
    ("measured 8 GB recipe from nothing", lambda tmp: indextts2_8gb.recipe_from_runs([], "T4"), ValueError,
     ["summary(setting, result)"]),
    ("measured recipe run from a predicted recipe",
     lambda tmp: indextts2_8gb.run_recipe(diffusion_8gb.Recipe("T4", 7.0, "float16", "float32", 25, 120, False, 6.0,
                                                               0.0, []), {"a": "Hi."}, 7.0, tmp), ValueError,
     ["recipe_from_runs"]),
    ("orpheus backend that does not exist", lambda tmp: orpheus.OrpheusTTS.offline_demo("onnx"), ValueError,
     ["backend", "vllm"]),
    ("orpheus with no audio", lambda tmp: orpheus.engine_kwargs_for("T4", max_audio_seconds=0), ValueError,
     ["max_audio_seconds"]),
    ("orpheus weights name that does not exist", lambda tmp: orpheus.OrpheusTTS.from_pretrained("unslot"),
     ValueError, ["unsloth", "owner/name"]),
    ("orpheus empty text", lambda tmp: orpheus.format_prompt("  ", "tara", None), ValueError, ["empty"]),
    ("orpheus text of wrong type", lambda tmp: orpheus.format_prompt(None, "tara", None), TypeError, ["string"]),
    ("audio tokens as text", lambda tmp: snac_decode.audio_tokens_to_codes("128266 128267"), TypeError,
     ["token ids"]),
    ("audio tokens as floats", lambda tmp: snac_decode.audio_tokens_to_codes([1.5, 2.5]), TypeError,
     ["integers"]),
    ("speech in stereo", lambda tmp: audio.Speech(np.zeros((2, 100)), 24000), ValueError, ["mono"]),
    ("speech at zero Hz", lambda tmp: audio.Speech(np.zeros(100), 0), ValueError, ["sample_rate"]),
    ("save speech without a suffix", lambda tmp: audio.Speech(np.zeros(100), 24000).save(tmp / "out"),
     ValueError, [".wav"]),
    ("concat of nothing", lambda tmp: audio.Speech.concat([]), TypeError, ["Speech"]),
    ("save figure without a name", lambda tmp: save_figure(None, ""), ValueError, ["name"]),
    ("notebook 04 DEPLOY neither auto, True nor False", lambda tmp: gpt_stage_deploy.should_deploy("yes", "cuda"),
     ValueError, ["DEPLOY", "'auto'", "True or False"]),
    ("unknown quantization", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4", quantization="int3"), ValueError,
     ["Unknown quantization", "awq"]),
    ("fp8 weights on a T4 in an old vLLM", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4", quantization="fp8",
                                                                          vllm_version="0.11.2"),
     ValueError, ["8.0", "quantization="]),
    ("fp8 KV cache on a T4", lambda tmp: kv_cache.plan_vllm("orpheus-3b", "T4", kv_cache_dtype="fp8"), ValueError,
     ["8.0", "kv_cache_dtype='auto'"]),
    ("fit with no request length", lambda tmp: kv_fit.fit_vllm("orpheus-3b", "T4"), ValueError, ["audio_seconds"]),
    ("fit with an unknown quality", lambda tmp: kv_fit.fit_vllm("orpheus-3b", "T4", audio_seconds=30,
                                                                quality="2bit"), ValueError, ["quality", "4bit"]),
    ("fit that nothing fits", lambda tmp: kv_fit.fit_vllm("orpheus-3b", "RTX-3070", audio_seconds=60, concurrency=4),
     ValueError, ["needs", "GiB", "try"]),
]


@pytest.mark.parametrize("call,exc,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_one_clear_error(call, exc, words, tmp_path):
    with pytest.raises(exc) as info:
        call(tmp_path)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    # raised by colab_tts itself: the innermost frame is ours, not torch/numpy/vLLM
    assert "colab_tts" in info.traceback[-1].path.as_posix(), info.traceback[-1].path


def test_table_of_nothing_is_empty_not_an_error():
    assert str(Table([])).strip() == ""


# --- synth: every argument checked before a model loads, each error naming the user's path -------------

def _read_only_folder(tmp_path):
    import os
    from pathlib import Path

    if os.geteuid() == 0:  # root writes through permission bits: a file system that refuses new files
        return Path("/proc")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


SYNTH_BAD = [
    ("output is a folder", lambda tmp: ["-o", str(tmp)], ["is a folder", "speech.wav"]),
    ("output in a read-only folder", lambda tmp: ["-o", str(_read_only_folder(tmp) / "speech.wav")],
     ["cannot be written"]),
    ("output with a .txt name", lambda tmp: ["-o", str(tmp / "speech.txt")], ["'.txt'", ".wav", ".flac"]),
    ("output without a suffix", lambda tmp: ["-o", str(tmp / "speech")], ["no suffix", ".wav"]),
    ("output with a 260-byte name", lambda tmp: ["-o", str(tmp / ("x" * 256 + ".wav"))], ["260 bytes", "255"]),
    ("output inside a file", lambda tmp: ["-o", str(tmp / "file.txt" / "speech.wav")], ["which is a file"]),
    ("output empty", lambda tmp: ["-o", ""], ["empty"]),
    ("output undecodable", lambda tmp: ["-o", str(tmp / "\udcff.wav")], ["not valid text"]),
    ("unknown voice", lambda tmp: ["-o", str(tmp / "a.wav"), "--voice", "nobody"], ["Unknown voice 'nobody'", "tara"]),
    ("seconds NaN", lambda tmp: ["-o", str(tmp / "a.wav"), "--seconds", "nan"], ["--seconds", "finite"]),
    ("seconds huge", lambda tmp: ["-o", str(tmp / "a.wav"), "--seconds", "1e308"], ["--seconds", "at most"]),
    ("seconds negative", lambda tmp: ["-o", str(tmp / "a.wav"), "--seconds", "-3"], ["--seconds", "> 0"]),
    ("seed huge", lambda tmp: ["-o", str(tmp / "a.wav"), "--seed", str(2**70)], ["--seed", "2**63-1"]),
    ("seed negative", lambda tmp: ["-o", str(tmp / "a.wav"), "--seed", "-1"], ["--seed"]),
    ("text undecodable", lambda tmp: ["-o", str(tmp / "a.wav"), "--", "\udcffhi"], ["UTF-8"]),
]


@pytest.mark.parametrize("args,words", [c[1:] for c in SYNTH_BAD], ids=[c[0] for c in SYNTH_BAD])
@pytest.mark.parametrize("offline", [True, False])
def test_synth_refuses_bad_arguments_before_loading_a_model(args, words, offline, tmp_path, capsys, monkeypatch):
    from colab_tts.cli import main

    def no_model(*a, **k):
        raise AssertionError("a model loaded before the arguments were checked")

    monkeypatch.setattr(orpheus.OrpheusTTS, "from_pretrained", classmethod(no_model))
    monkeypatch.setattr(orpheus.OrpheusTTS, "offline_demo", classmethod(no_model))
    (tmp_path / "file.txt").write_text("x")
    argv = args(tmp_path)
    text = [] if "--" in argv else ["Hello."]
    assert main(["synth", *(["--offline"] if offline else []), *text, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for word in words:
        assert word in err, (word, err)
    assert ".partial" not in err
    output = argv[argv.index("-o") + 1]
    if "-o/--output" in err and output and "\udcff" not in output and len(Path(output).name) < 200:
        assert output in err, "the error names the user's path"


def test_save_names_the_users_path_when_the_write_fails(tmp_path, monkeypatch):
    import soundfile

    def fail(file, *a, **k):
        raise RuntimeError(f"Error opening {str(file)!r}: System error.")

    monkeypatch.setattr(soundfile, "write", fail)
    target = tmp_path / "speech.wav"
    with pytest.raises(OSError, match=f"could not write {target}: Error opening '{target}'") as info:
        audio.Speech(np.zeros(100), 24000).save(target)
    assert ".partial" not in str(info.value) and list(tmp_path.iterdir()) == []


def test_a_name_near_the_file_system_limit_is_written(tmp_path):
    name = "y" * 251 + ".wav"  # 255 bytes: the temporary name beside it must fit too
    assert audio.Speech(np.zeros(100), 24000).save(tmp_path / name).name == name
    assert [p.name for p in tmp_path.iterdir()] == [name]


@pytest.mark.parametrize("typed, fix", [("08.2", "'0.8.2'"), ("0.8.02", "'0.8.2'"), ("v0.011.0", "'0.11.0'")])
def test_a_vllm_version_with_a_leading_zero_is_refused_not_read_as_another_release(typed, fix):
    # PEP 440 normalizes "08.2" to 8.2: the planner took it for a V1 release instead of 0.8.2's V0 engine
    with pytest.raises(ValueError, match=fix):
        colab_tts.vllm_versions.parse(typed)
    assert str(colab_tts.vllm_versions.parse("0.10.1rc2.dev5+g1234")) == "0.10.1rc2.dev5+g1234"
