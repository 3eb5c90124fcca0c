"""No checkpoint a user hands the deploy runner can run code: upstream's own ``torch.load(..., weights_only=False)``
runs in the worker, whose ``torch.load`` is weights-only (``colab_tts.deploy.safe_load``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from colab_tts.deploy import env as deploy_env  # noqa: E402
from colab_tts.deploy import plan  # noqa: E402
from colab_tts.deploy.protocol import RESULT  # noqa: E402
from colab_tts.deploy.safe_load import HParams  # noqa: E402

# upstream's loads as RVC-Boss/GPT-SoVITS @48b1a01 makes them: TTS.py line 599 (init_t2s_weights) and
# process_ckpt.py lines 130-138 (load_sovits_new: a 2-byte version header in place of the zip's "PK")
STAND_IN_TTS = '''
import io
import torch


class TTS_Config:
    def __init__(self, configs=None):
        self.custom = configs["custom"]


class TTS:
    def __init__(self, configs):
        s1 = torch.load(configs.custom["t2s_weights_path"], map_location="cpu", weights_only=False)
        assert s1["config"]["model"]["hidden_dim"] == 8  # an HParams config, read as upstream reads it
        with open(configs.custom["vits_weights_path"], "rb") as f:
            head = f.read(2)
            data = f.read()
        source = io.BytesIO(b"PK" + data) if head != b"PK" else configs.custom["vits_weights_path"]
        self.s2 = torch.load(source, map_location="cpu", weights_only=False)
'''

UPSTREAM_UTILS = '''
class HParams:  # as GPT_SoVITS/utils.py @48b1a01 defines it (the attributes are the config)
    def __init__(self, **kwargs):
        for k, v in kwargs.items():
            setattr(self, k, HParams(**v) if type(v) == dict else v)

    def __getitem__(self, key):
        return getattr(self, key)
'''


class _RunsCode:
    """A pickle that writes a file when it is unpickled (what a hostile checkpoint does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.write_text, (pathlib.Path(self.marker), "the checkpoint ran code"))


def _upstream_hparams(tmp: Path, monkeypatch):
    """Upstream's HParams class under its pickled name ``utils.HParams``, to write a config as upstream does."""
    module = types.ModuleType("utils")
    exec(textwrap.dedent(UPSTREAM_UTILS), module.__dict__)
    module.HParams.__module__ = "utils"
    monkeypatch.setitem(sys.modules, "utils", module)
    return module.HParams


def _run_worker(tmp: Path, s1: Path, s2: Path) -> dict:
    clone = tmp / "upstream"
    (clone / "GPT_SoVITS" / "TTS_infer_pack").mkdir(parents=True)
    (clone / "GPT_SoVITS" / "TTS_infer_pack" / "TTS.py").write_text(textwrap.dedent(STAND_IN_TTS))
    (clone / "GPT_SoVITS" / "utils.py").write_text(textwrap.dedent(UPSTREAM_UTILS))  # importable, as upstream's is
    p = plan("gpt-sovits", {"device": "cpu", "is_half": False}, workdir=str(tmp / "work"))
    custom = p["calls"][0]["kwargs"]["configs"]["custom"]
    custom.update(t2s_weights_path=str(s1), vits_weights_path=str(s2))  # a user's own checkpoints
    p.update(clone=str(clone), calls=p["calls"][:2], out=str(tmp / "out"), env=str(tmp / "work" / "env"))
    Path(p["out"]).mkdir(parents=True)
    plan_path = Path(p["out"]) / "plan.json"
    plan_path.write_text(json.dumps(p))
    done = subprocess.run([sys.executable, "-m", "colab_tts.deploy.worker", str(plan_path)], cwd=clone,
                          env=deploy_env.command_env(deploy_env.worker_env(p)), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    return json.loads((Path(p["out"]) / RESULT).read_text())


def test_a_users_checkpoint_that_would_run_code_is_refused_by_the_worker(tmp_path, monkeypatch):
    upstream_hparams = _upstream_hparams(tmp_path, monkeypatch)
    marker = tmp_path / "ran.txt"
    s1 = tmp_path / "mine-e15.ckpt"  # a trained GPT file: tensors and upstream's HParams config load
    torch.save({"config": upstream_hparams(model={"hidden_dim": 8}), "weight": {"w": torch.zeros(2)}}, s1)
    s2 = tmp_path / "mine_e8_s100.pth"  # a SoVITS file with upstream's v2Pro header, and an object that runs code
    torch.save({"weight": {"w": torch.zeros(2)}, "config": {}, "info": _RunsCode(marker)}, s2)
    s2.write_bytes(b"05" + s2.read_bytes()[2:])

    result = _run_worker(tmp_path, s1, s2)

    assert not marker.exists(), "a checkpoint ran code in the worker"
    assert not result["ok"]
    # pickle names the method through builtins.getattr: the first object outside the allow-list is named
    assert result["error"].startswith("UnsafeCheckpointError: in upstream's TTS: refused to load a checkpoint "
                                      "upstream read into memory: it names the Python object getattr"), result["error"]
    assert [c["target"] for c in result["calls"]] == ["TTS_Config"]  # the first file (HParams config) loaded


def test_the_guard_loads_upstreams_config_objects_and_refuses_code_in_process(tmp_path, monkeypatch):
    from colab_tts.deploy import safe_load

    upstream_hparams = _upstream_hparams(tmp_path, monkeypatch)
    good, evil, marker = tmp_path / "s2.pth", tmp_path / "evil.pth", tmp_path / "ran.txt"
    torch.save({"config": upstream_hparams(data={"sampling_rate": 32000}), "weight": {}}, good)
    torch.save({"config": {}, "x": _RunsCode(marker)}, evil)
    original = torch.load
    assert safe_load.guard_torch_load("gpt-sovits") is original
    try:
        config = torch.load(good, weights_only=False)["config"]
        assert isinstance(config, HParams) and config["data"]["sampling_rate"] == 32000 and "data" in config
        with pytest.raises(safe_load.UnsafeCheckpointError,
                           match=r"refused to load \S*evil\.pth: it names the Python object getattr"):
            torch.load(str(evil), weights_only=False, pickle_module=__import__("pickle"))
        assert not marker.exists()
    finally:
        safe_load.restore_torch_load(original)
    assert torch.load is original and torch.serialization.load is original


def test_a_run_in_process_leaves_torch_load_as_it_found_it(tmp_path):
    """The worker's guard ends with its run (tests and the notebook's helpers call run_plan in-process)."""
    from colab_tts.deploy.worker import run_plan

    original = torch.load
    p = plan("metavoice", workdir=str(tmp_path / "w"))
    p.update(clone=str(tmp_path / "no-clone"), out=str(tmp_path / "out"))
    (tmp_path / "no-clone").mkdir()
    cwd = __import__("os").getcwd()
    try:
        result = run_plan(p)  # fails at upstream's import: no fam package here
    finally:
        __import__("os").chdir(cwd)
    assert not result["ok"] and "fam" in result["error"]
    assert torch.load is original and torch.serialization.load is original


UPSTREAM_SAVE_AND_LOAD = '''
import os, sys, types
root, out, package = sys.argv[1:4]
sys.path[:0] = [package, root, os.path.join(root, "GPT_SoVITS")]
for name in ("librosa", "matplotlib"):  # utils.py imports them at the top; HParams and savee use neither
    sys.modules.setdefault(name, types.ModuleType(name))
import torch
import utils  # upstream's, imported as its training scripts import it (the pickle names utils.HParams)
from process_ckpt import load_sovits_new, savee
hps = utils.HParams(data={"sampling_rate": 32000}, model={"version": "v2"}, save_weight_dir=out)
os.chdir(out)
assert savee({"w": torch.zeros(3)}, "plain", 8, 100, hps) == "Success."
assert savee({"w": torch.zeros(3)}, "pro", 8, 100, hps, model_version="v2Pro") == "Success."
from colab_tts.deploy.safe_load import guard_torch_load
guard_torch_load("gpt-sovits")
for name in ("plain", "pro"):
    d = load_sovits_new(os.path.join(out, name + ".pth"))  # upstream's loader (weights_only=False) under the guard
    print(name, d["config"]["data"]["sampling_rate"], d["config"].model.version, tuple(d["weight"]["w"].shape))
'''


@pytest.mark.upstream
@pytest.mark.skipif(not __import__("os").environ.get("GPT_SOVITS_UPSTREAM"),
                    reason="GPT_SOVITS_UPSTREAM (a checkout of RVC-Boss/GPT-SoVITS @48b1a01) is not set")
def test_sovits_files_upstreams_own_training_writes_load_under_the_guard(tmp_path):
    """RVC-Boss/GPT-SoVITS @48b1a01 GPT_SoVITS/process_ckpt.py ``savee`` (both its formats) read back by its own
    ``load_sovits_new`` with the worker's weights-only torch.load: the HParams allow-list is the one its files need."""
    import os

    done = subprocess.run([sys.executable, "-c", UPSTREAM_SAVE_AND_LOAD, os.environ["GPT_SOVITS_UPSTREAM"],
                           str(tmp_path), str(deploy_env.PACKAGE_ROOT)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["plain 32000 v2 (3,)", "pro 32000 v2 (3,)"]


def test_the_guard_works_on_a_torch_without_add_safe_globals(monkeypatch, tmp_path):
    # torch < 2.4 (MetaVoice's 2.2.1) has no add_safe_globals: guarding a system with allowed classes raised
    # "'NoneType' object is not callable" from the fallback meant for (class, name) pairs
    from colab_tts.deploy.safe_load import UnsafeCheckpointError, guard_torch_load, restore_torch_load

    monkeypatch.delattr(torch.serialization, "add_safe_globals")
    original = guard_torch_load("gpt-sovits")
    try:
        torch.save({"w": torch.zeros(2)}, tmp_path / "ok.ckpt")
        assert torch.load(tmp_path / "ok.ckpt", weights_only=False)["w"].shape == (2,)
        torch.save({"config": types.SimpleNamespace(a=1)}, tmp_path / "obj.ckpt")
        with pytest.raises(UnsafeCheckpointError, match="SimpleNamespace"):
            torch.load(tmp_path / "obj.ckpt", weights_only=False)
    finally:
        restore_torch_load(original)
