"""Run IndexTTS-2's GPT and s2mel stages through colab_tts.deploy's worker, on CPU, with random weights.

Runs inside an IndexTTS-2 environment (see tests/test_deploy_upstream.py), not in the project's:
``python tests/upstream_stages/indextts2_random.py CLONE WORKDIR`` writes WORKDIR/stages.json.

CLONE is an index-tts/index-tts checkout at the commit systems.INDEXTTS2 pins, with upstream's
``checkpoints/config.yaml`` (downloaded with the weights from IndexTeam/IndexTTS-2; untracked at that commit).
Every checkpoint ``IndexTTS2.__init__`` loads is built here from upstream's classes and configs with random
weights: gpt.pth, s2mel.pth, bpe.model, wav2vec2bert_stats.pt, feat1/2.pt, and in ``checkpoints/hf_cache/``
the four auxiliary models ``indextts/utils/model_download.py`` ``ensure_models_available`` would download
(it finds them there and downloads nothing). Then ``worker.run_plan`` runs the plan ``systems.plan`` makes,
as the runner's worker subprocess does, and the shapes and dtypes each stage returned are recorded.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import wave
from pathlib import Path

# Sizes changed from upstream's config.yaml, for a 2-core CPU (the rest is upstream's own config).
GPT_LAYERS = 2  # config: 24 layers of width 1280: 866 M parameters, a 3.5 GB checkpoint (4.3 GB RSS to build)
CONFORMER_BLOCKS = 1  # config: 6 (speaker) and 4 (emotion) conformer blocks
W2V_BERT = {"num_hidden_layers": 17, "intermediate_size": 256}  # infer_v2.get_emb reads hidden_states[17]
BIGVGAN_CHANNELS = 64  # bigvgan config.json upsample_initial_channel: 1536
DIFFUSION_STEPS = 2  # the runner's diffusion_steps setting (upstream hard-codes 25); exercises the override
MAX_MEL_TOKENS = 16  # infer(**generation_kwargs) max_mel_tokens (upstream default 1500): random weights rarely stop
REPORT = "stages.json"
TEXT = "Translate for me, what is a surprise!"


def write_reference(path: Path, seconds: float = 3.3, rate: int = 22050) -> None:
    frames = bytearray()
    for i in range(int(seconds * rate)):
        sample = 0.3 * math.sin(2 * math.pi * 220 * i / rate) + 0.1 * math.sin(2 * math.pi * 1330 * i / rate)
        frames += int(sample * 32767).to_bytes(2, "little", signed=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))


def build_checkpoints(clone: Path, ckpt: Path) -> dict:
    """Random-weight versions of every file IndexTTS2(model_dir=ckpt) reads; returns the config used."""
    import safetensors.torch
    import sentencepiece
    import torch
    from indextts.codec.maskgct_codec import build_semantic_codec
    from indextts.gpt.model_v2 import UnifiedVoice
    from indextts.s2mel.modules.bigvgan import bigvgan
    from indextts.s2mel.modules.campplus.DTDNN import CAMPPlus
    from indextts.s2mel.modules.commons import MyModel
    from omegaconf import OmegaConf
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    torch.manual_seed(0)
    cfg = OmegaConf.load(clone / "checkpoints" / "config.yaml")
    cfg.gpt.layers = GPT_LAYERS
    cfg.gpt.condition_module.num_blocks = CONFORMER_BLOCKS
    cfg.gpt.emo_condition_module.num_blocks = CONFORMER_BLOCKS
    ckpt.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, ckpt / "config.yaml")

    torch.save(UnifiedVoice(**cfg.gpt).state_dict(), ckpt / cfg.gpt_checkpoint)
    s2mel = MyModel(cfg.s2mel, use_gpt_latent=True)
    torch.save({"net": {k: m.state_dict() for k, m in s2mel.models.items()}}, ckpt / cfg.s2mel_checkpoint)
    torch.save({"mean": torch.zeros(1024), "var": torch.ones(1024)}, ckpt / cfg.w2v_stat)
    rows = sum(cfg.emo_num)
    torch.save(torch.randn(rows, cfg.gpt.model_dim), ckpt / cfg.emo_matrix)
    torch.save(torch.randn(rows, 192), ckpt / cfg.spk_matrix)  # compared with CAMPPlus's 192-d style
    corpus = ckpt / "bpe_corpus.txt"
    corpus.write_text("\n".join([TEXT.upper(), TEXT.lower(), "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"] * 20))
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(ckpt / Path(cfg.dataset["bpe_model"]).stem), vocab_size=60,
        model_type="bpe", bos_id=0, eos_id=1, unk_id=2, pad_id=-1, character_coverage=1.0)

    aux = ckpt / "hf_cache"
    w2v = aux / "w2v-bert-2.0"
    SeamlessM4TFeatureExtractor().save_pretrained(w2v)
    Wav2Vec2BertModel(Wav2Vec2BertConfig(**W2V_BERT)).save_pretrained(w2v)
    safetensors.torch.save_model(build_semantic_codec(cfg.semantic_codec), str(aux / "semantic_codec_model.safetensors"))
    torch.save(CAMPPlus(feat_dim=80, embedding_size=192).state_dict(), aux / "campplus_cn_common.bin")
    voc = json.loads((clone / "indextts/s2mel/modules/bigvgan/config.json").read_text())
    voc["upsample_initial_channel"] = BIGVGAN_CHANNELS
    (aux / "bigvgan").mkdir(parents=True, exist_ok=True)
    (aux / "bigvgan" / "config.json").write_text(json.dumps(voc))
    generator = bigvgan.BigVGAN(bigvgan.load_hparams_from_json(aux / "bigvgan" / "config.json"))
    torch.save({"generator": generator.state_dict()}, aux / "bigvgan" / "bigvgan_generator.pt")
    return OmegaConf.to_container(cfg)


def describe(value):
    """Shape and dtype of every tensor in ``value`` (tuples and lists kept in order)."""
    import torch

    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype).replace("torch.", "")}
    if isinstance(value, (tuple, list)):
        return [describe(v) for v in value]
    return repr(type(value))


def save_without_torchcodec() -> None:
    """torchaudio.save as 16-bit PCM through soundfile.

    Only because this environment has torch 2.13.0 (CPU): PyPI's newest torchaudio, 2.11.1, saves through
    TorchCodec, which is not installed here; the torchaudio 2.8 that upstream's uv sync installs saves itself.
    """
    import soundfile
    import torchaudio

    def save(path, wav, sample_rate, **_):
        soundfile.write(str(path), wav.detach().cpu().numpy().T, sample_rate, subtype="PCM_16")

    torchaudio.save = save


def record_outputs(records: list) -> None:
    """Wrap, at class level, the upstream methods the glue wraps per instance, to note what they return."""
    from indextts.gpt.model_v2 import UnifiedVoice
    from indextts.s2mel.modules.bigvgan.bigvgan import BigVGAN
    from indextts.s2mel.modules.flow_matching import BASECFM

    def wrap(cls, name, label, with_steps=False):
        method = getattr(cls, name)

        @functools.wraps(method)
        def recorder(self, *args, **kwargs):
            out = method(self, *args, **kwargs)
            row = {"stage": label, "out": describe(out)}
            if with_steps:
                row["n_timesteps"] = args[5] if len(args) > 5 else kwargs.get("n_timesteps")
                row["mu"] = describe(args[0])
                row["prompt"] = describe(args[2])
            records.append(row)
            return out

        setattr(cls, name, recorder)

    wrap(UnifiedVoice, "inference_speech", "gpt.inference_speech")
    wrap(UnifiedVoice, "forward", "gpt.forward")
    wrap(BASECFM, "inference", "s2mel.cfm.inference", with_steps=True)
    wrap(BigVGAN, "forward", "bigvgan.forward")


def main(argv=None) -> int:
    clone, work = (Path(a).resolve() for a in (argv or sys.argv[1:]))
    sys.path.insert(0, str(clone))  # uv sync installs indextts from the clone; here it is imported from it
    from colab_tts.deploy import systems, worker

    ckpt = work / "checkpoints"
    cfg = build_checkpoints(clone, ckpt)
    ref = work / "ref.wav"
    write_reference(ref)
    plan = systems.plan("indextts2", {
        "cfg_path": str(ckpt / "config.yaml"), "model_dir": str(ckpt), "device": "cpu",
        "spk_audio_prompt": str(ref), "text": TEXT, "diffusion_steps": DIFFUSION_STEPS,
    }, workdir=str(work), out=str(work / "out"))
    plan["clone"] = str(clone)
    plan["calls"][1]["kwargs"]["max_mel_tokens"] = MAX_MEL_TOKENS
    records: list = []
    record_outputs(records)
    save_without_torchcodec()
    result = worker.run_plan(plan)
    report = json.dumps({"result": result, "records": records, "config": {
        "gpt_layers": cfg["gpt"]["layers"], "model_dim": cfg["gpt"]["model_dim"],
        "n_mels": cfg["s2mel"]["preprocess_params"]["spect_params"]["n_mels"],
        "stop_mel_token": cfg["gpt"]["stop_mel_token"], "max_mel_tokens": MAX_MEL_TOKENS,
        "diffusion_steps": DIFFUSION_STEPS}})
    (work / REPORT).write_text(report)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
