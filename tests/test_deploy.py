"""The deploy runner: dry runs match upstream's signatures; the env + worker protocol runs end to end.

The end-to-end test builds a stand-in upstream (a git repo in tmp with GPT-SoVITS's module layout and
call names, a tiny random-weight T2S checkpoint of our own) and runs the real protocol: a venv is
created, upstream is cloned at its commit, the worker runs the plan's calls in the venv as a
subprocess, writes result.json + wav files, and the kernel side reads them back.
"""

import json
import re
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from colab_tts.deploy import env as deploy_env
from colab_tts.deploy import plan, read_result, read_wav, settings
from colab_tts.deploy.__main__ import main as cli_main
from colab_tts.deploy.protocol import call_rows
from colab_tts.deploy.systems import SYSTEMS
from colab_tts.deploy.worker import resolve
from colab_tts.lessons import gpt_stage_deploy

ROOT = Path(__file__).resolve().parents[1]
SIGNATURES = json.loads((ROOT / "colab_tts/data/deploy/upstream_signatures.json").read_text())
EXPECTED_TARGETS = {
    "gpt-sovits": ["TTS_Config", "TTS", "TTS.run", "TTS.run", "TTS.run", "TTS.run"],
    "indextts2": ["IndexTTS2", "IndexTTS2.infer"],
    "metavoice": ["TTS", "TTS.synthesise"],
}


def dry_run(system, *extra):
    done = subprocess.run([sys.executable, "-m", "colab_tts.deploy", system, "--dry-run", *extra],
                          capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    return done


def check_kwargs(system: str, call: dict, earlier: list[str]) -> None:
    sig = SIGNATURES[system][call["target"]]
    if call.get("pass_as"):
        assert call["pass_as"] == sig["dict_param"]
        allowed = set(sig["dict_keys"])
    else:
        allowed = set(sig["params"])
        required = {k for k, v in sig["params"].items() if v.get("required")}
        assert required <= set(call["kwargs"]), f"{call['target']} misses required {required - set(call['kwargs'])}"
    unknown = set(call["kwargs"]) - allowed
    assert not unknown, f"{call['target']} gets kwargs upstream does not take: {unknown}"
    for value in call["kwargs"].values():
        if isinstance(value, dict) and set(value) == {"$ref"}:
            assert value["$ref"] in earlier, f"{call['target']} refers to {value} before it is built"


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_dry_run_prints_one_json_plan_whose_kwargs_upstream_takes(system):
    done = dry_run(system)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1
    p = json.loads(done.stdout)
    assert {"system", "upstream", "python", "install", "calls"} <= set(p)
    assert p["system"] == system
    commit = p["upstream"]["commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    sigs = [v for k, v in SIGNATURES[system].items()]
    assert {s["commit"] for s in sigs} == {commit}, "the plan's commit must be the one the signatures were read at"
    assert {s["repo"] for s in sigs} == {p["upstream"]["repo"]}
    assert [c["target"] for c in p["calls"]] == EXPECTED_TARGETS[system]
    assert any(step.get("argv", [])[-1:] == [commit] and "checkout" in step["argv"] for step in p["install"]), \
        "the clone must be checked out at the pinned commit"
    built = []
    for call in p["calls"]:
        check_kwargs(system, call, built)
        if "." not in call["target"]:
            built.append(call["target"])


def test_signature_check_catches_a_misspelt_kwarg():
    call = plan("indextts2")["calls"][1]
    call["kwargs"]["max_text_tokens_per_sentence"] = 120  # the IndexTTS-1 name
    with pytest.raises(AssertionError, match="max_text_tokens_per_sentence"):
        check_kwargs("indextts2", call, ["IndexTTS2"])
    run = plan("gpt-sovits")["calls"][2]
    run["kwargs"]["parallel_inference"] = True
    with pytest.raises(AssertionError, match="parallel_inference"):
        check_kwargs("gpt-sovits", run, ["TTS"])


def test_gpt_sovits_config_keys_are_the_ones_tts_config_reads():
    custom = plan("gpt-sovits")["calls"][0]["kwargs"]["configs"]["custom"]
    assert set(custom) <= set(SIGNATURES["gpt-sovits"]["TTS_Config"]["custom_keys"])
    assert custom["version"] == "v2" and custom["is_half"] is True


def test_gpt_sovits_runs_upstream_defaults_then_its_own_speed_switches():
    runs = [c for c in plan("gpt-sovits")["calls"] if c["target"] == "TTS.run"]
    defaults = SIGNATURES["gpt-sovits"]["TTS.run"]["dict_keys"]
    first = runs[0]["kwargs"]
    # the first run leaves every speed switch at upstream's default
    assert not {"parallel_infer", "batch_size", "split_bucket"} & set(first)
    changed = [{k: v for k, v in r["kwargs"].items() if k in defaults and v != defaults[k].get("default")
                and k not in first} for r in runs[1:]]
    assert {"parallel_infer": False} in changed and any("batch_size" in c for c in changed)
    assert any(r["kwargs"].get("top_k") == 1 for r in runs), "a greedy run feeds the token comparison"


def test_settings_change_the_kwargs_and_unknown_settings_are_refused():
    p = plan("indextts2", {"use_fp16": False, "max_text_tokens_per_segment": 60})
    assert p["calls"][0]["kwargs"]["use_fp16"] is False
    assert p["calls"][1]["kwargs"]["max_text_tokens_per_segment"] == 60
    with pytest.raises(ValueError, match="no setting 'use_fp32'"):
        settings("indextts2", {"use_fp32": True})


def test_metavoice_plan_runs_float16_on_turing_and_refuses_int4_there():
    p = plan("metavoice")
    assert p["calls"][0]["kwargs"]["quantisation_mode"] is None
    assert p["settings"]["float16_on_turing"] is True
    assert p["environment"] == {"ANONYMIZED_TELEMETRY": ""}  # the only value upstream's check reads as off


def test_cli_bad_input_is_one_line_and_exit_2(capsys):
    assert cli_main(["metavoice", "--dry-run", "--set", "seed"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert cli_main(["gpt-sovit", "--dry-run"]) == 2
    assert "gpt-sovits" in capsys.readouterr().err


def test_cli_set_values_are_json():
    done = dry_run("metavoice", "--set", "quantisation_mode=\"int8\"", "--set", "seed=7")
    calls = json.loads(done.stdout)["calls"]
    assert calls[0]["kwargs"]["quantisation_mode"] == "int8" and calls[0]["kwargs"]["seed"] == 7


def test_refs_resolve_to_earlier_objects():
    sentinel = object()
    assert resolve({"configs": {"$ref": "TTS_Config"}, "n": [1, {"$ref": "TTS_Config"}]},
                   {"TTS_Config": sentinel}) == {"configs": sentinel, "n": [1, sentinel]}


def test_read_result_names_the_failure(tmp_path):
    with pytest.raises(ValueError, match="did not finish"):
        read_result(tmp_path)
    (tmp_path / "result.json").write_text(json.dumps({"system": "x", "upstream": {}, "device": "cpu", "ok": False,
                                                       "calls": [], "error": "OutOfMemoryError: boom"}))
    with pytest.raises(ValueError, match="OutOfMemoryError: boom"):
        read_result(tmp_path)


# --- end to end with a stand-in upstream --------------------------------------------------------------

FAKE_TTS = '''
"""Stand-in for GPT_SoVITS/TTS_infer_pack/TTS.py: same call names, a tiny random-weight T2S model."""
import numpy as np
import torch
from colab_tts.decoding import Sampling
from colab_tts.t2s_runner import Segment, decode_segments
from colab_tts.t2s import load_gpt_sovits_checkpoint

CAP = 12


class TTS_Config:
    def __init__(self, configs=None):
        c = configs["custom"]
        self.device, self.is_half = c["device"], c["is_half"]
        self.t2s_weights_path = c["t2s_weights_path"]


class _Model:
    """Holds the model; its infer panels get upstream's padded layout, decode the unpadded originals."""
    def __init__(self, path):
        self.net = load_gpt_sovits_checkpoint(path)
        self.originals = None

    def _decode(self, x, x_lens, prompts, bert_feature, top_k=15, **kw):
        segments, prompt = self.originals
        g = decode_segments(self.net, segments, prompt, Sampling(greedy=True), cache="concat", batch_size=1,
                            max_new_tokens=CAP)
        ys = [torch.cat([prompt, torch.tensor(t, dtype=torch.long)]) for t in g.tokens]
        return ys, [len(t) for t in g.tokens]

    infer_panel_batch_infer = _decode
    infer_panel_naive_batched = _decode


class _T2S:
    def __init__(self, path):
        self.model = _Model(path)


class TTS:
    def __init__(self, configs):
        self.configs = configs
        self.t2s_model = _T2S(configs.t2s_weights_path)

    def run(self, inputs):
        assert inputs["ref_audio_path"].endswith(".wav")
        g = torch.Generator().manual_seed(len(inputs["text"]))
        c = self.t2s_model.model.net.config
        lens = [7, 5]  # two segments, each its own phonemes and features
        segments = [Segment(torch.randint(0, c.phoneme_vocab_size, (n,), generator=g),
                            torch.randn(n, c.bert_dim, generator=g)) for n in lens]
        prompt = torch.randint(0, 1024, (6,), generator=g)
        m = self.t2s_model.model
        m.infer_panel = m.infer_panel_batch_infer if inputs.get("parallel_infer", True) else m.infer_panel_naive_batched
        size = inputs.get("batch_size", 1)  # as upstream: one infer_panel call per batch of segments
        for batch in [list(range(len(lens)))[i:i + size] for i in range(0, len(lens), size)]:
            rows = [segments[i] for i in batch]
            m.originals = (rows, prompt)
            T = max(len(s.phonemes) for s in rows)  # upstream's batch: right-padded ids, (1024, T) features
            x = torch.stack([torch.nn.functional.pad(s.phonemes, (0, T - len(s.phonemes))) for s in rows])
            bert = torch.stack([torch.nn.functional.pad(s.bert.T, (0, T - len(s.phonemes))) for s in rows])
            ys, idx = m.infer_panel(x, torch.tensor([lens[i] for i in batch]), prompt[None].expand(len(rows), -1),
                                    bert, top_k=inputs["top_k"])
            for y, n in zip(ys, idx):
                t = np.arange(n * 640) / 32000
                yield 32000, (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)
'''


def make_fake_upstream(tmp: Path) -> tuple[Path, str]:
    repo = tmp / "fake-gpt-sovits"
    pack = repo / "GPT_SoVITS" / "TTS_infer_pack"
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text("")
    (pack / "TTS.py").write_text(textwrap.dedent(FAKE_TTS))
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "stand-in"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    return repo, commit


def reference_wav(path: Path) -> Path:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\1\0" * 16000)  # 1 s
    return path


def test_env_and_worker_protocol_end_to_end_with_a_stand_in_upstream(tmp_path):
    import torch

    from colab_tts.t2s import T2SConfig, T2SModel, to_upstream_checkpoint

    repo, commit = make_fake_upstream(tmp_path)
    p = plan("gpt-sovits", {"device": "cpu", "is_half": False, "greedy_max_new_tokens": 12},
             workdir=str(tmp_path / "work"), repo_url=str(repo), commit=commit, python=sys.executable)
    env, clone = p["env"], p["clone"]
    shared = [s for s in site.getsitepackages() if s.endswith("site-packages")][0]
    v = f"python{sys.version_info.major}.{sys.version_info.minor}"
    # the real install list starts with uv venv + git clone + checkout; here: a venv seeing this one's packages
    p["install"] = [{"argv": [sys.executable, "-m", "venv", "--without-pip", env]},
                    {"argv": [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                              f"{env}/lib/{v}/site-packages/shared.pth", shared]},
                    *[c for c in p["install"] if "clone" in c or c.get("argv", [""])[0] == "git"]]
    p["weights"] = []
    p["reference"].update(url=reference_wav(tmp_path / "ref.wav").as_uri(), size=None, sha256=None)  # a stand-in clip
    ckpt = Path(clone) / p["calls"][0]["kwargs"]["configs"]["custom"]["t2s_weights_path"]

    torch.manual_seed(0)
    small = T2SModel(T2SConfig.small(n_layer=2, hidden_dim=64, n_head=4))
    for step in p["install"]:  # what deploy() does first; the weight file goes where a download would put it
        deploy_env.run_step(step, Path(env).parent, tmp_path / "install.log")
    ckpt.parent.mkdir(parents=True)
    torch.save(to_upstream_checkpoint(small), ckpt)

    result = deploy_env.deploy(plan=p, progress=False, timeout=240)

    assert result["device"] == "cpu" and result["upstream"]["commit"] == commit
    assert Path(env, "bin", "python").exists() and Path(clone, ".git").exists()
    runs = [c for c in result["calls"] if c["target"] == "TTS.run"]
    assert [r["t2s_path"] for r in runs] == ["infer_panel_batch_infer", "infer_panel_naive_batched",
                                             "infer_panel_batch_infer", "infer_panel_naive_batched"]
    for r in runs:
        wav, sr = read_wav(r["audio"]["path"])
        assert sr == 32000 and len(wav) == r["t2s_tokens"] * 640
    rows = call_rows(result)
    assert [r["call"].split(" [")[0] for r in rows] == EXPECTED_TARGETS["gpt-sovits"]
    assert all(r["rtf"] == pytest.approx(r["seconds"] / r["audio_s"], rel=1e-2) for r in rows if r["audio_s"])
    comparison = result["extra"]["greedy_comparison"]
    ran = {label: row for label, row in comparison.items() if "skipped" not in row}
    # every segment of the greedy run (two decode calls at batch_size=1), not only the first call's
    assert result["extra"]["greedy_segments"] == 2
    assert [row["segments_identical"] for row in ran.values()] == ["2/2", "2/2"], comparison
    # without CUDA both CUDA-graph rows are one line each
    skipped = [row["skipped"] for label, row in comparison.items() if label not in ran]
    assert len(skipped) == 2 and all(s.startswith("needs CUDA: ") and s.endswith("this run has cpu") for s in skipped)
    # notebook 04's tables and players read this real result (the runner's keys are the lesson's contract)
    speed = gpt_stage_deploy.deploy_speed_rows(result)
    assert len(speed) == len(runs) + len(comparison)
    assert [r["greedy tokens = upstream's"] for r in speed][-4:] == [True, True, None, None]
    assert [r["kind"] for r in speed][-2:] == skipped
    assert gpt_stage_deploy.greedy_verdict(result).startswith("greedy tokens identical")
    assert len(gpt_stage_deploy.Players(result).items) == len(runs)
    # (the capture glue un-pads and transposes upstream's (1024, T) features; without it the worker fails)
    assert Path(p["reference"]["path"]).exists()


APPEND = "import sys; open(sys.argv[1], 'a').write('x')"


def test_install_steps_run_once(tmp_path):
    log = tmp_path / "log"
    step = {"argv": [sys.executable, "-c", APPEND, str(tmp_path / "count")]}
    assert deploy_env.run_step(step, tmp_path, log) is True
    assert deploy_env.run_step(step, tmp_path, log) is False
    assert (tmp_path / "count").read_text() == "x"
    with pytest.raises(RuntimeError, match="exit 3"):
        deploy_env.run_step({"argv": [sys.executable, "-c", "raise SystemExit(3)"]}, tmp_path, log)
    with pytest.raises(TypeError, match="argument list, never shell text"):
        deploy_env.run_step({"argv": "rm -rf x"}, tmp_path, log)


def test_reference_is_padded_to_the_length_gpt_sovits_accepts(tmp_path):
    import wave

    src = reference_wav(tmp_path / "src.wav")
    out = deploy_env.fetch_reference({"url": src.as_uri(), "path": str(tmp_path / "o" / "ref.wav"),
                                      "pad_to_seconds": 3.3})
    with wave.open(str(out)) as w:
        assert w.getnframes() == int(3.3 * 16000)


# --- the IndexTTS-2 stage wrappers, on CPU with stand-in modules ----------------------------------------

def test_indextts2_wrapped_methods_are_recorded_upstream_and_steps_go_to_n_timesteps():
    from colab_tts.deploy import indextts2

    recorded = SIGNATURES["indextts2_stage_methods"]
    wrapped = {f"{path}.{m}" for path, methods, _ in indextts2.STAGE_METHODS.values() for m in methods
               if m != "forward"}
    assert wrapped == set(recorded)
    assert list(recorded["s2mel.models.cfm.inference"]["params"]).index("n_timesteps") == 5


def test_indextts2_wrapper_replaces_the_hard_coded_steps_and_offloads_one_stage_at_a_time():
    import torch

    from colab_tts.deploy import indextts2
    from colab_tts.memory import is_on_accelerator

    class Stage(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(4))
            self.seen = []

        def inference(self, mu, x_lens, prompt, style, f0, n_timesteps, inference_cfg_rate=0.5):
            self.seen.append((n_timesteps, is_on_accelerator(self, "cpu")))
            return mu

    a, b = Stage(), Stage()
    offloader = indextts2.OneStageAtATime()
    a.inference = indextts2._wrap("a", a, "inference", offloader, steps=10)
    b.inference = indextts2._wrap("b", b, "inference", offloader, steps=None)
    indextts2.STAGES.clear()
    a.inference(1, 2, 3, 4, None, 25, inference_cfg_rate=0.7)
    b.inference(1, 2, 3, 4, None, 25)
    assert a.seen == [(10, True)] and b.seen == [(25, True)]
    assert not is_on_accelerator(a, "cpu") and is_on_accelerator(b, "cpu")  # b stays until another stage runs
    assert [r["stage"] for r in indextts2.STAGES] == ["a", "b"]


def test_worker_imports_colab_tts_alone_when_it_is_pip_installed_in_the_kernels_site_packages(tmp_path, monkeypatch):
    site_dir = tmp_path / "dist-packages"  # Colab: colab_tts installed beside the kernel's numpy and torch
    for name in ("colab_tts", "numpy", "torch"):
        (site_dir / name).mkdir(parents=True)
    monkeypatch.setattr(deploy_env, "PACKAGE_ROOT", site_dir)
    p = plan("gpt-sovits", workdir=str(tmp_path / "work"))
    first = Path(deploy_env.worker_env(p)["PYTHONPATH"].split(":")[0])
    assert sorted(x.name for x in first.iterdir()) == ["colab_tts"]
    assert (first / "colab_tts").resolve() == site_dir / "colab_tts"
    monkeypatch.setattr(deploy_env, "PACKAGE_ROOT", ROOT)  # a source checkout: the checkout itself
    assert deploy_env.worker_env(p)["PYTHONPATH"].split(":")[0] == str(ROOT)


def test_deploy_without_a_system_or_plan_says_what_it_needs():
    with pytest.raises(ValueError, match="system name"):
        deploy_env.deploy()


def test_the_dry_run_refuses_a_work_directory_that_cannot_be_one(tmp_path, capsys):
    from colab_tts.deploy.__main__ import main as deploy_main

    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert deploy_main(["gpt-sovits", "--dry-run", "--workdir", str(a_file / "sub")]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and err.count("\n") == 1 and a_file.read_text() == "mine"
