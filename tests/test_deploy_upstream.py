"""Upstream's own code run through our deploy glue, on CPU, with random weights (marker ``upstream``).

Each test needs the system's Python environment and an upstream checkout at the commit ``systems.py``
pins, named by two variables (skipped without them, so ``make test`` skips these cleanly):

- ``COLAB_TTS_UPSTREAM_VENV_INDEXTTS2`` / ``COLAB_TTS_UPSTREAM_CLONE_INDEXTTS2``: index-tts/index-tts @ee40fa7,
  its ``pyproject.toml`` dependencies installed, plus ``checkpoints/config.yaml`` (upstream's, which comes with
  the IndexTeam/IndexTTS-2 weights; untracked at that commit, tracked until index-tts commit 2a5ca75).
- ``COLAB_TTS_UPSTREAM_VENV_METAVOICE`` / ``COLAB_TTS_UPSTREAM_CLONE_METAVOICE``: metavoiceio/metavoice-src
  @de3fa21 with its ``requirements.txt``.

The environments these tests were run in used torch 2.13.0 (CPU build) instead of upstream's pins (torch 2.8
for index-tts, 2.1/2.2.1 for metavoice-src): PyPI's builds of those are multi-GB CUDA wheels, and CI machines
have no GPU. Each test starts a helper under ``tests/upstream_stages/`` in that environment; the helper builds a
checkpoint folder with random weights from upstream's own classes and configs (sizes it shrinks are listed at
its top), runs the plan through ``colab_tts.deploy.worker.run_plan`` as the runner's worker does, and reports
the shape and dtype every stage returned. Nothing of upstream's is in this repository.

How the environments were made (Python 3.11): ``python -m venv``, ``pip install torch==2.13.0``, then
- index-tts: its ``pyproject.toml`` dependencies with pip (torch and torchaudio left out; the extras deepspeed,
  flash-attn and the nvidia-* runtimes are GPU-only, gradio is the web UI), and ``torchaudio==2.11.1`` (PyPI has
  no torchaudio for torch 2.13);
- metavoice-src: ``requirements.txt`` with ``--no-deps`` less torch/torchaudio, ``posthog==3.5.0
  python-dotenv==1.0.1`` (pyproject.toml, missing from requirements.txt), and ``torchaudio==2.2.1 --no-deps``
  (deepfilternet 0.5.6 imports ``torchaudio.backend``, gone from torchaudio 2.9 on); requirements.txt's
  ``xformers==0.0.22.post7`` too (audiocraft imports ``xformers.ops``; its CUDA extension does not load, the
  Python part imports).
PyPI's torchaudio wheels are CUDA builds whose ``torchaudio/lib/*.so`` do not load beside CPU torch 2.13
("libc10_cuda.so: cannot open shared object file"): they were moved out of ``torchaudio/lib`` so that torchaudio
imports without its C++ extension (resampling, kaldi fbank and mel transforms are Python).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from colab_tts.deploy.indextts2 import STAGE_METHODS
from colab_tts.lessons import metavoice as mv
from colab_tts.models import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "tests" / "upstream_stages"

pytestmark = [pytest.mark.upstream, pytest.mark.slow]


def upstream(system: str) -> tuple[Path, Path]:
    names = [f"COLAB_TTS_UPSTREAM_{kind}_{system}" for kind in ("VENV", "CLONE")]
    paths = [os.environ.get(name) for name in names]
    if not all(paths):
        pytest.skip(f"set {' and '.join(names)} to run upstream {system.lower()} on CPU")
    venv, clone = (Path(p) for p in paths)
    python = venv / "bin" / "python"
    for path in (python, clone):
        if not path.exists():
            pytest.fail(f"{path} does not exist (from {names})")
    return python, clone


def run_helper(python: Path, script: str, clone: Path, work: Path) -> dict:
    done = subprocess.run([str(python), str(HELPERS / script), str(clone), str(work)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=3600)
    report = work / "stages.json"
    if not report.exists():
        pytest.fail(f"{script} wrote no report (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    data = json.loads(report.read_text())
    assert data["result"]["ok"], data["result"].get("traceback", data["result"])
    return data


def test_indextts2_gpt_and_s2mel_run_through_the_worker(tmp_path):
    python, clone = upstream("INDEXTTS2")
    data = run_helper(python, "indextts2_random.py", clone, tmp_path)
    result, cfg = data["result"], data["config"]
    stages = {row["stage"]: row for row in data["records"]}
    assert result["device"] == "cpu"
    assert [c["target"] for c in result["calls"]] == ["IndexTTS2", "IndexTTS2.infer"]

    # GPT: sampled mel codes (int64, at most max_mel_tokens), then the latent forward over the kept codes
    codes, conditioning = stages["gpt.inference_speech"]["out"]
    assert codes["dtype"] == "int64" and codes["shape"][0] == 1
    assert 1 <= codes["shape"][1] <= cfg["max_mel_tokens"]
    assert conditioning["dtype"] == "float32" and conditioning["shape"][-1] == cfg["model_dim"]
    latent = stages["gpt.forward"]["out"]
    assert latent["dtype"] == "float32"
    assert latent["shape"][0] == 1 and latent["shape"][1] <= codes["shape"][1]
    assert latent["shape"][2] == cfg["model_dim"]

    # s2mel: the flow-matching decoder ran with our diffusion_steps (upstream hard-codes 25) and returned
    # an 80-band mel over the prompt's frames plus the generated ones
    cfm = stages["s2mel.cfm.inference"]
    assert cfm["n_timesteps"] == cfg["diffusion_steps"] != 25
    mel, mu, prompt = cfm["out"], cfm["mu"], cfm["prompt"]
    assert mel["dtype"] == "float32"
    assert mel["shape"] == [1, cfg["n_mels"], mu["shape"][1]]
    assert prompt["shape"][:2] == [1, cfg["n_mels"]] and prompt["shape"][2] < mel["shape"][2]

    # the vocoder gets the generated frames only; the wav upstream wrote is what it returned
    generated = mel["shape"][2] - prompt["shape"][2]
    wav = stages["bigvgan.forward"]["out"]
    assert wav["dtype"] == "float32" and wav["shape"][:2] == [1, 1] and wav["shape"][2] % generated == 0
    audio = result["calls"][1]["audio"]
    assert audio["sample_rate"] == 22050
    assert audio["seconds"] == pytest.approx(wav["shape"][2] / 22050, abs=1e-3)

    # the glue's per-stage records: every wrapped stage that infer reached, and the weights by stage
    timed = {row["stage"] for row in result["stages"] if "seconds" in row}
    assert {"gpt", "semantic_model (w2v-BERT 2.0)", "campplus", "s2mel cfm", "bigvgan"} <= timed
    sizes = next(row["sizes"] for row in result["stages"] if row["stage"] == "weights by stage (GiB)")
    assert set(sizes) == set(STAGE_METHODS) and all(v > 0 for v in sizes.values())


def test_metavoice_first_and_second_stage_run_in_float16_through_the_worker(tmp_path):
    python, clone = upstream("METAVOICE")
    data = run_helper(python, "metavoice_random.py", clone, tmp_path)
    result, cfg = data["result"], data["config"]
    first, second = cfg["first_stage"], cfg["second_stage"]
    rows = data["records"]
    assert [c["target"] for c in result["calls"]] == ["TTS", "TTS.synthesise"]
    assert result["calls"][1]["audio"]["sample_rate"] == 24000

    # the glue's patch: _load_model's hard-coded bfloat16 cast becomes float16 (bfloat16 without it)
    assert {"stage": "patch", "what": "fam.llm.fast_inference_utils: torch.bfloat16 -> float16"} in result["stages"]
    built = next(r for r in rows if r["stage"] == "first stage built")
    assert built["precision"] == "float16" and built["weight_dtypes"] == ["float16"]
    # upstream's own Transformer, counted, is what both of our counts give at its shape (notebook 02's MetaVoice
    # section counts with the lesson, the fit table with ModelSpec): pos_embeddings and speaker_cond_pos included
    shape = dict(mv.FIRST_STAGE, **first, vocab_size=built["vocab_size"], speaker_emb_dim=built["speaker_emb_dim"])
    assert built["params"] == mv.first_stage_params(shape)["total"]
    head_dim = first["dim"] // first["n_head"]
    spec = ModelSpec.known("metavoice-1b").with_(
        num_layers=first["n_layer"], hidden_size=first["dim"], num_attention_heads=first["n_head"],
        num_kv_heads=first["n_head"], head_dim=head_dim, intermediate_size=mv.swiglu_hidden(first["dim"]),
        max_position_embeddings=first["block_size"], vocab_size=built["vocab_size"])
    assert built["params"] == spec.num_params

    # first stage: build_model's 200-token warm-up, then main's generation, int32 token ids up to block_size
    warm_up, generation = [r for r in rows if r["stage"] == "first stage generate"]
    assert warm_up["out"]["shape"][0] == warm_up["in"]["shape"][0] + 200
    assert generation["out"]["dtype"] == "int32"
    assert generation["in"]["shape"][0] < generation["out"]["shape"][0] <= first["block_size"]

    # second stage: the two first-stage codebooks (with the text) in, the six remaining codebooks out
    stage2 = next(r for r in rows if r["stage"] == "second stage generate")
    assert stage2["in"] == {"shape": [1, 2, second["block_size"]], "dtype": "int64"}
    assert stage2["out"] == {"shape": [1, len(second["target_vocab_sizes"]), second["block_size"]], "dtype": "int64"}
    decoded = next(r for r in rows if r["stage"] == "second stage tokens to decode")
    assert decoded["hierarchies"] == 8 and decoded["lengths"] == [second["block_size"]]

    # the plan's environment turned upstream's telemetry off; every stage the glue wraps was timed
    assert next(r for r in rows if r["stage"] == "telemetry")["disabled"] is True
    timed = {r["stage"] for r in result["stages"] if "seconds" in r}
    assert {"first stage GPT + speaker encoder (build_model, compile, warm-up)", "first-stage generation (main)",
            "second stage (non-causal transformer)", "second stage + multi-band diffusion (decode)"} <= timed
