"""Inside a system's own environment: ``python -m colab_tts.deploy.worker PLAN.json``.

Runs the plan's upstream calls in order with the plan's kwargs (``{"$ref": name}`` is the object an
earlier call built), timing each and measuring its peak GPU memory with ``colab_tts.memory.track_peak``;
the system's module (``gpt_sovits``, ``indextts2``, ``metavoice`` in this package) imports upstream,
applies the technique under study around the calls and turns their outputs into wav files. Writes
``result.json`` into the plan's ``out`` folder, also when a call fails (``ok: false`` and the error:
for a CUDA out-of-memory error ``OutOfMemoryAdvice``'s message with the system's advice, for a full disk
``DiskFullError``'s), after deleting the files the failed run left in ``out`` (a partial wav is never
listed, nor left for a second run to find). Every file is written under a temporary name and renamed.

Works with Python 3.10 (GPT-SoVITS's interpreter); imports torch only here, never in the kernel.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import time
import traceback
from pathlib import Path

from ..errors import DiskFullError, OutOfMemoryAdvice, is_disk_full, is_out_of_memory
from ..units import GIB
from .outputs import KEEP, remove_partial_outputs, snapshot  # noqa: F401 - worker.snapshot etc. stay importable
from .peaks import _PEAKS, _Stage, note_peak, stage_peak  # noqa: F401  - importable here as before
from .protocol import write_result
from .safe_load import UnsafeCheckpointError, guard_torch_load, restore_torch_load

MODULES = {"gpt-sovits": "gpt_sovits", "indextts2": "indextts2", "metavoice": "metavoice"}
def resolve(value, objects: dict):
    """Replace every ``{"$ref": name}`` inside ``value`` by ``objects[name]``."""
    if isinstance(value, dict):
        if set(value) == {"$ref"}:
            return objects[value["$ref"]]
        return {k: resolve(v, objects) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, objects) for v in value]
    return value


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


class Measure:
    """Seconds and, on CUDA, peak memory above the level at entry (track_peak) of one block, and the
    absolute peak (``total_peak_gib``: the level at entry plus that)."""

    def __init__(self):
        import torch

        self.cuda = torch.cuda.is_available()
        self.record: dict = {}

    def __enter__(self):
        if self.cuda:
            from colab_tts.memory import track_peak

            self._peak = track_peak("cuda")
            self._mem = self._peak.__enter__()
            self._start = __import__("torch").cuda.memory_allocated()
            _PEAKS.clear()
        self._t0 = time.perf_counter()
        return self.record

    def __exit__(self, *exc):
        self.record["seconds"] = round(time.perf_counter() - self._t0, 4)
        if self.cuda:
            self._peak.__exit__(*exc)
            import torch

            inner = max(_PEAKS, default=0) - self._start  # peaks seen by stage wrappers inside the block
            peak = max(self._mem.peak_bytes, inner)
            self.record["peak_gib"] = round(peak / GIB, 3)
            self.record["total_peak_gib"] = round((self._start + peak) / GIB, 3)  # what the card must hold
            self.record["held_gib"] = round(torch.cuda.memory_allocated() / GIB, 3)
        return False


def execute(plan: dict, classes: dict, system, records: list | None = None) -> list[dict]:
    """Run ``plan["calls"]``, appending one record per finished call to ``records``; ``system`` may define
    ``after_build(name, obj, plan)``, ``around(call, plan)`` (a context manager) and ``audio(call, value, out, index)``."""
    objects, records = {}, ([] if records is None else records)
    out = Path(plan["out"])
    for i, call in enumerate(plan["calls"]):
        target = call["target"]
        kwargs = resolve(call["kwargs"], objects)
        if "." in target:
            owner, method = target.split(".", 1)
            fn = getattr(objects[owner], method)
        else:
            fn = classes[target]
        around = getattr(system, "around", None)
        ctx = around(call, plan, objects) if around else _null()
        with ctx as extra, Measure() as record:
            value = fn(kwargs) if call.get("pass_as") else fn(**kwargs)
            if inspect.isgenerator(value):
                value = list(value)
        record = {"target": target, **({"label": call["label"]} if "label" in call else {}), **record}
        if isinstance(extra, dict):
            record.update(extra)
        if "." not in target:
            objects[target] = value
            hook = getattr(system, "after_build", None)
            if hook:
                hook(target, value, plan)
        elif hasattr(system, "audio"):
            audio = system.audio(call, value, out, i)
            if audio:
                record["audio"] = audio
        records.append(record)
        print(f"[colab_tts.deploy] {target} {call.get('label', '')}: {record}", flush=True)
    return records


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def cap_memory(gib) -> dict:
    """Emulate a smaller card: cap this process's CUDA allocator at ``gib`` GiB."""
    import torch

    if gib is None or not torch.cuda.is_available():
        return {}
    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(1.0, gib * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    return {"memory_cap_gib": gib, "memory_cap_fraction": round(fraction, 4)}


def describe_failure(err: BaseException, plan: dict, done: int) -> str:
    """One line (plus advice) for result.json: which call failed and what to change."""
    calls = plan.get("calls", [])
    stage = ("upstream's " + calls[done]["target"] + (f" [{calls[done]['label']}]" if "label" in calls[done] else "")
             if done < len(calls) else f"the {plan['system']} run")
    if is_out_of_memory(err):
        advice = OutOfMemoryAdvice(stage, plan.get("oom_advice", []))
        return f"{type(advice).__name__}: {advice}"
    if is_disk_full(err):
        from .download import free_bytes
        from .env import free_up_hints

        out = Path(plan["out"])
        workdir = Path(plan["env"]).parent.parent if plan.get("env") else out.parent
        full = DiskFullError(f"{stage} writing into {out}", out, None, free_bytes(out), free_up_hints(workdir))
        return f"{type(full).__name__}: {full}"
    if isinstance(err, UnsafeCheckpointError):  # which call loaded it: the file may have been read into memory
        return f"{type(err).__name__}: in {stage}: {err}"
    return f"{type(err).__name__}: {err}"


def run_plan(plan: dict) -> dict:
    out = Path(plan["out"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = {**plan, "out": str(out)}
    result = {"system": plan["system"], "upstream": plan["upstream"], "device": "?", "ok": False,
              "calls": [], "stages": [], "extra": {}}
    records: list = []
    before = snapshot(out)
    unguarded = None
    try:
        clone = Path(plan["clone"]).resolve()
        os.chdir(clone)  # upstream reads configs and weights relative to its root
        for p in reversed(plan.get("import_paths", [])):
            sys.path.insert(0, str((clone / p).resolve()))
        unguarded = guard_torch_load(plan["system"])  # before upstream is imported: no checkpoint can run code
        system = importlib.import_module(f"colab_tts.deploy.{MODULES[plan['system']]}")
        result["device"] = device_name()
        result["extra"].update(cap_memory(plan["settings"].get("memory_cap_gib")))
        classes = system.import_upstream(plan)
        result["calls"] = execute(plan, classes, system, records)
        finish = getattr(system, "finish", None)
        if finish:
            result["extra"].update(finish(plan, out) or {})
        result["stages"] = getattr(system, "STAGES", [])
        result["ok"] = True
    except BaseException as e:  # recorded for the notebook, which shows it in one line; also an interrupt
        result["calls"] = records  # the calls that finished, with their audio
        result["error"] = (describe_failure(e, plan, len(records)) if isinstance(e, Exception)
                           else f"interrupted ({type(e).__name__}) during {len(records)} of "
                                f"{len(plan.get('calls', []))} calls; run it again")
        result["traceback"] = traceback.format_exc()[-4000:]
        result["removed_partial_outputs"] = remove_partial_outputs(out, records, before)
        write_result(out, result)
        if not isinstance(e, Exception):
            raise
        return result
    finally:
        if unguarded is not None:  # run in-process (the tests), the caller's torch.load is its own again
            restore_torch_load(unguarded)
    write_result(out, result)
    return result


def _terminate(signum, frame):
    """SIGTERM (the kernel's timeout, a runtime being stopped) ends the run like Ctrl-C: partial outputs deleted."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m colab_tts.deploy.worker PLAN.json", file=sys.stderr)
        return 2
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    plan = json.loads(Path(argv[0]).read_text())
    result = run_plan(plan)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
