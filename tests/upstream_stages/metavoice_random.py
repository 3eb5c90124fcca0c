"""Run MetaVoice-1B's first and second stages through colab_tts.deploy's worker, on CPU, random weights.

Runs inside a metavoice-src environment (see tests/test_deploy_upstream.py), not in the project's:
``python tests/upstream_stages/metavoice_random.py CLONE WORKDIR`` writes WORKDIR/stages.json.

``TTS(model_name=...)`` gets first_stage.pt, second_stage.pt and speaker_encoder.pt from a Hugging Face cache
this helper fills (HF_HUB_OFFLINE, a snapshot of metavoiceio/metavoice-1B-v0.1 with random weights built from
upstream's own classes: fam.llm.fast_model.Transformer saved under the nanoGPT names fast_inference_utils
._load_model converts, fam.llm.model.GPT for the second stage). The glue's float16 patch is applied as on a
T4 (``needs_float16`` answers True here: this CPU has no CUDA to ask).

Stand-ins, each because upstream cannot run it here:
- multi-band diffusion (``MultiBandDiffusion.get_mbd_24khz``, built when fam.llm.decoders is imported) and
  ``EncodecDecoder.decode``: the weights come from the hub, and decode puts its tokens on "cuda" (hard-coded);
  the stand-in records the second stage's tokens and writes a silent 24 kHz wav where decode would.
- DeepFilterNet (``get_enhancer("df")`` downloads its model): copies the file.
- ``main`` (first-stage generation) is given device="cpu": ``synthesise`` calls it without one and its default
  is "cuda"; ``torch.cuda.get_device_name`` (telemetry) answers "cpu".
- the second stage runs under ``torch.amp.autocast`` in its precision (float16) on CPU too: upstream enters
  autocast only on CUDA, and without it the float16 speaker embedding meets float32 weights.
- TORCHDYNAMO_DISABLE: ``build_model`` compiles decode_one_token with mode="max-autotune" (GPU kernels).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import wave
from pathlib import Path

# Sizes changed from fam/llm/fast_model.py transformer_configs["metavoice-1B"] (24 layers, dim 2048,
# block 2048: a 1.2 B-parameter first stage), for a 2-core CPU. vocab_size 2562 stays (the token layout).
FIRST_STAGE = {"n_layer": 2, "n_head": 4, "dim": 256, "block_size": 320}  # warm-up generates 200 tokens
SECOND_STAGE = {"block_size": 256, "vocab_sizes": [2562, 2562], "target_vocab_sizes": [1025] * 6,
                "n_layer": 2, "n_head": 4, "n_embd": 128, "bias": False, "causal": False,
                "spk_emb_on_text": True, "norm_type": "rmsnorm", "rmsnorm_eps": 1e-5,
                "nonlinearity_type": "swiglu", "swiglu_multiple_of": 256}
TEXT_OFFSET = 2049  # text ids follow the two 1024-code codebooks and the end-of-audio token 2048
HUB_REPO = "metavoiceio/metavoice-1B-v0.1"
REPORT = "stages.json"

# gpt-fast name -> MetaVoice checkpoint name: the inverse of fast_inference_utils._load_model's renaming
TOP_LEVEL_NAMES = {"tok_embeddings.weight": "transformer.wtes.0.weight", "pos_embeddings.weight": "transformer.wpe.weight",
                   "output.weight": "lm_heads.0.weight", "norm.weight": "transformer.ln_f.weight"}
TO_CHECKPOINT = [("layers.", "transformer.h."), (".attention.wqkv.", ".attn.c_attn."), (".attention.wo.", ".attn.c_proj."),
                 (".feed_forward.swiglu.", ".mlp.swiglu."), (".feed_forward.w2.", ".mlp.c_proj."),
                 (".attention_norm.", ".ln_1."), (".ffn_norm.", ".ln_2.")]


def tokenizer_meta() -> dict:
    """A byte-level tiktoken tokenizer in the form TrainedBPETokeniser(**meta["tokenizer"]) takes."""
    return {"name": "random-bytes", "pat_str": r"""\S+|\s+""", "mergeable_ranks": {bytes([i]): i for i in range(256)},
            "special_tokens": {"<|endoftext|>": 256}, "offset": TEXT_OFFSET}


def build_snapshot(hub_cache: Path) -> Path:
    import torch
    from fam.llm import fast_model
    from fam.llm.model import GPT, GPTConfig
    from torch import nn

    torch.manual_seed(0)
    commit = "0" * 40
    repo = hub_cache / f"models--{HUB_REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)

    first = fast_model.Transformer(fast_model.ModelArgs.from_name("metavoice-1B"))
    state = {}
    for name, tensor in first.state_dict().items():
        name = TOP_LEVEL_NAMES.get(name, name)
        for ours, theirs in TO_CHECKPOINT:
            name = name.replace(ours, theirs)
        state[name] = tensor
    torch.save({"model": state, "meta": {"tokenizer": tokenizer_meta()}}, snapshot / "first_stage.pt")

    second = GPT(GPTConfig(**SECOND_STAGE), speaker_emb_dim=256)
    torch.save({"model": second.state_dict(), "model_args": SECOND_STAGE, "config": {"causal": False},
                "meta": {"tokenizer": tokenizer_meta(), "speaker_cond": True, "speaker_emb_size": 256}},
               snapshot / "second_stage.pt")

    # fam/quantiser/audio/speaker_encoder/model.py: 3-layer LSTM over 40 mel bands, 256-d embedding
    encoder = nn.Module()
    encoder.lstm = nn.LSTM(40, 256, 3, batch_first=True)
    encoder.linear = nn.Linear(256, 256)
    torch.save({"model_state": encoder.state_dict()}, snapshot / "speaker_encoder.pt")
    return snapshot


def describe(value):
    import torch

    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype).replace("torch.", "")}
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], (torch.Tensor, tuple, list)):
        return [describe(v) for v in value]
    if isinstance(value, list):
        return {"len": len(value)}
    return repr(type(value))


def write_silence(path: Path, seconds: float = 1.0, rate: int = 24000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))


def install_stand_ins(records: list) -> None:
    """Everything listed in the module docstring, applied before the glue imports upstream."""
    import torch
    from audiocraft.models import MultiBandDiffusion

    MultiBandDiffusion.get_mbd_24khz = staticmethod(lambda bw=6: None)
    torch.cuda.get_device_name = lambda *a: "cpu"
    import fam.llm.decoders as decoders
    import fam.llm.fast_inference as fi
    import fam.llm.fast_inference_utils as fiu
    import fam.llm.inference as inference
    from fam.llm import fast_model
    from fam.llm.model import GPT

    def decode(self, tokens, causal=True, ref_audio_path=None):
        records.append({"stage": "second stage tokens to decode", "hierarchies": len(tokens),
                        "lengths": sorted({len(t) for t in tokens}), "max_id": max(max(t) for t in tokens)})
        path = self.output_dir / f"synth_{len(records)}"
        write_silence(Path(str(path) + ".wav"))
        return path

    decoders.EncodecDecoder.decode = decode
    fi.get_enhancer = lambda name: (lambda src, dst: shutil.copy2(src, dst))
    fi.main = functools.partial(fi.main, device="cpu")
    init = inference.Model.__init__

    @functools.wraps(init)
    def init_with_autocast(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._ctx = torch.amp.autocast(device_type="cpu", dtype=self.ptdtype)

    inference.Model.__init__ = init_with_autocast

    build_model = fi.build_model

    @functools.wraps(build_model)
    def recorded_build(*args, **kwargs):
        model, tokenizer, smodel, size = build_model(*args, **kwargs)
        dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
        records.append({"stage": "first stage built", "precision": str(kwargs["precision"]).replace("torch.", ""),
                        "weight_dtypes": dtypes, "n_layer": model.config.n_layer, "vocab_size": model.config.vocab_size,
                        "speaker_emb_dim": model.config.speaker_emb_dim,
                        "params": sum(p.numel() for p in model.parameters())})
        return model, tokenizer, smodel, size

    fi.build_model = recorded_build

    def record(owner, name, label):
        method = getattr(owner, name)

        @functools.wraps(method)
        def recorder(*args, **kwargs):
            out = method(*args, **kwargs)
            records.append({"stage": label, "out": describe(out),
                            "in": describe(args[1] if owner is GPT else args[1])})
            return out

        setattr(owner, name, recorder)

    record(fiu, "generate", "first stage generate")  # the warm-up in build_model, then main's
    record(GPT, "generate", "second stage generate")
    fast_model.transformer_configs["metavoice-1B"].update(FIRST_STAGE)


def main(argv=None) -> int:
    clone, work = (Path(a).resolve() for a in (argv or sys.argv[1:]))
    os.environ.update(HOME=str(work), HF_HUB_CACHE=str(work / "hub"), HF_HUB_OFFLINE="1", TORCHDYNAMO_DISABLE="1")
    sys.path.insert(0, str(clone))  # the runner installs fam with pip -e from the clone
    os.chdir(clone)
    from colab_tts.deploy import metavoice, systems, worker

    plan = systems.plan("metavoice", workdir=str(work), out=str(work / "out"))
    plan["clone"] = str(clone)
    os.environ.update(plan["environment"])  # what run_worker starts the worker subprocess with
    records: list = []
    install_stand_ins(records)
    build_snapshot(work / "hub")
    metavoice.needs_float16 = lambda: True  # as on a T4 (compute capability 7.5)
    result = worker.run_plan(plan)
    import fam.llm.fast_inference as fi

    records.append({"stage": "telemetry", "disabled": bool(fi.posthog._posthog.disabled)})
    (work / REPORT).write_text(json.dumps({"result": result, "records": records, "config": {
        "first_stage": FIRST_STAGE, "second_stage": SECOND_STAGE}}))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
