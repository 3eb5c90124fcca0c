"""An offline stand-in for canopylabs/orpheus-3b-0.1-ft: same vocabulary and special ids, tiny, random.

No hub here, so :func:`save_demo_model` writes a model folder that vLLM and transformers load like
the real one: a 2-layer Llama with Orpheus's vocabulary (156,940 ids) and a tokenizer built locally
(byte-level, with Llama-3's and Orpheus's special tokens at their real ids). Its weights are random,
except for one planted rule so that generation yields well-formed audio frames: each audio slot's
embedding points along its own direction and the LM head scores the *next* slot's tokens along it
(and the end-of-speech token after a full frame, a little). Everything downstream - sampling,
stop ids, code mapping, SNAC - runs unchanged; the codes are random, so the audio is noise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .cited import value
from .models import ModelSpec
from .snac_decode import AUDIO_TOKEN_OFFSET, CODES_PER_SLOT, TOKENS_PER_FRAME

_REAL = ModelSpec.known("orpheus-3b").config  # the real model's config (colab_tts/data/models.json, with its source)
VOCAB_SIZE = _REAL["vocab_size"]  # 156,940
BOS = _REAL["bos_token_id"]  # <|begin_of_text|>; Llama-3's 256 reserved special ids start here
LLAMA3_SPECIAL = BOS
EOT = value("orpheus.end_of_text")
CUSTOM_TOKEN_BASE = AUDIO_TOKEN_OFFSET - 10  # <custom_token_N> = 128256 + N; audio starts at <custom_token_10>
DEMO_CONFIG = dict(
    model_type="llama", architectures=["LlamaForCausalLM"], num_hidden_layers=2, hidden_size=64,
    num_attention_heads=2, num_key_value_heads=1, head_dim=32, intermediate_size=128, vocab_size=VOCAB_SIZE,
    max_position_embeddings=4096, tie_word_embeddings=False, torch_dtype="float32", rms_norm_eps=1e-5,
    bos_token_id=BOS, eos_token_id=value("orpheus.end_of_speech"), pad_token_id=value("orpheus.pad"),
    rope_theta=500000.0,
)
# Planted rule strengths (see the module docstring): logit of the next slot ~ SLOT_GAIN * sqrt(hidden),
# end of speech chosen after roughly one frame in END_EVERY_FRAMES at temperature 0.6.
_SLOT_GAIN = 3.0
_END_EVERY_FRAMES = 12


def _token_names() -> list[str]:
    from tokenizers.pre_tokenizers import ByteLevel

    names = sorted(ByteLevel.alphabet())  # the 256 byte symbols of a byte-level tokenizer
    names += [f"<|filler_{i}|>" for i in range(len(names), LLAMA3_SPECIAL)]
    special = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", EOT - BOS: "<|eot_id|>"}
    names += [special.get(i, f"<|reserved_special_token_{i}|>") for i in range(CUSTOM_TOKEN_BASE - LLAMA3_SPECIAL)]
    names += [f"<custom_token_{i}>" for i in range(VOCAB_SIZE - CUSTOM_TOKEN_BASE)]
    return names


def save_tokenizer(path) -> Path:
    """A byte-level tokenizer with Orpheus's 156,940 ids; adds <|begin_of_text|> like Llama-3's."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    names = _token_names()
    vocab = {name: i for i, name in enumerate(names)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(n, special=True) for n in names[LLAMA3_SPECIAL:]])
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", BOS)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<custom_token_7>")
    fast.save_pretrained(path)
    return Path(path)


def _plant_audio_rule(model) -> None:
    import math

    import torch

    emb = model.model.embed_tokens.weight
    head = model.lm_head.weight
    hidden = emb.shape[1]
    with torch.no_grad():
        for slot in range(TOKENS_PER_FRAME):
            lo = AUDIO_TOKEN_OFFSET + slot * CODES_PER_SLOT
            emb[lo: lo + CODES_PER_SLOT].mul_(0.05)[:, slot] += 10.0
            head[lo: lo + CODES_PER_SLOT, (slot - 1) % TOKENS_PER_FRAME] += _SLOT_GAIN
        start_of_speech, end_of_speech = value("orpheus.start_of_speech"), value("orpheus.end_of_speech")
        emb[start_of_speech].mul_(0.05)[TOKENS_PER_FRAME - 1] += 10.0  # like a frame's last token
        # a logit above each slot-0 token's that gives P(end) ~ 1/END_EVERY_FRAMES against all 4096 of
        # them together, at temperature 0.6 (the normalized hidden state is ~sqrt(hidden) on its slot)
        gap = 0.6 * math.log(CODES_PER_SLOT / _END_EVERY_FRAMES)
        head[end_of_speech].zero_()[TOKENS_PER_FRAME - 1] = _SLOT_GAIN + gap / math.sqrt(hidden)


def save_demo_model(path=None, seed: int = 0) -> Path:
    """Write (once) the offline demo model and tokenizer to ``path`` and return it.

    Default path: $COLAB_TTS_CACHE or ~/.cache/colab_tts, under orpheus-demo-<seed>.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    if path is None:
        root = Path(os.environ.get("COLAB_TTS_CACHE") or Path.home() / ".cache" / "colab_tts")
        path = root / f"orpheus-demo-{seed}"
    path = Path(path)
    stamp = path / "colab_tts_demo.json"
    if stamp.exists() and json.loads(stamp.read_text()) == {"config": DEMO_CONFIG, "seed": seed}:
        return path
    path.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in DEMO_CONFIG.items() if k != "model_type"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(LlamaConfig(**cfg))
    _plant_audio_rule(model)
    model.save_pretrained(path)
    save_tokenizer(path)
    stamp.write_text(json.dumps({"config": DEMO_CONFIG, "seed": seed}))
    return path
