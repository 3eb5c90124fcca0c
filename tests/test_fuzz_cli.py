"""A fuzzed command line: argument lists drawn from each subcommand's own argparse parser, with hostile values.

Every subcommand of ``python -m colab_tts`` and ``python -m colab_tts.deploy`` is introspected (its options,
their types, choices and nargs), and hypothesis draws argument lists from that: NaN, inf, 1e308, negative and
huge numbers, empty, whitespace, very long and non-UTF-8 strings (surrogateescape, as Python decodes a bad
argv), missing files, folders, malformed JSON. Each runs in-process through ``main(argv)`` and must end with
exit status 0 or 2 (``plan`` may also say 1: "does not fit") and at most one line on stderr, never a traceback.
Expensive work is stubbed where it would start: a model load returns a stand-in TTS, the deploy runner's
steps and worker do nothing; ``plan`` is pure and runs for real.
"""

import argparse
import json
import math
import os
import sys
import wave

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from colab_tts import cli
from colab_tts.audio import Speech
from colab_tts.deploy import __main__ as deploy_cli
from colab_tts.deploy import env as deploy_env
from colab_tts.deploy.setting_rules import RULES
from colab_tts.deploy.systems import SYSTEMS

FLOATS = ["nan", "NaN", "inf", "-inf", "1e308", "-1e308", "1e-308", "-1", "0", "-0", "0.5", "1", "30", "1.5",
          "abc", "", " "]
INTS = ["0", "1", "-1", "8", str(2**31), str(2**63), str(2**70), str(-2**70), "1e3", "abc", ""]
STRINGS = ["", " ", "\t", "x" * 300, "\udcff\udcfe", "caf\udce9", "☃", "-", "--", "-x", "$HOME", "`id`",
           "'; rm -rf /tmp/x '", "../../etc/passwd", "all", "ALL", "t4", "T4", "RTX-3070", "orpheus-3b",
           "0.8.3", "99.99.99", "1.2.3.4.5", "nan"]


# values that mean something somewhere (a system, a GPU, a model, a voice, a text, a check), drawn as often as
# all the hostile ones together, so that many lists get past the first check
GOOD = ["gpt-sovits", "indextts2", "metavoice", "T4", "RTX-3070", "orpheus-3b", "metavoice-1b", "tara",
        "Hello there.", "bf16_refusal", "0.25.1"]


def files(tmp):
    """Paths a user might pass: missing, a folder, malformed and valid-looking files."""
    (tmp / "dir").mkdir(exist_ok=True)
    (tmp / "bad.json").write_text("{not json")
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "config.json").write_text(json.dumps({"hidden_size": float("nan"), "num_hidden_layers": -1}))
    (tmp / "empty.json").write_text("")
    (tmp / "bin.json").write_bytes(b"\xff\xfe\x00")
    (tmp / "deep.json").write_text("[" * 100_000)  # Python's JSON reader: RecursionError, not a ValueError
    return [str(tmp / "missing.json"), str(tmp / "dir"), str(tmp / "bad.json"), str(tmp / "list.json"),
            str(tmp / "deep.json"),
            str(tmp / "config.json"), str(tmp / "empty.json"), str(tmp / "bin.json"), str(tmp / "out.wav"),
            str(tmp / "dir" / "a b.flac"), str(tmp / "bad.json" / "x.wav"), str(tmp / ("y" * 260 + ".wav")),
            str(tmp / "x.txt"), "/proc/x.wav"]


def value_for(action: argparse.Action, tmp) -> st.SearchStrategy:
    hostile = st.sampled_from(STRINGS + files(tmp))
    usual = [st.just(str(action.default))] if action.default not in (None, False, True) else []
    if action.choices:
        return st.one_of(st.sampled_from(list(action.choices)), hostile)
    if action.type is float:
        return st.one_of(*usual, st.floats(0.5, 120).map(repr), st.sampled_from(FLOATS),
                         st.floats(allow_nan=True, allow_infinity=True).map(repr))
    if action.type is int:
        return st.one_of(*usual, st.integers(1, 9000).map(str), st.sampled_from(INTS),
                         st.integers(min_value=-2**80, max_value=2**80).map(str))
    return st.one_of(*usual, st.sampled_from(GOOD), hostile)


def args_for(parser: argparse.ArgumentParser, tmp) -> st.SearchStrategy:
    """Argument lists for one parser: every option maybe given (flags bare), positionals always."""
    parts = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:  # positional
            parts.append(value_for(action, tmp).map(lambda v: ["--", v] if v.startswith("-") else [v]))
            continue
        flag = st.sampled_from(action.option_strings)
        absent = st.just([])  # each option given one time in three: some lists reach the real work
        if action.nargs == 0:
            parts.append(st.one_of(absent, flag.map(lambda f: [f])))
        elif action.nargs in ("*", "+"):
            parts.append(st.one_of(absent, absent, st.tuples(flag, st.lists(value_for(action, tmp), max_size=3))
                                   .map(lambda t: [t[0], *t[1]])))
        else:
            parts.append(st.one_of(absent, absent, st.tuples(flag, value_for(action, tmp))
                                   .map(lambda t: [f"{t[0]}={t[1]}"] if t[1].startswith("-") else list(t))))
    # options first, positionals last (after "--" when they look like options)
    options = [p for p, a in zip(parts, [a for a in parser._actions if not isinstance(a, argparse._HelpAction)])
               if a.option_strings]
    positionals = [p for p, a in zip(parts, [a for a in parser._actions if not isinstance(a, argparse._HelpAction)])
                   if not a.option_strings]
    return st.tuples(st.tuples(*options), st.tuples(*positionals)).map(
        lambda t: [w for part in t[0] for w in part] + _positionals(t[1]))


def _positionals(parts):
    words = [w for part in parts for w in part if w != "--"]
    return (["--"] if any(w.startswith("-") for w in words) else []) + words


def subparsers(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


class StandInTTS:
    """What a model load returns here: checks its voice like the real one, speaks silence."""

    voices = ("tara",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synthesize(self, text, voice="tara", seed=None):
        return Speech(np.zeros(240, dtype=np.float32), 24000, num_tokens=7, text=text)

    def close(self):
        pass


class StandInServer:
    """What ``serve`` builds here once every argument passed: no engine, no listening socket; run() returns."""

    def __init__(self, tts, plan, *, host, port, queue_limit, log_path=None):
        self.plan, self.model_name, self.url = plan, "stand-in", f"http://{host}:{port}"

    def run(self):
        pass


@pytest.fixture(scope="module")
def stubs():
    mp = pytest.MonkeyPatch()
    from colab_tts import orpheus, selftest

    mp.setattr(orpheus.OrpheusTTS, "from_pretrained", classmethod(lambda cls, *a, **k: StandInTTS()))
    mp.setattr(orpheus.OrpheusTTS, "offline_demo", classmethod(lambda cls, *a, **k: StandInTTS()))
    def skipped(*args):
        raise selftest.Skip("stubbed in the fuzz test")

    mp.setattr(selftest, "CHECKS", {name: skipped for name in selftest.CHECKS})  # names checked for real
    for name in ("run_step", "fetch_reference", "download_weights"):
        mp.setattr(deploy_env, name, lambda *a, **k: False)
    mp.setattr(deploy_env, "run_worker", lambda plan, timeout=None: {"system": plan["system"], "ok": True})
    from colab_tts.serve import server

    mp.setattr(server, "load_model", lambda plan, **k: StandInTTS())  # serve's checks and planning run for real
    mp.setattr(server, "SpeechServer", StandInServer)
    yield
    mp.undo()


def outcome(main, argv, capsys):
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse: --help (0) or a bad argument (2)
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.err


CLI_COMMANDS = sorted(subparsers(cli.build_parser()))
STUBBED = {"doctor", "plan", "synth", "selftest", "serve"}  # commands whose expensive work the fixture stubs


def assert_one_line_or_success(argv, code, err, allowed) -> None:
    """An allowed exit status, at most one line on stderr and never a traceback; a refusal (2) says one line."""
    assert code in allowed, (argv, code, err)
    assert "Traceback" not in err and err.count("\n") <= 1, (argv, err)
    if code == 2:
        assert err.count("\n") == 1, (argv, err)


@pytest.mark.parametrize("command", CLI_COMMANDS)
def test_fuzzed_colab_tts_cli_ends_in_one_line_or_success(command, tmp_path_factory, stubs, capsys):
    assert command in STUBBED, f"{command}: add a stub for the expensive work it starts to this test's fixture"
    tmp = tmp_path_factory.mktemp(f"fuzz-{command}")
    sub = subparsers(cli.build_parser())[command]
    cwd = os.getcwd()
    os.chdir(tmp)

    @settings(max_examples=100, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(args_for(sub, tmp))
    def check(argv):
        code, err = outcome(cli.main, [command, *argv], capsys)
        allowed = (0, 1, 2) if command in ("plan", "selftest") else (0, 2)  # plan: 1 = "does not fit"
        assert_one_line_or_success(argv, code, err, allowed)

    try:
        check()
    finally:
        os.chdir(cwd)


SIGNATURES = json.loads((deploy_env.PACKAGE_ROOT / "colab_tts/data/deploy/upstream_signatures.json").read_text())
SET_KEYS = sorted({key for rules in RULES.values() for key in rules}) + ["nope", "", "=x", "variants"]
SET_VALUES = ["1", "nan", "NaN", "Infinity", "-Infinity", "1e999", "1e308", "-1e308", "-1", "0", "0.95", "15",
              str(2**70), "null", "[]", '{"a": 1}', "", " ", "\udcff", "x" * 300, "true", "false", "'", "en",
              "cuda", "int8", "cut9", "../../etc", '[{"label": "a", "top_k": "x"}]', '[{"label": "a", "top_p": NaN}]',
              '[{"label": "a", "speed_factor": 1.0}]', '[{"label": "a"}, {"label": "a"}]']


def upstream_takes(plan) -> None:
    """What reached upstream's calls has the type of upstream's own default for that keyword (a bool where it
    defaults to a bool, a finite number where to a number, text where to text): read from the signatures file,
    not from the rules the runner checks with."""
    for call in plan["calls"]:
        declared = SIGNATURES[plan["system"]].get(call["target"], {})
        declared = {**declared.get("params", {}), **declared.get("dict_keys", {})}
        for key, value in call["kwargs"].items():
            default = declared.get(key, {}).get("default")
            if isinstance(default, bool):
                assert isinstance(value, bool), (call["target"], key, value)
            elif isinstance(default, (int, float)):
                assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), \
                    (call["target"], key, value)
            elif isinstance(default, str):
                assert isinstance(value, str) and value.strip() or key in ("prompt_text",), (call["target"], key, value)


def test_fuzzed_deploy_cli_ends_in_one_line_or_success(tmp_path_factory, stubs, capsys, monkeypatch):
    tmp = tmp_path_factory.mktemp("fuzz-deploy")
    parser = deploy_cli.build_parser()
    ran = []
    monkeypatch.setattr(deploy_env, "run_worker", lambda plan, timeout=None: ran.append(plan) or {"ok": True})
    cwd = os.getcwd()
    os.chdir(tmp)
    sets = st.tuples(st.sampled_from(SET_KEYS), st.sampled_from(SET_VALUES))

    @settings(max_examples=100, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(args_for(parser, tmp), st.lists(sets.map(lambda kv: f"--set={kv[0]}={kv[1]}"), max_size=2))
    def check(argv, extra):
        ran.clear()
        code, out, err = outcome_with_output(deploy_cli.main, [*extra, *argv], capsys)
        assert_one_line_or_success([*extra, *argv], code, err, (0, 2))
        if code == 0 and (ran or out.startswith('{"system"')):
            upstream_takes(ran[-1] if ran else json.loads(out))

    try:
        check()
    finally:
        os.chdir(cwd)


def outcome_with_output(main, argv, capsys):
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fuzzed_set_values_are_refused_in_one_line_or_reach_upstream_as_it_declares(tmp_path_factory, capsys):
    """Every setting of every system, with hostile values (NaN, inf, 1e308, huge and negative integers, booleans,
    empty, long and non-UTF-8 text, lists and objects, missing and malformed files) beside good ones: exit 2 with
    one line, or a plan whose upstream calls get the types upstream declares."""
    tmp = tmp_path_factory.mktemp("fuzz-set")
    clip = tmp / "five.wav"
    with wave.open(str(clip), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(b"\0\0" * 80000)
    edges = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e308", "-1e308", "1e-308", "true", "0", "-1",
                             str(2**70), "null", '"1"'])
    hostile = st.one_of(edges, edges, st.sampled_from(SET_VALUES + files(tmp) + [str(clip)]),
                        st.integers(-2**80, 2**80).map(str),
                        st.floats(allow_nan=True, allow_infinity=True).map(json.dumps), st.text(max_size=12))

    def good(system, key):
        default = SYSTEMS[system].defaults[key]
        return st.just(default if isinstance(default, str) else json.dumps(default))

    def one_set(system):
        keys = st.sampled_from([*RULES[system], "nope"])
        return keys.flatmap(lambda k: st.tuples(st.just(k), st.one_of(good(system, k), hostile) if k in RULES[system]
                                                else hostile))

    case = st.sampled_from(sorted(SYSTEMS)).flatmap(
        lambda system: st.tuples(st.just(system), st.lists(one_set(system), min_size=1, max_size=3)))
    reached = []

    @settings(max_examples=200, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(case)
    # the values a range check lets through unless it asks for finite numbers, always tried besides the drawn ones
    @example(("metavoice", [("top_p", "NaN")]))
    @example(("indextts2", [("memory_cap_gib", "Infinity")]))
    @example(("gpt-sovits", [("variants", '[{"label": "a", "repetition_penalty": NaN}]')]))
    def check(drawn):
        system, pairs = drawn
        argv = [system, "--dry-run", "--workdir", str(tmp / "w"), *(f"--set={k}={v}" for k, v in pairs)]
        code, out, err = outcome_with_output(deploy_cli.main, argv, capsys)
        assert_one_line_or_success(argv, code, err, (0, 2))
        if code == 0:
            upstream_takes(json.loads(out))
            reached.append(system)

    check()
    assert set(reached) == set(SYSTEMS), f"only {set(reached)} reached a plan: the property was hardly tested"


def test_the_fuzz_reaches_every_option_of_every_subcommand():
    """The strategies come from the parsers: a new option is fuzzed without editing this file."""
    seen = {name: {o for a in sub._actions for o in a.option_strings}
            for name, sub in subparsers(cli.build_parser()).items()}
    assert {"--seconds", "--gpu", "--max-model-len"} <= seen["plan"] and {"-o", "--voice"} <= seen["synth"]
    assert sys.version_info >= (3, 11)


# --- the public Python entry points: ValueError/TypeError raised by colab_tts, never a deep traceback ------

HOSTILE = st.one_of(st.sampled_from([None, True, 0, -1, 2**70, float("nan"), float("inf"), 1e308, -1e308, "", " ",
                                     "\udcff", "x" * 300, b"bytes", [], {}, object(), "T4", "orpheus-3b",
                                     "gpt-sovits", "tara", 30, 0.5]),
                    st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**80, 2**80), st.text(max_size=20))


def _entry_points(tmp):
    import torch  # noqa: F401  (load_gpt_sovits_checkpoint imports it; loaded once, not per example)

    from colab_tts import kv_cache, kv_fit
    from colab_tts.deploy import plan, settings
    from colab_tts.t2s import load_gpt_sovits_checkpoint

    return {
        "deploy.plan": lambda a, b: plan(a, {"seed": b} if isinstance(b, (int, float)) else b, workdir=str(tmp)),
        "deploy.plan workdir": lambda a, b: plan("metavoice", workdir=a, out=b),
        "deploy.settings": lambda a, b: settings(a, b),
        "Speech": lambda a, b: Speech(np.zeros(8) if a is None else a, b),
        "Speech.save": lambda a, b: Speech(np.zeros(8), 8000).save(a if not isinstance(a, str) else tmp / a[:200]),
        "load_gpt_sovits_checkpoint": lambda a, b: load_gpt_sovits_checkpoint(a if not isinstance(a, str)
                                                                              else tmp / a[:200]),
        "plan_vllm": lambda a, b: kv_cache.plan_vllm("orpheus-3b", "T4", max_model_len=a, gpu_memory_utilization=b),
        "fit_vllm": lambda a, b: kv_fit.fit_vllm("orpheus-3b", a, audio_seconds=b),
        "max_model_len_for_audio": lambda a, b: kv_cache.max_model_len_for_audio(a, b),
    }


@pytest.mark.parametrize("name", ["deploy.plan", "deploy.plan workdir", "deploy.settings", "Speech", "Speech.save",
                                  "load_gpt_sovits_checkpoint", "plan_vllm", "fit_vllm", "max_model_len_for_audio"])
def test_fuzzed_public_entry_points_raise_one_clear_error(name, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    call = _entry_points(tmp)[name]

    @settings(max_examples=60, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(HOSTILE, HOSTILE)
    def check(a, b):
        try:
            call(a, b)
        except (ValueError, TypeError) as err:
            import traceback

            ours = [f for f in traceback.extract_tb(err.__traceback__) if "/colab_tts/" in f.filename]
            last = traceback.extract_tb(err.__traceback__)[-1]
            assert ours and last.filename == ours[-1].filename, f"raised outside colab_tts: {last}"
            assert str(err).strip(), "an error with no message"

    check()


@pytest.mark.parametrize("samples, tokens", [(0, 7), (0, 0), (240, 0)])
def test_a_synthesis_with_no_audio_or_no_tokens_is_reported_in_one_line(samples, tokens, tmp_path, capsys,
                                                                         monkeypatch):
    # the offline model with --seed 4 ends before its first audio frame: the wav was written, then
    # timing_line raised "unsupported format string passed to NoneType.__format__" (an RTF of no audio)
    from colab_tts import orpheus
    from colab_tts.audio import Timings
    from colab_tts.lessons.orpheus_speed import measured_line

    class Empty(StandInTTS):
        def synthesize(self, text, voice="tara", seed=None):
            return Speech(np.zeros(samples, dtype=np.float32), 24000, num_tokens=tokens, text=text,
                          timings=Timings(generate_s=0.5, decode_s=0.1))

    monkeypatch.setattr(orpheus.OrpheusTTS, "offline_demo", classmethod(lambda cls, *a, **k: Empty()))
    out = tmp_path / "a.wav"
    code = cli.main(["synth", "hi", "--offline", "--backend", "transformers", "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and out.exists() and f"wrote {out}: " in printed
    assert ("ended before any audio" in printed) == (samples == 0), printed
    assert ("no tokens generated" in measured_line(Empty().synthesize("hi"), "cpu")) == (tokens == 0)


def test_every_hostile_file_as_a_plan_model_ends_in_one_line(tmp_path, capsys):
    # the drawn examples never paired plan --model with a config nested 100,000 deep: a RecursionError traceback
    for path in files(tmp_path):
        if path.endswith(".json"):
            code, err = outcome(cli.main, ["plan", "--model", path], capsys)
            assert_one_line_or_success(["plan", "--model", path], code, err, {0, 2})
