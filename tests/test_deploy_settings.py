"""Every deploy setting is checked against what upstream declares before any work (``setting_rules``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from colab_tts.deploy import __main__ as deploy_cli
from colab_tts.deploy import env as deploy_env
from colab_tts.deploy import plan, settings
from colab_tts.deploy.protocol import write_wav
from colab_tts.deploy.setting_rules import RULES, TTS_RUN
from colab_tts.deploy.systems import SYSTEMS

SIGNATURES = json.loads((Path(deploy_env.PACKAGE_ROOT) / "colab_tts/data/deploy/upstream_signatures.json").read_text())


def clip(path: Path, seconds: float, rate: int = 16000) -> Path:
    write_wav(path, np.zeros(int(seconds * rate), np.int16), rate)
    return path


def test_upstreams_own_defaults_pass_every_rule():
    """The ranges hold upstream's own defaults (upstream_signatures.json, read from the pinned sources)."""
    run = SIGNATURES["gpt-sovits"]["TTS.run"]["dict_keys"]
    assert set(TTS_RUN) == set(run)  # every key TTS.run reads has a rule, and no other
    for key, declared in run.items():
        if key not in ("text", "text_lang", "prompt_lang", "ref_audio_path", "aux_ref_audio_paths", "prompt_text"):
            assert TTS_RUN[key].check(declared["default"]) == declared["default"], key
    for system, calls in (("indextts2", ("IndexTTS2", "IndexTTS2.infer")), ("metavoice", ("TTS", "TTS.synthesise"))):
        for call in calls:
            for key, declared in SIGNATURES[system][call]["params"].items():
                if key in RULES[system] and "default" in declared and declared["default"] is not None:
                    assert RULES[system][key].check(declared["default"]) == declared["default"], (system, key)
    for name, spec in SYSTEMS.items():  # the runner's defaults too, and every key has a rule
        assert set(RULES[name]) == set(spec.defaults)
        assert settings(name) == spec.defaults


BAD = [  # (system, key, value, words the one line must hold)
    ("gpt-sovits", "top_k", "abc", "an integer from 1 to 100"),
    ("gpt-sovits", "top_k", True, "an integer from 1 to 100"),
    ("gpt-sovits", "top_k", 15.0, "an integer"),
    ("gpt-sovits", "top_k", 0, "an integer from 1 to 100"),
    ("gpt-sovits", "top_k", None, "an integer from 1 to 100"),
    ("indextts2", "use_fp16", None, "true or false"),
    ("gpt-sovits", "seed", 2**32, "-1"),
    ("gpt-sovits", "seed", float("nan"), "an integer"),
    ("gpt-sovits", "text_lang", "english", '"en"'),
    ("gpt-sovits", "text", "", "non-empty text"),
    ("gpt-sovits", "text", "\udcff", "non-empty text"),
    ("gpt-sovits", "device", "gpu", '"cuda" or "cpu"'),
    ("gpt-sovits", "is_half", "false", "true or false"),
    ("gpt-sovits", "greedy_max_new_tokens", 10**9, "from 1 to 1500"),
    ("gpt-sovits", "variants", [{"label": "a", "temperature": float("inf")}], "variants[0].temperature"),
    ("gpt-sovits", "variants", [{"label": "a", "speed_factor": 3}], "from 0.6 to 1.65"),
    ("gpt-sovits", "variants", [{"label": "a", "top_kk": 3}], "does not read"),
    ("gpt-sovits", "variants", [{"label": "a"}, {"label": "a"}], "distinct labels"),
    ("gpt-sovits", "variants", {"label": "a"}, "a non-empty list"),
    ("gpt-sovits", "ref_audio_path", "no-such.wav", "an existing audio file of 3-10 s"),
    ("indextts2", "memory_cap_gib", -1, "above 0"),
    ("indextts2", "memory_cap_gib", float("inf"), "a finite number"),
    ("indextts2", "diffusion_steps", 0, "at least 1"),
    ("indextts2", "max_text_tokens_per_segment", 5, "at least 20"),
    ("indextts2", "device", "cuda0", '"cuda:N"'),
    ("indextts2", "model_dir", "/no/such/folder", "an existing absolute one"),
    ("metavoice", "top_p", 0.5, "from 0.9 to 1.0"),
    ("metavoice", "guidance_scale", 1e308, "from 1.0 to 3.0"),
    ("metavoice", "quantisation_mode", "int2", '"int8"'),
    ("metavoice", "text", "x" * 221, "at most 220 characters"),
    ("metavoice", "model_name", "../../etc", "owner/name"),
    ("metavoice", "spk_ref_path", "/no/such.mp3", "or an http(s) URL"),
]


@pytest.mark.parametrize("system, key, value, takes", BAD, ids=[f"{s}-{k}-{v!r}"[:60] for s, k, v, _ in BAD])
def test_a_bad_setting_is_one_line_naming_the_key_what_it_takes_and_the_fix(system, key, value, takes, capsys):
    with pytest.raises((ValueError, TypeError)) as err:
        settings(system, {key: value})
    line = str(err.value)
    assert "\n" not in line and takes in line and key in line, line
    assert "fix: give e.g." in line or "its keys" in line
    raw = json.dumps(value, allow_nan=True) if not isinstance(value, str) else value
    if "\udcff" in raw or (isinstance(value, str) and deploy_cli.parse_set([f"k={raw}"])["k"] != value):
        return  # --set reads "false" as JSON false (a good value); argv carries no lone surrogate as str here
    code = deploy_cli.main([system, "--dry-run", "--set", f"{key}={raw}"])
    out, cli_err = capsys.readouterr()
    assert code == 2 and out == "" and cli_err.count("\n") == 1 and takes in cli_err, cli_err


def test_the_fix_each_error_offers_is_accepted():
    """The example in every refusal is itself a good value (the message never sends the user round in circles)."""
    import re

    for system, key, value, _ in BAD:
        with pytest.raises((ValueError, TypeError)) as err:
            settings(system, {key: value})
        fix = re.search(r"fix: give e\.g\. (?:\S+?=(.*) \(CLI: --set|\S+: (.*) there)", str(err.value))
        if fix is None or key in ("ref_audio_path", "spk_ref_path", "model_dir"):
            continue  # no file example exists on this machine
        example = json.loads(fix.group(1) or fix.group(2))
        name = re.search(r"setting (?:variants\[\d+\]\.)?(\w+)=", str(err.value)).group(1)
        good = {"variants": [{"label": "a", name: example}]} if "variants[" in str(err.value) else {name: example}
        settings(system, good)


def test_a_reference_clip_must_exist_hold_3_to_10_s_and_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clip(tmp_path / "mine.wav", 5.0)
    clip(tmp_path / "short.wav", 1.0)
    p = plan("gpt-sovits", {"ref_audio_path": "mine.wav"}, workdir=str(tmp_path / "w"))
    assert p["settings"]["ref_audio_path"] == str(tmp_path / "mine.wav")  # not a file inside upstream's clone
    assert all(c["kwargs"]["ref_audio_path"] == str(tmp_path / "mine.wav") for c in p["calls"] if c["target"] == "TTS.run")
    with pytest.raises(ValueError, match=r"ref_audio_path='short.wav' .* of 3-10 s"):
        settings("gpt-sovits", {"ref_audio_path": "short.wav"})
    (tmp_path / "broken.wav").write_bytes(b"RIFF....")
    with pytest.raises(ValueError, match="ref_audio_path='broken.wav'"):
        settings("gpt-sovits", {"ref_audio_path": "broken.wav"})
    assert settings("metavoice", {"spk_ref_path": "https://example.org/a.mp3"})["spk_ref_path"].startswith("https:")


def test_a_hand_edited_plan_is_checked_before_any_step(tmp_path, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("an install step ran before the plan's values were checked")

    monkeypatch.setattr(deploy_env, "run_step", no_work)
    p = plan("gpt-sovits", workdir=str(tmp_path / "w"))
    p["calls"][2]["kwargs"]["top_k"] = "abc"  # a call's kwargs edited by hand
    with pytest.raises(TypeError, match=r"TTS.run: top_k='abc' .* an integer from 1 to 100"):
        deploy_env.deploy(plan=p, progress=False)
    p = plan("metavoice", workdir=str(tmp_path / "w"))
    p["settings"]["temperature"] = float("nan")
    with pytest.raises(ValueError, match="temperature=nan"):
        deploy_env.deploy(plan=p, progress=False)
    with pytest.raises(TypeError, match="made by colab_tts.deploy.plan"):
        deploy_env.deploy(plan={"system": "nope"}, progress=False)


@pytest.mark.parametrize("kwargs, message", [({"timeout": float("nan")}, "timeout .* must be a finite number"),
                                             ({"timeout": "60"}, "timeout .* must be a number"),
                                             ({"timeout": -5}, "timeout .* must be > 0"),
                                             ({"weights": "no"}, "weights is True or False")])
def test_deploys_own_arguments_are_checked_before_any_step(kwargs, message, tmp_path, monkeypatch):
    monkeypatch.setattr(deploy_env, "run_step", lambda *a, **k: pytest.fail("an install step ran"))
    with pytest.raises((ValueError, TypeError), match=message):
        deploy_env.deploy("metavoice", workdir=str(tmp_path / "w"), progress=False, **kwargs)


def test_a_set_typed_the_way_a_tired_person_types_it_is_read_as_meant_or_refused_in_one_line(capsys):
    # a key given twice kept the last one silently, as did a JSON object with a key twice
    for argv, message in (
            (["--set", "top_k=15", "--set", "top_k=50"], "--set top_k is given twice ('15', then '50')"),
            (["--set", 'variants=[{"label": "a", "top_k": 5, "top_k": 50}]'], "has the key 'top_k' twice"),
            (["--set", "variants=" + "[" * 100_000], "nested too deeply"),  # was a RecursionError traceback
            (["--set", "variants=" + "[" * 5000 + "]" * 5000], "nested too deeply")):
        assert deploy_cli.main(["gpt-sovits", "--dry-run", *argv]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and message in err, err
    # a text setting is the text typed, not the number or true JSON reads it as ("1984" was refused as a number)
    for typed, meant in (("1984", "1984"), ("true", "true"), ("[1]", "[1]"), ('"quoted"', "quoted"), ("3.0", "3.0")):
        assert deploy_cli.parse_set([f"text={typed}", f"prompt_text={typed}"], "gpt-sovits") == \
            {"text": meant, "prompt_text": meant}
        assert settings("gpt-sovits", deploy_cli.parse_set([f"text={typed}"], "gpt-sovits"))["text"] == meant
    assert deploy_cli.parse_set(["top_k=15 ", "seed=-1"], "gpt-sovits") == {"top_k": 15, "seed": -1}
    with pytest.raises(TypeError, match="top_k takes an integer"):  # a number setting keeps JSON's reading
        settings("gpt-sovits", deploy_cli.parse_set(['top_k="15"'], "gpt-sovits"))


def test_an_edited_plan_writes_only_inside_its_output_folder(tmp_path, monkeypatch):
    # an IndexTTS-2 plan whose infer output_path was edited to a file of the user's elsewhere passed every
    # check: upstream would have overwritten it (and MetaVoice's output_dir likewise)
    monkeypatch.setattr(deploy_env, "run_step", lambda *a, **k: pytest.fail("an install step ran"))
    mine = tmp_path / "mine.wav"
    mine.write_bytes(b"mine")
    for system, call, key, value in (("indextts2", 1, "output_path", str(mine)),
                                     ("indextts2", 1, "output_path", "../../mine.wav"),
                                     ("indextts2", 1, "output_path", "~/x.wav"),
                                     ("indextts2", 1, "output_path", "x.wav"),  # taken in upstream's clone
                                     ("metavoice", 0, "output_dir", str(tmp_path)),
                                     ("metavoice", 0, "output_dir", 5)):
        p = plan(system, workdir=str(tmp_path / "w"))
        p["calls"][call]["kwargs"][key] = value
        with pytest.raises((ValueError, TypeError), match=f"{key}.*(outside the plan's output folder|a path)"):
            deploy_env.deploy(plan=p, progress=False)
    assert mine.read_bytes() == b"mine"
    ran = []
    monkeypatch.setattr(deploy_env, "_deploy", lambda p, *a: ran.append(p) or {"ok": True})
    for system in ("indextts2", "metavoice"):  # the plans plan() makes pass, and so does a new name inside out
        p = plan(system, workdir=str(tmp_path / "w"))
        deploy_env.deploy(plan=p, progress=False)
    p = plan("indextts2", workdir=str(tmp_path / "w"))
    p["calls"][1]["kwargs"]["output_path"] = p["out"] + "/other name.wav"
    deploy_env.deploy(plan=p, progress=False)
    assert len(ran) == 3


@pytest.mark.parametrize("typed,meant", [("JA", "ja"), ("ja ", "ja"), (" All_Zh", "all_zh")])
def test_a_choice_typed_in_another_case_or_with_spaces_is_refused_naming_the_one_meant(capsys, typed, meant):
    """Upstream compares exactly, so 'JA' stays refused; the fix names 'ja', not the default 'en'."""
    assert deploy_cli.main(["gpt-sovits", "--dry-run", "--set", f"text_lang={typed}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f'fix: give e.g. text_lang="{meant}" (CLI: --set text_lang={meant})' in err, err
