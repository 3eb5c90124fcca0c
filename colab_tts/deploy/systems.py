"""The three upstream systems the runner deploys, and the plan it follows for each.

A *plan* is plain JSON: which upstream repository at which commit, which Python, the install
commands, the weights, and the upstream calls with exactly the keyword arguments the runner passes
(``"$ref"`` names an object an earlier call made). ``--dry-run`` prints it; the worker inside the
system's environment executes the same plan, so what is printed is what runs.

Call names and keywords were read at the pinned commits (``colab_tts/data/deploy/upstream_signatures.json``
records each signature with its repo, path and commit; ``tests/test_deploy.py`` checks every kwarg
against it):

- GPT-SoVITS: ``TTS_Config(configs)`` / ``TTS(configs)`` / ``TTS.run(inputs)`` in
  RVC-Boss/GPT-SoVITS GPT_SoVITS/TTS_infer_pack/TTS.py @48b1a01 (``run`` is a generator of
  ``(sr, int16 audio)`` and takes one dict; its keys are the kwargs here).
- IndexTTS-2: ``IndexTTS2(...)`` / ``IndexTTS2.infer(...)`` in index-tts/index-tts
  indextts/infer_v2.py @ee40fa7.
- MetaVoice-1B: ``TTS(...)`` / ``TTS.synthesise(...)`` in metavoiceio/metavoice-src
  fam/llm/fast_inference.py @de3fa21.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from dataclasses import dataclass, field

from .._checks import choose
from . import setting_rules

# Install steps are argument lists, never shell text: a path with a space, a quote or a ``$`` (Colab's
# "/content/drive/My Drive/...") stays one argument. Words in braces are filled in by plan(); the word
# "{torch_pins}" becomes one argument per pin. The env clears UV_CONSTRAINT / UV_BUILD_CONSTRAINT
# (github.com/googlecolab/colabtools/issues/5237) and every other uv setting that changes what is installed,
# config files included, for every step (env.command_env).
COLAB_UV_FIX = "UV_NO_CONFIG=1 UV_CONSTRAINT= UV_BUILD_CONSTRAINT="  # how the dry run shows that
TORCH_CU128 = "https://download.pytorch.org/whl/cu128"
UV_PIP_INSTALL = ("uv", "pip", "install", "--python", "{py}")
# everything else comes from the system's committed lock (colab_tts/deploy/locks/SYSTEM.txt), exactly: plan()
# adds --require-hashes (the lock records every file's sha256) and --build-constraint SYSTEM.build.txt (the
# pinned build dependencies of the packages that install from sdists)
LOCKED = {"argv": (*UV_PIP_INSTALL, "--no-deps", "-r", "{lock}"), "lock": True}
PLATFORM_SHOWN = "Linux x86-64 (manylinux_2_28)"
# measured: gpt-sovits's 8 sdists, installed with --require-hashes and its build constraint into a Python 3.10.13
# venv by uv 0.13.9, built in 2 min 19 s on this project's 2-core CPU machine
COMPILE_COST = ("opencc and pyopenjtalk compile C++ (g++ and cmake: Colab's image has build-essential and cmake, "
                "googlecolab/backend-info apt-list-gpu.txt @a724079); the 8 built in 2 min 19 s on 2 CPU cores")
# RVC-Boss/GPT-SoVITS install.sh @48b1a01 (--source HF) downloads these two archives from here
GSV_DATA = "https://huggingface.co/XXXXRT/GPT-SoVITS-Pretrained/resolve/main"


# The reference voice: a public clip with its transcript, padded with silence to the 3 s GPT-SoVITS needs.
REFERENCE = {
    "url": "https://raw.githubusercontent.com/metavoiceio/metavoice-src/"
           "de3fa211ac4621e03a5f990651aeecc64da418f5/data/audio.wav",
    "transcript": "Please call Stella.",  # metavoiceio/metavoice-src data/caption.txt @de3fa21
    # the blob data/audio.wav @de3fa21 (git cat-file -s; git show | sha256sum): a cut download is refused
    "size": 266762, "sha256": "a535aa63a5a4e4960272b7e3f61b5902bdc9d48fb53c31f5bf106c808af0b0db",
    "file": "ref.wav", "pad_to_seconds": 3.3,
}


@dataclass(frozen=True)
class Weight:
    """A file or folder the system loads, from a public hub repository, placed under the clone."""

    hub_repo: str
    patterns: tuple[str, ...]  # allow_patterns for snapshot_download ("*" = the whole repo)
    local_dir: str  # relative to the upstream clone
    note: str = ""


@dataclass(frozen=True)
class Lock:
    """How the system's lock (``colab_tts/deploy/locks/SYSTEM.txt``) is resolved: ``tools/deploy_locks.py``
    runs ``uv pip compile`` on upstream's files at the pinned commit with these; ``lockfile.check_lock``
    fails when the committed lock no longer matches them."""

    inputs: tuple[str, ...]  # upstream's requirement files, relative to the clone
    pins: tuple[str, ...] = ()  # the runner's own requirements (uv constraints): the lock must satisfy them
    overrides: tuple[str, ...] = ()  # replace upstream's own pins (uv --overrides); the lock must satisfy them
    excludes: tuple[str, ...] = ()  # left out of the resolution with their own dependencies (uv --excludes)
    torch_index: str | None = None  # these pins' torch packages are installed from here first, as pinned
    upstream_lock: bool = False  # constrained to upstream's own uv.lock (exported; local +cuXXX dropped)
    no_sources: bool = False  # ignore upstream's [tool.uv.sources] (an index this registry cannot reach)
    why: tuple[str, ...] = ()  # the decisions above, written into the lock's header


@dataclass(frozen=True)
class System:
    name: str
    repo: str  # owner/name on GitHub
    commit: str  # 40-hex, the commit every call name and kwarg was checked against
    python: str  # the interpreter upstream asks for
    python_source: str  # where upstream says so
    install: tuple[dict, ...]  # steps ({"argv": (...)} or {"archive": url, ...}); {env} {py} {repo} {root} filled in
    weights: tuple[Weight, ...]
    defaults: dict  # the notebook's default settings
    import_paths: tuple[str, ...] = ()  # folders (relative to the clone) put on sys.path
    environment: dict = field(default_factory=dict)  # variables the worker runs with
    notes: tuple[str, ...] = ()
    lock: Lock | None = None
    oom_advice: tuple[str, ...] = ()  # what the worker suggests when the GPU runs out of memory, best first

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}"


def _gpt_sovits_calls(s: dict, out: str) -> list[dict]:
    base = "GPT_SoVITS/pretrained_models/"
    config = {"custom": {
        "device": s["device"], "is_half": s["is_half"], "version": "v2",
        "t2s_weights_path": base + "gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt",
        "vits_weights_path": base + "gsv-v2final-pretrained/s2G2333k.pth",
        "bert_base_path": base + "chinese-roberta-wwm-ext-large",
        "cnhuhbert_base_path": base + "chinese-hubert-base",
    }}
    inputs = {key: s[key] for key in ("text", "text_lang", "ref_audio_path", "prompt_text", "prompt_lang",
                                      "top_k", "seed")}
    inputs["ref_audio_path"] = inputs["ref_audio_path"] or f"{out}/{REFERENCE['file']}"
    calls = [{"target": "TTS_Config", "kwargs": {"configs": config}},
             {"target": "TTS", "kwargs": {"configs": {"$ref": "TTS_Config"}}}]
    for variant in s["variants"]:
        label = variant["label"]
        kwargs = {**inputs, **{k: v for k, v in variant.items() if k != "label"}}
        calls.append({"target": "TTS.run", "label": label, "kwargs": kwargs, "pass_as": "inputs"})
    return calls


def _indextts2_calls(s: dict, out: str) -> list[dict]:
    ctor = {key: s[key] for key in ("cfg_path", "model_dir", "use_fp16", "device", "use_cuda_kernel",
                                    "use_deepspeed", "use_qwen_emo")}
    infer = {"spk_audio_prompt": s["spk_audio_prompt"] or f"{out}/{REFERENCE['file']}", "text": s["text"],
             "output_path": f"{out}/indextts2.wav",
             "max_text_tokens_per_segment": s["max_text_tokens_per_segment"], "verbose": False}
    return [{"target": "IndexTTS2", "kwargs": ctor}, {"target": "IndexTTS2.infer", "kwargs": infer}]


def _metavoice_calls(s: dict, out: str) -> list[dict]:
    ctor = {"model_name": s["model_name"], "seed": s["seed"], "output_dir": out,
            "quantisation_mode": s["quantisation_mode"]}
    synth = {key: s[key] for key in ("text", "spk_ref_path", "top_p", "guidance_scale", "temperature")}
    return [{"target": "TTS", "kwargs": ctor}, {"target": "TTS.synthesise", "kwargs": synth}]


GPT_SOVITS = System(
    name="gpt-sovits",
    repo="RVC-Boss/GPT-SoVITS",
    commit="48b1a0169a28582a8984402f82cf438d3bfa6aca",
    python="3.10",
    python_source="RVC-Boss/GPT-SoVITS Colab-Inference.ipynb @48b1a01 (conda create -n GPTSoVITS python=3.10)",
    install=(
        # the CUDA 12.8 builds first, at the lock's versions; the lock (--no-deps) then keeps them: its
        # torch==2.11.0 is satisfied by 2.11.0+cu128 and it holds none of PyPI's CUDA 13 runtime packages
        {"argv": (*UV_PIP_INSTALL, "{torch_pins}", "--index-url", TORCH_CU128)},
        LOCKED,
        # the data install.sh fetches after pip (nltk corpora for English g2p, the OpenJTalk dictionary into
        # the installed pyopenjtalk package's folder)
        {"archive": f"{GSV_DATA}/nltk_data.zip", "into": "{env}"},
        {"archive": f"{GSV_DATA}/open_jtalk_dic_utf_8-1.11.tar.gz", "into_module": "pyopenjtalk"},
    ),
    weights=(
        Weight("lj1995/GPT-SoVITS", ("gsv-v2final-pretrained/*", "chinese-roberta-wwm-ext-large/*",
                                     "chinese-hubert-base/*"), "GPT_SoVITS/pretrained_models",
               "v2 GPT (s1) and SoVITS (s2) weights, BERT and HuBERT: the files configs/tts_infer.yaml names"),
    ),
    defaults={
        "device": "cuda", "is_half": True,
        "text": "Speed changes nothing but the time it takes: the same tokens, the same voice.",
        "text_lang": "en", "ref_audio_path": None, "prompt_text": REFERENCE["transcript"], "prompt_lang": "en",
        "top_k": 15, "seed": 0,
        # first upstream's defaults, then its own speed switches (TTS.run keys), side by side
        "variants": [
            {"label": "upstream defaults"},
            {"label": "naive decode (parallel_infer=False)", "parallel_infer": False},
            {"label": "batched (batch_size=8, split_bucket=True)", "batch_size": 8, "split_bucket": True},
            {"label": "greedy (top_k=1, naive): the reference for our decoder", "top_k": 1,
             "parallel_infer": False},
        ],
        "compare_greedy": True,  # same front-end inputs through colab_tts.t2s, greedy tokens compared
        "greedy_max_new_tokens": 1500,  # upstream's cap (RVC-Boss/GPT-SoVITS GPT_SoVITS/AR/models/t2s_model.py @48b1a01)
    },
    import_paths=(".", "GPT_SoVITS"),  # as api_v2.py does
    lock=Lock(
        inputs=("requirements.txt", "extra-req.txt"),
        # torchcodec: install.sh @48b1a01 installs it beside torch (torchaudio >= 2.9 loads audio through it);
        # 0.11 is torch 2.11's (meta-pytorch/torchcodec PR #1328 tests release/0.11 on torch 2.11) and the last
        # with CUDA 12.8 builds (unslothai/unsloth PR #7474: "0.12 dropped CUDA 12.8")
        pins=("torch==2.11.0", "torchaudio==2.11.0", "torchcodec==0.11.0", "numpy<2.0", "huggingface_hub"),
        excludes=("cuda-bindings", "cuda-toolkit", "nvidia-cudnn-cu13", "nvidia-cusparselt-cu13",
                  "nvidia-nccl-cu13", "nvidia-nvshmem-cu13", "onnxruntime"),
        torch_index=TORCH_CU128,
        why=("torch 2.11.0 on PyPI is the CUDA 13.0 build (a 12.8 driver refuses it); the runner installs "
             "torch, torchaudio, torchcodec from the cu128 index at these versions first. The PyPI wheel's "
             "CUDA 13 runtime (cuda-toolkit, cuda-bindings, nvidia-*-cu13) is excluded: the cu128 wheel brings "
             "its own. torch==2.11.0 in the lock is satisfied by the installed 2.11.0+cu128 (PEP 440), so "
             "installing the lock with --no-deps keeps it",
             "onnxruntime (CPU) is excluded: upstream installs faster-whisper with --no-deps "
             "(install.sh @48b1a01); onnxruntime-gpu from requirements.txt provides the module",
             "the cu128 index's torch, torchaudio, torchcodec (and the nvidia-*-cu12 libraries they pull) are "
             "installed by version, not checked by hash: this lock's hashes are PyPI's files, and under "
             "--require-hashes uv keeps an installed 2.11.0+cu128 that satisfies torch==2.11.0 without "
             "checking it (uv 0.13.9, tried with a local-version wheel)"),
    ),
    oom_advice=("is_half=True (float16 halves the weights and activations)",
                "fewer parallel segments: a smaller batch_size in the variants",
                "a shorter text (fewer segments per call)"),
    notes=("TTS.run refuses a reference outside 3-10 s (RVC-Boss/GPT-SoVITS GPT_SoVITS/TTS_infer_pack/TTS.py @48b1a01 line 815): the 2.8 s clip is padded with silence",),
)

INDEXTTS2 = System(
    name="indextts2",
    repo="index-tts/index-tts",
    commit="ee40fa7d6c6b8a2c7f06105f9f1e65775b74868c",
    python="3.11",
    python_source="index-tts/index-tts pyproject.toml @ee40fa7 (requires-python >=3.10,<3.12; .python-version 3.11.13)",
    install=(
        LOCKED,
        {"argv": (*UV_PIP_INSTALL, "--no-deps", "-e", "{repo}")},
    ),
    weights=(
        Weight("IndexTeam/IndexTTS-2", ("*",), "checkpoints",
               "config.yaml, bpe.model, gpt.pth, s2mel.pth, wav2vec2bert_stats.pt, feat1.pt, feat2.pt, "
               "qwen0.6bemo4-merge/; the auxiliary models (w2v-BERT 2.0, MaskGCT codec, CAMPPlus, BigVGAN) "
               "are fetched by index-tts/index-tts indextts/utils/model_download.py @ee40fa7 on first load"),
    ),
    defaults={
        "cfg_path": "checkpoints/config.yaml", "model_dir": "checkpoints", "use_fp16": True, "device": "cuda:0",
        "use_cuda_kernel": False, "use_deepspeed": False, "use_qwen_emo": False,
        "spk_audio_prompt": None, "text": "Translate for me, what is a surprise!",
        "max_text_tokens_per_segment": 120,
        # the technique under study: an 8 GB card emulated by capping the allocator, idle stages offloaded
        "memory_cap_gib": 8.0, "offload_idle_stages": True, "diffusion_steps": 25,
    },
    lock=Lock(
        inputs=("pyproject.toml",),
        pins=("torch==2.8.0", "torchaudio==2.8.0", "huggingface_hub"),
        upstream_lock=True, no_sources=True,
        why=("resolved from pyproject.toml without extras, constrained to upstream's uv.lock @ee40fa7: the "
             "runner calls IndexTTS2 with use_deepspeed=False and without use_accel, so neither deepspeed nor "
             "flash-attn (FlashAttention-2 needs Ampere or newer: Dao-AILab/flash-attention README) is "
             "installed, nor the webui's gradio",
             "upstream takes torch 2.8.0+cu128 from download.pytorch.org; torch 2.8.0 on PyPI is the same "
             "CUDA 12.8 build (its nvidia-cuda-runtime-cu12==12.8.90 here), so this lock comes from PyPI alone"),
    ),
    oom_advice=("use_fp16=True (halves the GPT)", "offload_idle_stages=True (one stage on the GPU at a time)",
                "a smaller max_text_tokens_per_segment (shorter segments)", "fewer diffusion_steps"),
    notes=("diffusion_steps = 25 is hard-coded in index-tts/index-tts indextts/infer_v2.py @ee40fa7 (lines 656-657); the runner changes it by "
           "wrapping s2mel.models['cfm'].inference and replacing its n_timesteps argument",
           "use_fp16 halves only the GPT; s2mel runs with autocast off"),
)

METAVOICE = System(
    name="metavoice",
    repo="metavoiceio/metavoice-src",
    commit="de3fa211ac4621e03a5f990651aeecc64da418f5",
    python="3.11",
    python_source="metavoiceio/metavoice-src README.md @de3fa21 (Python >=3.10,<3.12; torch==2.2.1)",
    install=(
        LOCKED,
        {"argv": (*UV_PIP_INSTALL, "--no-deps", "-e", "{repo}")},
    ),
    weights=(
        Weight("metavoiceio/metavoice-1B-v0.1", ("*",), "",
               "first_stage.pt, second_stage.pt, speaker_encoder.pt: TTS() fetches them itself "
               "(snapshot_download); multi-band diffusion and DeepFilterNet weights come with audiocraft/df"),
    ),
    defaults={
        "model_name": "metavoiceio/metavoice-1B-v0.1", "seed": 1337, "quantisation_mode": None,
        "text": "This is a demo of text to speech by MetaVoice-1B, an open-source foundational audio model.",
        "spk_ref_path": "assets/bria.mp3", "top_p": 0.95, "guidance_scale": 3.0, "temperature": 1.0,
        "float16_on_turing": True,
    },
    lock=Lock(
        inputs=("requirements.txt",),
        # fam/telemetry/posthog.py (imported by fam.llm.fast_inference) imports dotenv and posthog: upstream's
        # pyproject.toml lists both, its requirements.txt does not (versions: its poetry.lock)
        pins=("huggingface_hub", "posthog==3.5.0", "python-dotenv==1.0.1"),
        overrides=("torch==2.2.1", "torchaudio==2.2.1", "xformers==0.0.25"),
        why=("upstream's requirements.txt pins torch==2.1.0 (audiocraft 1.2.0 asks for it too) and its README "
             "then installs torch==2.2.1 over it ('pip's dependency resolver will complain'): the overrides do "
             "the same",
             "xformers: upstream's 0.0.22.post7 depends on torch==2.1.0, so it cannot resolve beside torch 2.2.1 "
             "(uv: 'Because xformers==0.0.22.post7 depends on torch==2.1.0 ... your requirements are "
             "unsatisfiable'); 0.0.24 wants torch 2.2.0, 0.0.25.post1 torch 2.2.2; 0.0.25 depends on "
             "torch==2.2.1 and is taken. It cannot be dropped: audiocraft/modules/transformer.py imports "
             "xformers, and fam/llm/decoders.py imports audiocraft.models (MultiBandDiffusion), which loads it",
             "torch 2.2.1 on PyPI is the CUDA 12.1 build, which runs on Colab's 12.8 driver"),
    ),
    oom_advice=("quantisation_mode='int8' (smaller first-stage weights; slower, upstream says)",
                "a shorter text", "restart the runtime so no other process holds GPU memory"),
    # metavoiceio/metavoice-src fam/telemetry/posthog.py @de3fa21 tests bool(os.getenv("ANONYMIZED_TELEMETRY", True)): only "" turns it off
    environment={"ANONYMIZED_TELEMETRY": ""},
    notes=("metavoiceio/metavoice-src fam/llm/utils.py @de3fa21 get_default_dtype picks float16 on CC <= 7.x, "
           "but fam/llm/fast_inference_utils.py _load_model casts the first stage to torch.bfloat16 whatever it "
           "picked; on a T4 torch.compile (max-autotune) then fails in ptxas: '.bf16 requires sm_80' "
           "(metavoice-src issue #128). The worker swaps that module's bfloat16 for float16 on GPUs without bf16 "
           "(a patch from outside, no fork); checked on CPU with a 1-layer config: upstream's _load_model then "
           "builds float16 weights (bfloat16 without the patch). Not yet run on a T4",
           "quantisation_mode='int4': fam/llm/fast_quantize.py packs for torch's _weight_int4pack_mm with "
           "bfloat16 scales (asserted there), so it is not offered below CC 8.0; 'int8' is slower than fp16 by "
           "upstream's own warning and its load peak includes the 2-byte model (cast before quantising)"),
)


SYSTEMS: dict[str, System] = {s.name: s for s in (GPT_SOVITS, INDEXTTS2, METAVOICE)}
_CALLS = {"gpt-sovits": _gpt_sovits_calls, "indextts2": _indextts2_calls, "metavoice": _metavoice_calls}


def get_system(name) -> System:
    """A system by name ("gpt-sovits", "indextts2", "metavoice"), with one clear error otherwise."""
    return SYSTEMS[choose(name, SYSTEMS, "system")]


def settings(system, overrides: dict | None = None) -> dict:
    """The notebook's defaults for ``system`` with ``overrides`` applied (unknown keys rejected)."""
    spec = get_system(system)
    merged = copy.deepcopy(spec.defaults)
    if overrides is not None and not isinstance(overrides, dict):
        raise TypeError(f"overrides must be a dict of settings such as {{'use_fp16': False}}, got "
                        f"{type(overrides).__name__}")
    for key, value in (overrides or {}).items():
        if not isinstance(key, str) or key not in merged:
            raise ValueError(f"{spec.name} has no setting {key!r}; settings: {', '.join(sorted(merged))}")
        merged[key] = value
    return setting_rules.check(spec.name, merged, spec.defaults)  # types and ranges: setting_rules


def clone_step(url: str, dest: str) -> dict:
    """Clone into ``DEST.partial`` and rename it when complete (``env.run_step``): an interrupted clone leaves
    only the ``.partial`` folder, which the next run deletes, never a ``DEST`` that looks cloned."""
    return {"clone": url, "dest": dest, "creates": [f"{dest}/.git"]}


def shown(step: dict) -> str:
    """How the dry run shows a step: a command a shell would read as the same argument list."""
    if "argv" in step:
        words = shlex.join(step["argv"])
        return f"{COLAB_UV_FIX} {words}" if step["argv"][0] == "uv" else words
    if "clone" in step:
        partial = step["dest"] + ".partial"
        return (f"{shlex.join(['git', 'clone', '--', step['clone'], partial])} && "
                f"{shlex.join(['mv', '-T', partial, step['dest']])}")
    into = shlex.quote(step["into"]) if "into" in step else f"the folder of the installed {step['into_module']}"
    return f"download {shlex.quote(step['archive'])} and extract it into {into}"


def _fill(template: dict, fill: dict) -> dict:
    step = {}
    for key, value in template.items():
        if key == "argv":
            words = []
            for word in value:
                words += fill["torch_pins"] if word == "{torch_pins}" else [word.format(**fill)]
            step[key] = words
        else:
            step[key] = value.format(**fill) if isinstance(value, str) else value
    if step.pop("lock", False):
        info = fill["lock_info"]
        step["lock_sha256"] = info["sha256"]  # a regenerated lock changes the step: it reruns
        at = step["argv"].index("-r")
        if info["hashes"]:  # every file checked against the lock's sha256s (what is already installed is kept)
            step["argv"].insert(at, "--require-hashes")
        if info["build_constraint"]:  # the sdists' build dependencies, pinned and hashed
            step["argv"][at:at] = ["--build-constraint", info["build_constraint"]["path"]]
            step["build_constraint_sha256"] = info["build_constraint"]["sha256"]
    if step.get("into_module"):
        step["python"] = fill["py"]
    return step


def _lock_fill(spec: System) -> dict:
    """``{lock}`` and ``{torch_pins}`` for the install commands, read from the committed lock (``env.deploy``
    checks it against the runner before installing; the dry run only reads it)."""
    if spec.lock is None:
        return {}
    from .lockfile import committed_build_constraint, committed_lock, torch_pins

    lock = committed_lock(spec.name)
    build = committed_build_constraint(lock)
    sdists = lock.listed("sdists")
    return {"lock": str(lock.path), "torch_pins": torch_pins(spec, lock),
            "lock_info": {"path": str(lock.path), "sha256": lock.sha256, "packages": len(lock.pins),
                          "hashes": lock.hashes is not None,
                          "torch_index": spec.lock.torch_index, "torch_pins": torch_pins(spec, lock),
                          "compiles_from_source": sdists,
                          "compiles_note": _compiles_note(spec, sdists),
                          "build_constraint": build and {"path": str(build.path), "sha256": build.sha256,
                                                         "packages": len(build.pins)}}}


def _compiles_note(spec: System, sdists: list[str]) -> str:
    if not sdists:
        return f"nothing: every locked package has a wheel for CPython {spec.python} on Linux x86-64"
    return (f"{len(sdists)} locked packages have no wheel for CPython {spec.python} on {PLATFORM_SHOWN} "
            f"(or are locked --no-binary) and are built from their sdists during the install, with the "
            f"build dependencies the lock's build constraint pins: {', '.join(sdists)}"
            + (f"; {COMPILE_COST}" if {"opencc", "pyopenjtalk"} & set(sdists) else ""))


# googlecolab/backend-info apt-list-gpu.txt @a72407924822 (2026-08-19, the Python 3.13 image): Ubuntu 22.04's
# python3.10 3.10.12 is installed; no other Python but the kernel's 3.13
COLAB_PYTHONS = {"3.10": "Ubuntu's /usr/bin/python3.10 (3.10.12)", "3.13": "the kernel's Python 3.13"}


def python_from(version: str) -> str:
    """Where ``uv venv --python VERSION`` takes the interpreter from, on Colab and elsewhere."""
    from .lockfile import UV_VERSION

    # uv looks for an installed X.Y (its own managed builds, then PATH) and downloads its managed CPython
    # build only when there is none (docs.astral.sh/uv/concepts/python-versions); which build it downloads is
    # fixed by the uv version, which the runner pins
    download = (f"the CPython {version} build uv {UV_VERSION} downloads (python-build-standalone, from GitHub; "
                "it needs no compiler)")
    if version in COLAB_PYTHONS:
        return (f"uv venv --python {version}: on Colab, {COLAB_PYTHONS[version]}, which the image ships "
                f"(googlecolab/backend-info apt-list-gpu.txt @a724079); on a machine without a Python {version}, "
                f"{download}")
    return (f"uv venv --python {version}: Colab's image has no Python {version} (googlecolab/backend-info "
            f"apt-list-gpu.txt @a724079 lists 3.10 and 3.13), so on Colab {download}; elsewhere a Python "
            f"{version} found on the machine, else that download")


def plan(system, overrides: dict | None = None, workdir: str = "colab_tts_deploy", out: str | None = None,
         repo_url: str | None = None, commit: str | None = None, python: str | None = None) -> dict:
    """The JSON plan for ``system``: upstream, python, install commands, weights and calls.

    ``repo_url``/``commit``/``python`` replace upstream's only for tests (a stand-in repository).
    """
    spec = get_system(system)
    s = settings(spec.name, overrides)
    # absolute: a folder named "-x" must never read as an option to uv or git
    root = os.path.join(_folder(workdir, "workdir"), spec.name)
    env, repo = f"{root}/env", f"{root}/upstream"
    out = _folder(out, "out") if out is not None else f"{root}/out"
    py = f"{env}/bin/python"
    commit = commit or spec.commit
    if not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        raise ValueError(f"commit must be a hexadecimal git commit id, got {commit!r}")
    fill = {"env": env, "py": py, "repo": repo, "root": root, "torch_pins": [], **_lock_fill(spec)}
    steps = [{"argv": ["uv", "venv", "--python", python or spec.python, env], "fresh": env,
              "creates": [py]},
             clone_step(repo_url or spec.url, repo),
             {"argv": ["git", "-C", repo, "checkout", "-q", commit]},
             *(_fill(step, fill) for step in spec.install)]
    result = {
        "system": spec.name,
        "upstream": {"repo": spec.repo, "commit": commit, "url": repo_url or spec.url},
        "python": python or spec.python,
        "python_source": spec.python_source,
        "python_from": python_from(python or spec.python),
        "env": env, "clone": repo, "out": out,
        "install": [{**step, "shown": shown(step)} for step in steps],
        "lock": fill.get("lock_info"),
        "weights": [{"hub_repo": w.hub_repo, "patterns": list(w.patterns), "local_dir": w.local_dir,
                     "note": w.note} for w in spec.weights],
        "import_paths": list(spec.import_paths),
        "environment": dict(spec.environment),
        "settings": s,
        "reference": {**REFERENCE, "path": f"{out}/{REFERENCE['file']}"},
        "calls": _CALLS[spec.name](s, out),
        "oom_advice": list(spec.oom_advice),
        "notes": list(spec.notes),
    }
    try:
        json.dumps(result)  # a plan is JSON by construction; fail here, not in the subprocess
    except (TypeError, ValueError) as err:
        raise ValueError(f"the settings of {spec.name} must be JSON values (numbers, strings, lists, "
                         f"true/false/null): {err}") from None
    return result


def _folder(path, what: str) -> str:
    """``path`` as an absolute folder name, or one ValueError saying why it cannot be one."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a folder path (str or Path), got {type(path).__name__}")
    text = os.fspath(path)
    if not text or "\0" in text:
        raise ValueError(f"{what} must be a folder path, got {text!r}")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not valid text (undecodable bytes); rename the folder") from None
    return os.path.abspath(os.path.expanduser(text))
