"""GPT-SoVITS's GPT stage (text -> semantic tokens) as a plain PyTorch model.

The same architecture as Text2SemanticDecoder in RVC-Boss/GPT-SoVITS GPT_SoVITS/AR/models/t2s_model.py
@48b1a01, written gpt-fast style: one ``T2SModel`` with an explicit ``prefill`` over the prompt and a
per-token ``decode_step``; the KV cache is an object passed in (``colab_tts.decode_caches`` has the
variants), the prompt assembly and batch driver live in ``colab_tts.t2s_runner``.

Architecture (sizes from RVC-Boss/GPT-SoVITS GPT_SoVITS/configs/s1longer-v2.yaml @48b1a01): phoneme
embedding + Linear(1024 -> 512) of BERT features, plus a sine position table scaled by a learned
``alpha``; semantic-token embedding with its own position table; 24 post-norm layers (fused q/k/v
projection, 16 heads, ReLU FFN 2048); a bias-free head over 1025 semantic tokens (EOS = 1024). Text
positions attend to all text positions; semantic positions attend to the whole text and causally to
earlier semantic positions.

Upstream checkpoint layout (an s1 ``.ckpt``: ``{"config": {...}, "weight": state_dict}``; the
state dict belongs to the Lightning module, hence the ``model.`` prefix). Config keys live in
``config["model"]``: ``n_layer``, ``hidden_dim``, ``embedding_dim``, ``head``, ``vocab_size``,
``phoneme_vocab_size``, ``EOS``, ``dropout``. Parameter names, upstream -> here:

    model.bert_proj.{weight,bias}                        -> bert_proj.{weight,bias}
    model.ar_text_embedding.word_embeddings.weight       -> text_embedding.weight
    model.ar_text_position.alpha                         -> text_alpha
    model.ar_audio_embedding.word_embeddings.weight      -> audio_embedding.weight
    model.ar_audio_position.alpha                        -> audio_alpha
    model.h.layers.N.self_attn.in_proj_{weight,bias}     -> layers.N.qkv.{weight,bias}
    model.h.layers.N.self_attn.out_proj.{weight,bias}    -> layers.N.out.{weight,bias}
    model.h.layers.N.linear1.{weight,bias}               -> layers.N.ffn_up.{weight,bias}
    model.h.layers.N.linear2.{weight,bias}               -> layers.N.ffn_down.{weight,bias}
    model.h.layers.N.norm1.{weight,bias}                 -> layers.N.norm1.{weight,bias}
    model.h.layers.N.norm2.{weight,bias}                 -> layers.N.norm2.{weight,bias}
    model.ar_predict_layer.weight                        -> head.weight

The sine tables (upstream ``pe``) are not saved in checkpoints; both sides compute them.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import positive
from .cited import value


@dataclass(frozen=True)
class T2SConfig:
    """Sizes of the GPT stage. Defaults are GPT-SoVITS v2: RVC-Boss/GPT-SoVITS
    GPT_SoVITS/configs/s1longer-v2.yaml @48b1a01 (``linear_units`` = 2048 = 4 x hidden)."""

    n_layer: int = 24
    hidden_dim: int = 512
    n_head: int = 16
    ffn_dim: int = 2048
    vocab_size: int = 1025  # 1024 semantic codes + EOS
    eos_id: int = 1024
    phoneme_vocab_size: int = 732
    bert_dim: int = 1024
    max_positions: int = 4000  # length of the sine tables (upstream: 4000)
    tokens_per_second: float = float(value("gpt_sovits.semantic_tokens_per_second"))  # 25 Hz semantic tokens

    def __post_init__(self):
        for f in fields(self):
            positive(getattr(self, f.name), f"T2SConfig.{f.name}", integer=f.name != "tokens_per_second",
                     allow_zero=f.name == "eos_id")
        if self.hidden_dim % self.n_head:
            raise ValueError(f"T2SConfig.hidden_dim ({self.hidden_dim}) must be a multiple of n_head "
                             f"({self.n_head}); pick e.g. n_head={math.gcd(self.hidden_dim, 16)}")
        if self.eos_id != self.vocab_size - 1:
            raise ValueError(f"T2SConfig.eos_id must be vocab_size - 1 = {self.vocab_size - 1} "
                             f"(as upstream asserts), got {self.eos_id}")

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.n_head

    @classmethod
    def small(cls, n_layer: int = 4, hidden_dim: int = 128, n_head: int = 4) -> T2SConfig:
        """A scaled-down config with the real vocabularies, for tests and quick notebook runs."""
        return cls(n_layer=n_layer, hidden_dim=hidden_dim, n_head=n_head, ffn_dim=4 * hidden_dim)

    @classmethod
    def from_upstream(cls, config: dict) -> T2SConfig:
        """Read an upstream s1 config (the checkpoint's ``"config"`` dict, or its ``"model"`` part)."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict (the checkpoint's 'config'), got {type(config).__name__}")
        model = config.get("model", config)
        need = ["n_layer", "hidden_dim", "head", "vocab_size", "phoneme_vocab_size", "EOS"]
        missing = [k for k in need if k not in model]
        if missing:
            raise ValueError(f"upstream config lacks {missing}; expected config['model'] with keys {need}")
        if model.get("embedding_dim", model["hidden_dim"]) != model["hidden_dim"]:
            raise ValueError("embedding_dim != hidden_dim is not a GPT-SoVITS layout this model supports")
        hidden = int(model["hidden_dim"])
        return cls(n_layer=int(model["n_layer"]), hidden_dim=hidden, n_head=int(model["head"]),
                   ffn_dim=4 * hidden,  # upstream builds dim_feedforward = hidden_dim * 4
                   vocab_size=int(model["vocab_size"]), eos_id=int(model["EOS"]),
                   phoneme_vocab_size=int(model["phoneme_vocab_size"]))

    def to_upstream(self) -> dict:
        """This config in the upstream checkpoint's ``"config"`` layout."""
        return {"model": {"n_layer": self.n_layer, "hidden_dim": self.hidden_dim, "embedding_dim": self.hidden_dim,
                          "head": self.n_head, "vocab_size": self.vocab_size, "EOS": self.eos_id,
                          "phoneme_vocab_size": self.phoneme_vocab_size, "dropout": 0.0,
                          "linear_units": self.ffn_dim}}

    def as_dict(self) -> dict:
        return asdict(self)


def sine_table(length: int, dim: int) -> torch.Tensor:
    """The vall-e style sine/cosine position table (length, dim): sin on even, cos on odd columns."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


class Block(nn.Module):
    """One post-norm transformer layer: x = LN1(x + attn(x)); x = LN2(x + ffn(x))."""

    def __init__(self, config: T2SConfig):
        super().__init__()
        h = config.hidden_dim
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.qkv = nn.Linear(h, 3 * h)
        self.out = nn.Linear(h, h)
        self.ffn_up = nn.Linear(h, config.ffn_dim)
        self.ffn_down = nn.Linear(config.ffn_dim, h)
        self.norm1 = nn.LayerNorm(h)
        self.norm2 = nn.LayerNorm(h)

    def forward(self, x, layer: int, cache, mask):
        b, t, h = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = cache.update(layer, k, v)
        # The cache may hold another dtype than the weights (bf16 K/V beside int8 Linear layers).
        y = F.scaled_dot_product_attention(q.to(k.dtype), k, v, attn_mask=mask).to(x.dtype)
        x = self.norm1(x + self.out(y.transpose(1, 2).reshape(b, t, h)))
        return self.norm2(x + self.ffn_down(F.relu(self.ffn_up(x))))


class T2SModel(nn.Module):
    """The GPT stage. ``prefill`` runs the prompt and fills ``cache``; ``decode_step`` adds one token."""

    def __init__(self, config: T2SConfig | None = None):
        super().__init__()
        config = T2SConfig() if config is None else config
        if not isinstance(config, T2SConfig):
            raise TypeError(f"config must be a T2SConfig, got {type(config).__name__}")
        self.config = config
        h = config.hidden_dim
        self.bert_proj = nn.Linear(config.bert_dim, h)
        self.text_embedding = nn.Embedding(config.phoneme_vocab_size, h)
        self.text_alpha = nn.Parameter(torch.ones(1))
        self.audio_embedding = nn.Embedding(config.vocab_size, h)
        self.audio_alpha = nn.Parameter(torch.ones(1))
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.head = nn.Linear(h, config.vocab_size, bias=False)
        self.register_buffer("sine", sine_table(config.max_positions, h), persistent=False)

    # Embeddings stay plain tensors even when int8 quantization swaps the Linear layers.
    @property
    def device(self) -> torch.device:
        return self.audio_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.audio_embedding.weight.dtype

    def decode_param_count(self) -> int:
        """Parameters read for every decoded token: layers and head (embeddings: one row each, ignored)."""
        c = self.config
        h, f = c.hidden_dim, c.ffn_dim
        per_layer = (3 * h * h + 3 * h) + (h * h + h) + (h * f + f) + (f * h + h) + 4 * h
        return c.n_layer * per_layer + h * c.vocab_size

    def kv_bytes_per_position(self) -> int:
        """K and V of every layer for one position, in the model's dtype."""
        return 2 * self.config.n_layer * self.config.hidden_dim * self.dtype.itemsize

    # --- embeddings -------------------------------------------------------------------------------

    def embed_text(self, phonemes: torch.Tensor, bert: torch.Tensor) -> torch.Tensor:
        """One segment's text side: (T,) phoneme ids and (T, 1024) BERT features -> (T, hidden)."""
        c = self.config
        if phonemes.ndim != 1:
            raise ValueError(f"phonemes must be a 1-D tensor of ids for one segment, got shape {tuple(phonemes.shape)}")
        if bert.shape != (phonemes.shape[0], c.bert_dim):
            raise ValueError(f"bert must have shape (len(phonemes), {c.bert_dim}) = ({phonemes.shape[0]}, "
                             f"{c.bert_dim}), got {tuple(bert.shape)}; transpose an upstream (1024, T) tensor")
        if phonemes.numel() and int(phonemes.max()) >= c.phoneme_vocab_size:
            raise ValueError(f"phoneme ids must be < phoneme_vocab_size ({c.phoneme_vocab_size})")
        x = self.text_embedding(phonemes) + self.bert_proj(bert.to(self.dtype))
        return x + self.text_alpha * self.sine[: x.shape[0]].to(x.dtype)

    def embed_audio(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Semantic tokens at their semantic positions (any matching shapes) -> (..., hidden)."""
        x = self.audio_embedding(tokens)
        return x + self.audio_alpha * self.sine[positions].to(x.dtype)

    # --- the two passes ---------------------------------------------------------------------------

    def prefill(self, x: torch.Tensor, cache, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the prompt (B, T, hidden) through every layer, filling ``cache``; logits of the last position.

        ``mask`` is a boolean (B, 1, T, T) "may attend" mask (``prefix_mask`` builds it). The caller
        then calls ``cache.advance(T)``: kept outside so that the step itself can be compiled.
        """
        for i, layer in enumerate(self.layers):
            x = layer(x, i, cache, mask)
        return self.head(x[:, -1]).float()

    def decode_step(self, tokens: torch.Tensor, positions: torch.Tensor, cache,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
        """One new semantic token per row: (B,) tokens at (B,) semantic positions -> (B, vocab) logits.

        ``mask`` is a boolean (B, 1, 1, S) "may attend" mask over the cached keys, or None when every
        cached key of every row is real (no left padding).
        """
        x = self.embed_audio(tokens, positions)[:, None]
        for i, layer in enumerate(self.layers):
            x = layer(x, i, cache, mask)
        return self.head(x[:, -1]).float()


def prefix_mask(text_lens: torch.Tensor, audio_lens: torch.Tensor, total: int) -> torch.Tensor:
    """(B, 1, T, T) boolean mask for left-padded prompts [pad | text | semantic prompt].

    Text attends to all of its row's text; semantic positions attend to the text and causally to
    the semantic prompt; padding attends only to itself (its outputs are never used).
    """
    idx = torch.arange(total, device=text_lens.device)
    start = (total - text_lens - audio_lens)[:, None]  # first real position of each row
    text_end = start + text_lens[:, None]
    is_text = (idx >= start) & (idx < text_end)  # (B, T)
    is_audio = idx >= text_end
    q, k = idx[:, None], idx[None, :]
    mask = (is_text[:, :, None] & is_text[:, None, :]) \
        | (is_audio[:, :, None] & (is_text[:, None, :] | (is_audio[:, None, :] & (k <= q))))
    mask |= torch.eye(total, dtype=torch.bool, device=idx.device)
    return mask[:, None]


# --- loading upstream checkpoints ------------------------------------------------------------------

_TOP_NAMES = {
    "bert_proj.weight": "bert_proj.weight",
    "bert_proj.bias": "bert_proj.bias",
    "ar_text_embedding.word_embeddings.weight": "text_embedding.weight",
    "ar_text_position.alpha": "text_alpha",
    "ar_audio_embedding.word_embeddings.weight": "audio_embedding.weight",
    "ar_audio_position.alpha": "audio_alpha",
    "ar_predict_layer.weight": "head.weight",
}
_LAYER_NAMES = {
    "self_attn.in_proj_weight": "qkv.weight",
    "self_attn.in_proj_bias": "qkv.bias",
    "self_attn.out_proj.weight": "out.weight",
    "self_attn.out_proj.bias": "out.bias",
    "linear1.weight": "ffn_up.weight",
    "linear1.bias": "ffn_up.bias",
    "linear2.weight": "ffn_down.weight",
    "linear2.bias": "ffn_down.bias",
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
}
# Upstream entries that carry no weights we need (metric state, cached sine tables).
_UNUSED = re.compile(r"ar_accuracy_metric\.|_position\.pe$")


def upstream_names(n_layer: int) -> dict[str, str]:
    """Upstream checkpoint name -> this model's name, for a model with ``n_layer`` layers."""
    names = {f"model.{up}": ours for up, ours in _TOP_NAMES.items()}
    for i in range(n_layer):
        names.update({f"model.h.layers.{i}.{up}": f"layers.{i}.{ours}" for up, ours in _LAYER_NAMES.items()})
    return names


def to_upstream_checkpoint(model: T2SModel) -> dict:
    """This model as an upstream s1 checkpoint dict ({"config", "weight"}), e.g. to test loading."""
    ours = model.state_dict()
    weight = {up: ours[name].detach().clone() for up, name in upstream_names(model.config.n_layer).items()}
    return {"config": model.config.to_upstream(), "weight": weight}


def _load_checkpoint_file(path: Path) -> dict:
    """A ``.ckpt`` read with ``weights_only=True``: tensors, numbers, strings and containers only, so a file
    from the internet cannot run code when it is loaded (a full unpickle would run whatever it names)."""
    if not path.exists():
        raise ValueError(f"checkpoint {path} does not exist; pass the s1 .ckpt path (GPT_weights_v2/*.ckpt)")
    if not path.is_file():
        raise ValueError(f"checkpoint {path} is a folder, not a file; pass the s1 .ckpt file inside it "
                         "(GPT_weights_v2/*.ckpt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt, not a torch file, or a pickle naming code: never run
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights only load failed" in str(err).lower() or "unsupported global" in str(err).lower():
            reason = "it holds Python objects other than tensors, numbers and strings, which are not loaded"
        raise ValueError(f"checkpoint {path} cannot be read as a GPT-SoVITS s1 checkpoint ({reason[:200]}); "
                         "it may be truncated or corrupt: download it again") from None


def load_gpt_sovits_checkpoint(path_or_dict, dtype=None, device=None) -> T2SModel:
    """Build a T2SModel from an upstream s1 checkpoint (a ``.ckpt`` path or the loaded dict).

    Every upstream tensor is renamed (see the module docstring) and its shape checked; a missing,
    unexpected or mis-shaped tensor raises ValueError naming it.
    """
    if isinstance(path_or_dict, (str, Path)):
        ckpt = _load_checkpoint_file(Path(path_or_dict))
    elif isinstance(path_or_dict, dict):
        ckpt = path_or_dict
    else:
        raise TypeError("load_gpt_sovits_checkpoint takes the s1 .ckpt path (str or Path) or the loaded dict, "
                        f"got {type(path_or_dict).__name__}")
    if not isinstance(ckpt, dict) or "config" not in ckpt or "weight" not in ckpt:
        raise ValueError("an upstream s1 checkpoint is a dict with 'config' and 'weight'; got "
                         + (f"keys {sorted(ckpt)[:5]}" if isinstance(ckpt, dict) else type(ckpt).__name__))
    config = T2SConfig.from_upstream(ckpt["config"])
    model = T2SModel(config)
    expected = model.state_dict()
    names = upstream_names(config.n_layer)
    state, unexpected = {}, []
    for name, tensor in ckpt["weight"].items():
        ours = names.get(name) or names.get("model." + name)  # tolerate a state dict saved without "model."
        if ours is None:
            if not _UNUSED.search(name):
                unexpected.append(name)
            continue
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise ValueError(f"checkpoint tensor {name} has shape {tuple(tensor.shape)}, but a model with "
                             f"config {config} needs {tuple(expected[ours].shape)} for {ours}; the 'config' "
                             "and 'weight' of this checkpoint disagree")
        state[ours] = tensor
    missing = sorted(set(expected) - set(state))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the GPT-SoVITS t2s layout: missing {missing[:6]}, "
                         f"unexpected {unexpected[:6]}; is this an s1 (GPT) checkpoint and not an s2 (SoVITS) one?")
    model.load_state_dict(state)
    model.eval()
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)
    return model
