"""MetaVoice-1B's GPU memory, counted stage by stage from its architecture, against every catalog GPU.

What is counted (weights and the KV cache; not activations, not the CUDA context, not DeepFilterNet):

- first stage: the causal GPT of metavoiceio/metavoice-src fam/llm/fast_model.py @de3fa21
  (``transformer_configs["metavoice-1B"]``: 24 layers, dim 2048, 16 heads, vocab 2562; ``ModelArgs``
  defaults: block_size 2048, speaker_emb_dim 256, SwiGLU hidden = find_multiple(int(2 * 4 * dim / 3), 256)),
  read from the bundled ``metavoice-1b`` config (``ModelSpec.known``, whose count is the same) and counted
  Linear by Linear, pos_embeddings and speaker_cond_pos included; 2 bytes per weight in fp16/bf16 (its own dtype logic:
  ``get_default_dtype``, fp16 for compute capability <= 7.x), or weight-only int8 / int4 as
  fam/llm/fast_quantize.py @de3fa21 stores them (int8: 1 byte + a bf16 scale per output row; int4:
  half a byte + bf16 scale and zero per 128-group, only Linear layers with out_features % 8 == 0);
- its KV cache: ``setup_caches(max_batch_size=2, max_seq_length=block_size)`` (metavoiceio/metavoice-src
  fam/llm/fast_inference_utils.py @de3fa21: batch 2 for classifier-free guidance), K and V per layer, 2 bytes;
- speaker encoder: metavoiceio/metavoice-src fam/quantiser/audio/speaker_encoder/model.py @de3fa21 (LSTM 40 -> 256, 3 layers;
  Linear 256 -> 256), float32;
- second stage: "~10Mn parameters" (README), 4 bytes each (its weights are loaded as stored);
- multi-band diffusion ``get_mbd_24khz(bw=6)``: 4 band models (audiocraft docs/MBD.md), each a
  ``DiffusionUnet`` at audiocraft's default config, float32, plus the EnCodec 24 kHz codec
  (counted from transformers' ``EncodecConfig`` defaults, the facebook/encodec_24khz layout).

``stage_table(gpu, quantisation_mode)`` gives the rows, ``fit_rows()`` the catalog, ``verdict()`` the line
on the "needs ~20 GB / a 24 GB card" claim. The runner (``colab_tts.deploy``, MetaVoice) measures the
same stages with ``track_peak`` on a real GPU; these counts are what it should find plus activations.
"""

from __future__ import annotations

from functools import cache

from ..cited import cited
from ..hardware import GPUS, get_gpu
from ..models import ModelSpec
from ..units import GIB

SOURCE = "metavoiceio/metavoice-src fam/llm/fast_model.py @de3fa211ac4621e03a5f990651aeecc64da418f5"


def _first_stage(spec: ModelSpec) -> dict:
    """fast_model.ModelArgs' fields from the bundled ``metavoice-1b`` config (one home for its shape)."""
    return {"n_layer": spec.num_layers, "n_head": spec.num_attention_heads, "dim": spec.hidden_size,
            "vocab_size": spec.vocab_size, "block_size": spec.max_position_embeddings,
            "speaker_emb_dim": spec.config["speaker_emb_dim"]}


FIRST_STAGE = _first_stage(ModelSpec.known("metavoice-1b"))
KV_BATCH = 2  # metavoiceio/metavoice-src fam/llm/fast_inference_utils.py @de3fa21 build_model: setup_caches(max_batch_size=2, ...)
# Counted on the meta device from facebookresearch/audiocraft audiocraft/models/unet.py @896ec7c with
# config/model/score/basic.yaml (hidden 48, depth 4, growth 4, kernel 8, stride 4, chin 1): one band.
MBD_UNET_PARAMS_PER_BAND = 165_591_936
MBD_SOURCE = ("facebookresearch/audiocraft audiocraft/models/unet.py @896ec7c47f5e5d1e5aa1e4b260c4405328bf009d "
              "(default config/model/score/basic.yaml; the released checkpoint carries its own cfg)")
QUANTISATION_MODES = (None, "int8", "int4")


def swiglu_hidden(dim: int) -> int:
    """metavoiceio/metavoice-src fam/llm/fast_model.py @de3fa21: find_multiple(int(2 * 4 * dim / 3), 256)."""
    n = int(2 * 4 * dim / 3)
    return n if n % 256 == 0 else n + 256 - n % 256


def first_stage_linears(cfg: dict = FIRST_STAGE) -> list[tuple[str, int, int, int]]:
    """(name, in_features, out_features, count) of every Linear layer of the first stage."""
    d, f = cfg["dim"], swiglu_hidden(cfg["dim"])
    n = cfg["n_layer"]
    return [("wqkv", d, 3 * d, n), ("wo", d, d, n), ("w1", d, f, n), ("w3", d, f, n), ("w2", f, d, n),
            ("speaker_cond_pos", cfg["speaker_emb_dim"], d, 1), ("output", d, cfg["vocab_size"], 1)]


def first_stage_params(cfg: dict = FIRST_STAGE) -> dict:
    """Parameters by kind: Linear weights, embeddings (token, position), RMSNorm weights."""
    linear = sum(i * o * k for _, i, o, k in first_stage_linears(cfg))
    embeddings = cfg["vocab_size"] * cfg["dim"] + cfg["block_size"] * cfg["dim"]
    norms = (2 * cfg["n_layer"] + 1) * cfg["dim"]
    return {"linear": linear, "embeddings": embeddings, "norms": norms, "total": linear + embeddings + norms}


def first_stage_weight_bytes(quantisation_mode=None, cfg: dict = FIRST_STAGE) -> int:
    """Bytes of the first stage's weights as metavoiceio/metavoice-src fam/llm/fast_quantize.py @de3fa21 stores them (None: fp16/bf16, 2 bytes)."""
    if quantisation_mode not in QUANTISATION_MODES:
        raise ValueError(f"quantisation_mode must be None, 'int8' or 'int4' (upstream's choices), "
                         f"got {quantisation_mode!r}")
    p = first_stage_params(cfg)
    rest = 2 * (p["embeddings"] + p["norms"])
    total = rest
    for _, i, o, k in first_stage_linears(cfg):
        if quantisation_mode is None:
            total += 2 * i * o * k
        elif quantisation_mode == "int8":
            total += (i * o + 2 * o) * k  # int8 weight + bf16 scale per output row
        elif o % 8 == 0:  # int4: packed nibbles + bf16 (scale, zero) per group of 128 inputs
            total += (i * o // 2 + (i // 128) * o * 2 * 2) * k
        else:  # replace_linear_int4 skips layers with out_features % 8 != 0 (the 2562-way head)
            total += 2 * i * o * k
    return total


def kv_cache_bytes(cfg: dict = FIRST_STAGE, batch: int = KV_BATCH, itemsize: int = 2) -> int:
    """K and V for every layer, ``batch`` rows of ``block_size`` positions (the cache is static)."""
    return 2 * cfg["n_layer"] * batch * cfg["block_size"] * cfg["dim"] * itemsize


def speaker_encoder_params() -> int:
    """LSTM(40 -> 256, 3 layers) + Linear(256 -> 256): metavoiceio/metavoice-src
    fam/quantiser/audio/speaker_encoder/model.py @de3fa21."""
    lstm = sum(4 * 256 * (n_in + 256) + 2 * 4 * 256 for n_in in (40, 256, 256))
    return lstm + 256 * 256 + 256


@cache
def encodec_24khz_params() -> int:
    """EnCodec 24 kHz, built on the meta device from transformers' EncodecConfig defaults."""
    import torch
    from transformers import EncodecConfig, EncodecModel

    with torch.device("meta"):
        model = EncodecModel(EncodecConfig())
    return sum(p.numel() for p in model.parameters())


def stage_table(gpu="T4", quantisation_mode=None) -> list[dict]:
    """Stage-by-stage counted memory of MetaVoice-1B on ``gpu`` (GiB), with where each figure comes from."""
    spec = get_gpu(gpu)
    if quantisation_mode == "int4" and not spec.bf16:
        raise ValueError(f"int4 is not available on {spec.name}: fast_quantize.py packs for torch's "
                         "_weight_int4pack_mm with bfloat16 scales (bf16 needs compute capability >= 8.0); "
                         "use None or 'int8'")
    dtype = "bfloat16" if spec.bf16 else "float16"
    p1 = first_stage_params()
    bands = cited("metavoice.mbd_bands").value
    second = cited("metavoice.second_stage_params")
    enc = encodec_24khz_params()
    rows = [
        {"stage": "first stage GPT (weights)", "params": p1["total"],
         "dtype": quantisation_mode or dtype, "gib": first_stage_weight_bytes(quantisation_mode) / GIB,
         "source": f"counted from {SOURCE}"},
        {"stage": "first stage KV cache (batch 2 x 2048 positions)", "params": 0, "dtype": dtype,
         "gib": kv_cache_bytes() / GIB, "source": "counted: metavoiceio/metavoice-src fam/llm/fast_inference_utils.py @de3fa21 setup_caches"},
        {"stage": "speaker encoder", "params": speaker_encoder_params(), "dtype": "float32",
         "gib": 4 * speaker_encoder_params() / GIB,
         "source": "counted: metavoiceio/metavoice-src fam/quantiser/audio/speaker_encoder/model.py @de3fa21"},
        {"stage": "second stage (non-causal)", "params": int(second.value), "dtype": "float32",
         "gib": 4 * second.value / GIB, "source": f"cited: {second.source} ('~10Mn')"},
        {"stage": f"multi-band diffusion ({bands} band U-Nets)", "params": bands * MBD_UNET_PARAMS_PER_BAND,
         "dtype": "float32", "gib": 4 * bands * MBD_UNET_PARAMS_PER_BAND / GIB,
         "source": f"estimate: counted from {MBD_SOURCE}"},
        {"stage": "EnCodec 24 kHz (MBD's codec)", "params": enc, "dtype": "float32", "gib": 4 * enc / GIB,
         "source": "counted: transformers EncodecConfig defaults (facebook/encodec_24khz layout)"},
    ]
    rows.append({"stage": "total counted", "params": sum(r["params"] for r in rows), "dtype": "",
                 "gib": sum(r["gib"] for r in rows), "source": "not counted: activations, CUDA context, "
                 "DeepFilterNet, torch.compile workspaces (the runner measures them)"})
    return rows


def fit_rows(quantisation_mode=None, gpus=None) -> list[dict]:
    """Counted total against every catalog GPU (int4 rows only where upstream's kernel runs)."""
    rows = []
    for key in gpus or GPUS:
        spec = get_gpu(key)
        if quantisation_mode == "int4" and not spec.bf16:
            rows.append({"gpu": key, "memory_gib": spec.memory_gib, "counted_gib": None, "headroom_gib": None,
                         "note": "int4 needs CC >= 8.0"})
            continue
        total = stage_table(key, quantisation_mode)[-1]["gib"]
        rows.append({"gpu": key, "memory_gib": spec.memory_gib, "counted_gib": round(total, 2),
                     "headroom_gib": round(spec.memory_gib - total, 2),
                     "note": "fp16 (its dtype logic on CC < 8)" if not spec.bf16 else "bf16"})
    return rows


CLAIM_STATUS = "disputed"  # the one verdict on the 24 GB claim, in every section that names it (systems' note too)


def verdict() -> str:
    """The line on the "needs ~20 GB, at least a 24 GB card" claim, with its numbers, sources and what the
    count leaves out."""
    t4 = stage_table("T4")
    total, weights = t4[-1]["gib"], t4[0]["gib"]
    report = cited("metavoice.user_report_gb")
    readme = cited("metavoice.readme_vram_gb_now")
    return (f"'Needs ~20 GB, at least a 24 GB card': {CLAIM_STATUS}, not settled by this count. MetaVoice-1B's first "
            f"stage is {first_stage_params()['total'] / 1e9:.2f} B parameters, {weights:.2f} GiB in fp16; with its KV "
            "cache, speaker encoder, second stage, multi-band diffusion and EnCodec the weights and KV cache count "
            f"{total:.2f} GiB (predicted by count). Left out: activations, torch.compile's workspaces, the CUDA "
            f"context and DeepFilterNet, so the peak is higher by an amount not measured here (no GPU). Its README "
            f"asks for {readme.value} GB ({readme.source}; 24, then 16 (#62), then {readme.value} (#71)); the "
            f"~{report.value} GB figure is one user's RTX 4090 observation ({report.source}, {report.date}) from "
            "before upstream's 'reduce memory footprint' change (#62). What settles it: the runner's peak "
            "(torch.cuda.max_memory_reserved()) on a GPU, stage by stage.")
