"""The shape of a decoder model: what its weights and its KV cache cost.

``ModelSpec.from_config`` reads a Hugging Face config (Llama, Qwen2/3, Mistral, Phi-3, GPT-2 keys);
``ModelSpec.known(name)`` returns the bundled configs of the models this project covers
(``colab_tts/data/models.json``, each with its source). Parameter counts follow the architecture
exactly (tests compare them with a transformers model built on the meta device).

Two figures, two names: ``num_params`` is the parameter count of the architecture (what a checkpoint holds);
``weight_bytes`` / ``weight_gib`` are the bytes vLLM holds once it has loaded the model (the vocabulary padded
to a multiple of 64, the rotary cos/sin cache). Every weights figure the notebooks show for a bundled model
(notebook 00's table and advice, the fit table, the planner's sum) is ``weight_bytes``; ``num_params`` is
for counts (FLOPs per token, "B parameters").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from ._checks import choose
from .cited import cited
from .dtypes import DTYPE_BYTES, dtype_name
from .units import GIB

# Config keys per field, first match wins (Llama/Qwen2/Mistral/Phi-3 names, then GPT-2 names).
_KEYS = {
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads"),
    "vocab_size": ("vocab_size",),
}
_GPT2_TYPES = {"gpt2", "gpt_bigcode"}
VOCAB_PADDING = 64  # vLLM's DEFAULT_VOCAB_PADDING_SIZE


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer's shape. ``num_params`` counts every weight once (tied = once)."""

    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    num_params: int
    architecture: str = "llama"
    source: str = field(default="", compare=False)
    config: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def padded_vocab_size(self) -> int:
        """The vocabulary as vLLM allocates it: rounded up to a multiple of 64 (VocabParallelEmbedding's
        padding_size, vllm/model_executor/layers/vocab_parallel_embedding.py @v0.32.0)."""
        return -(-self.vocab_size // VOCAB_PADDING) * VOCAB_PADDING

    @property
    def rotary(self) -> bool:
        """Positions by rotary embedding (Llama-style); learned or sinusoidal tables are counted elsewhere."""
        return self.architecture == "llama" and self.config.get("position_embeddings", "rope") == "rope"

    def weight_bytes(self, dtype="float16", tensor_parallel_size: int = 1) -> float:
        """Bytes of the weights per GPU in ``dtype`` (float32 / float16 / bfloat16) as vLLM loads them.

        The parameters, with the embedding (and an untied LM head) padded to ``padded_vocab_size`` rows,
        split over ``tensor_parallel_size`` GPUs; plus, for rotary models, the cos/sin cache vLLM keeps as a
        buffer in the model's dtype (``max_position_embeddings x head_dim``, on every GPU).
        """
        size = DTYPE_BYTES[dtype_name(dtype)]
        padding = (self.padded_vocab_size - self.vocab_size) * self.hidden_size * (
            1 if self.tie_word_embeddings else 2)
        rope_cache = self.max_position_embeddings * self.head_dim * size if self.rotary else 0
        return (self.num_params + padding) * size / tensor_parallel_size + rope_cache

    def weight_terms(self, dtype="float16") -> list[tuple[str, int]]:
        """``weight_bytes`` on one GPU as the terms a reader can multiply out: (how, bytes) for the parameters,
        the vocabulary's padding rows and the rotary cache (the last two only where they are not zero)."""
        size = DTYPE_BYTES[dtype_name(dtype)]
        tables = 1 if self.tie_word_embeddings else 2
        rows = self.padded_vocab_size - self.vocab_size
        terms = [(f"{self.num_params:,} parameters x {size} bytes", self.num_params * size)]
        if rows:
            terms.append((f"vocabulary padded {self.vocab_size:,} -> {self.padded_vocab_size:,} rows (a multiple of "
                          f"{VOCAB_PADDING}): {rows} x {self.hidden_size:,}" + (" x 2 tables" if tables == 2 else "")
                          + f" x {size} bytes", rows * self.hidden_size * tables * size))
        if self.rotary:
            terms.append((f"rotary cos/sin cache: {self.max_position_embeddings:,} positions x {self.head_dim} x "
                          f"{size} bytes", self.max_position_embeddings * self.head_dim * size))
        return terms

    def weights_arithmetic(self, dtype="float16") -> str:
        """Why ``weight_gib`` is not parameters x bytes: each term with its inputs on its own line, in MiB, and
        the sum in GiB. A reader multiplying out the lines gets the figure every table shows."""
        terms = self.weight_terms(dtype)
        total = sum(b for _, b in terms)
        shown = "\n  + ".join(f"{how} = {b / 2**20:,.2f} MiB" for how, b in terms)
        return f"  {shown}\n  = {total / 2**20:,.2f} MiB = {total / GIB:.2f} GiB in {dtype_name(dtype)}"

    def weight_gib(self, dtype="float16", tensor_parallel_size: int = 1) -> float:
        """``weight_bytes`` in GiB: the one weights figure every table shows."""
        return self.weight_bytes(dtype, tensor_parallel_size) / GIB

    @property
    def grouped_query(self) -> bool:
        return self.num_kv_heads < self.num_attention_heads

    def with_(self, **changes) -> ModelSpec:
        """A copy with some fields changed (num_params is recounted from the new shape)."""
        cfg = dict(self.config)
        spec = replace(self, **changes)
        if cfg and "num_params" not in changes:
            spec = replace(spec, num_params=_count_params(spec, cfg))
        return spec

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config, name: str | None = None, source: str = "") -> ModelSpec:
        """A spec from a Hugging Face config dict, a config object or a path to config.json."""
        if isinstance(config, (str, Path)):
            path = Path(config)
            if path.is_dir():
                path = path / "config.json"
            if not path.is_file():
                raise ValueError(f"No config.json at {str(path)!r}: pass a config dict or the path of a model folder")
            try:
                config = json.loads(path.read_bytes().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:  # "[[[..." too deep to read
                raise ValueError(f"{str(path)!r} is not a JSON config ({err}): pass a model's config.json") from None
            if not isinstance(config, dict):
                raise ValueError(f"{str(path)!r} holds a JSON {type(config).__name__}, not a config object: pass a "
                                 "model's config.json")
            name = name or path.parent.name
        elif hasattr(config, "to_dict") and not isinstance(config, dict):
            config = config.to_dict()
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, a transformers config or a path, got {type(config).__name__}")
        cfg = dict(config)
        arch = "gpt2" if cfg.get("model_type") in _GPT2_TYPES or "n_embd" in cfg else "llama"
        got = {f: _need(cfg, f) for f in _KEYS}
        heads = got["num_attention_heads"]
        kv = cfg.get("num_key_value_heads") or heads
        head_dim = cfg.get("head_dim") or got["hidden_size"] // heads
        if arch == "gpt2":
            inter = cfg.get("n_inner") or 4 * got["hidden_size"]
            max_pos = cfg.get("n_positions") or cfg.get("max_position_embeddings")
            tie = cfg.get("tie_word_embeddings", True)
        else:
            inter = cfg.get("intermediate_size")
            if inter is None:
                raise ValueError("config has no 'intermediate_size' (the MLP width): add it to the config")
            max_pos = cfg.get("max_position_embeddings")
            tie = cfg.get("tie_word_embeddings", False)
        if max_pos is None:
            raise ValueError("config has no 'max_position_embeddings' (or 'n_positions'): add it to the config")
        if heads % kv:
            raise ValueError(f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv})")
        spec = cls(
            name=name or cfg.get("_name_or_path") or cfg.get("model_type") or "model",
            num_layers=got["num_layers"], hidden_size=got["hidden_size"], num_attention_heads=heads,
            num_kv_heads=kv, head_dim=head_dim, intermediate_size=inter, vocab_size=got["vocab_size"],
            max_position_embeddings=max_pos, tie_word_embeddings=bool(tie), num_params=0,
            architecture=arch, source=source, config=cfg,
        )
        return replace(spec, num_params=cfg.get("num_params_override") or _count_params(spec, cfg))

    @classmethod
    def known(cls, name: str) -> ModelSpec:
        """A bundled config: orpheus-3b, llama-3.2-3b, gpt-sovits-v2-t2s, indextts2-gpt, metavoice-1b, ..."""
        table = known_models()
        key = choose(name, table, "model")
        entry = table[key]
        return cls.from_config(entry["config"], name=key, source=entry["source"])


def known_models() -> dict[str, dict]:
    """The bundled model configs: {name: {"source": ..., "hub_id": ..., "config": {...}}}."""
    text = resources.files("colab_tts").joinpath("data/models.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


_COVERED = (("Orpheus 3B (LLM)", "orpheus-3b"), ("MetaVoice-1B (GPT)", "metavoice-1b"),
            ("GPT-SoVITS GPT stage", "gpt-sovits-v2-t2s"))
SNAC_LABEL = "SNAC 24 kHz codec"


def covered_models() -> dict[str, tuple[float, str]]:
    """Parameter count of each covered model with where the count comes from (hardware.COVERED_MODELS)."""
    out = {}
    for label, name in _COVERED:
        spec = ModelSpec.known(name)
        out[label] = (spec.num_params, f"counted from its config: {spec.source.split(' (')[0]}")
    snac = cited("snac.parameters_24khz")
    out[SNAC_LABEL] = (snac.value, snac.source)
    return out


def snac_weight_gib(dtype="float16") -> float:
    """SNAC 24 kHz's weights in ``dtype`` (its parameter count is cited: snac.parameters_24khz; a conv codec
    run by PyTorch, nothing padded)."""
    return cited("snac.parameters_24khz").value * DTYPE_BYTES[dtype_name(dtype)] / GIB


def covered_weight_gib(dtype="float16") -> dict[str, float]:
    """Weights of each covered model in ``dtype``: ``ModelSpec.weight_gib`` (SNAC: ``snac_weight_gib``)."""
    out = {label: ModelSpec.known(name).weight_gib(dtype) for label, name in _COVERED}
    out[SNAC_LABEL] = snac_weight_gib(dtype)
    return out


def _need(cfg: dict, what: str) -> int:
    for key in _KEYS[what]:
        if cfg.get(key) is not None:
            value = cfg[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
                raise ValueError(f"config's {key!r} is {value!r}: it must be a whole number >= 1")
            return int(value)
    raise ValueError(f"config has no {_KEYS[what][0]!r} ({what}); add it to the config")


def _count_params(spec: ModelSpec, cfg: dict) -> int:
    """Every weight of the architecture, as transformers builds it (tied embeddings once)."""
    h, i, v = spec.hidden_size, spec.intermediate_size, spec.vocab_size
    q, kv = spec.num_attention_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    if spec.architecture == "gpt2":
        attn = h * 3 * h + 3 * h + h * h + h  # c_attn and c_proj, with biases
        mlp = h * i + i + i * h + h
        norms = 2 * 2 * h  # two LayerNorms (weight + bias)
        per_layer = attn + mlp + norms
        total = spec.num_layers * per_layer + v * h + spec.max_position_embeddings * h + 2 * h
        return total + (0 if spec.tie_word_embeddings else v * h)
    model_type = cfg.get("model_type", "llama")
    extra = 0
    if cfg.get("position_embeddings") == "learned":  # a position table (MetaVoice's pos_embeddings)
        extra += spec.max_position_embeddings * h
    if cfg.get("speaker_emb_dim"):  # MetaVoice's speaker_cond_pos: Linear(speaker_emb_dim, dim, bias=False)
        extra += cfg["speaker_emb_dim"] * h
    qkv_bias = bool(cfg.get("attention_bias", False)) or model_type == "qwen2"
    attn = h * q + 2 * h * kv + q * h
    if qkv_bias:
        attn += q + 2 * kv
    if cfg.get("attention_bias", False) and model_type != "qwen2":
        attn += h  # o_proj bias (Llama's attention_bias covers all four projections)
    mlp = 3 * h * i + (2 * i + h if cfg.get("mlp_bias", False) else 0)
    per_layer = attn + mlp + 2 * h  # two RMSNorms
    if model_type == "qwen3":
        per_layer += 2 * spec.head_dim  # Qwen3's q_norm and k_norm
    total = spec.num_layers * per_layer + v * h + h + extra
    return total + (0 if spec.tie_word_embeddings else v * h)
