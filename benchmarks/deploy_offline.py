"""What the deploy runner costs offline, this checkout against another: ``python benchmarks/deploy_offline.py OTHER``.

OTHER is another checkout of this repository (e.g. the main branch). The two are measured in alternation,
each in fresh processes, and the best of all rounds is kept (a shared machine's load swings either way): the dry run (``python -m colab_tts.deploy SYSTEM --dry-run``),
``plan()`` per call, ``protocol.write_wav`` and ``Speech.save`` per 1 s file, ``read_result``. Prints seconds and
the ratio this/other (above 1.10 = more than 10 % slower).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

MICRO = r"""
import json, sys, tempfile, time
from pathlib import Path
import numpy as np
from colab_tts.audio import Speech
from colab_tts.deploy import plan, read_result
from colab_tts.deploy.protocol import write_result, write_wav

def best(fn, n, repeats=5):
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t) / n)
    return min(out)

tmp = Path(tempfile.mkdtemp())
samples = np.sin(np.arange(24000) / 10).astype(np.float32)
write_result(tmp, {"system": "x", "upstream": {}, "device": "cpu", "ok": True, "calls": []})
print(json.dumps({
    "plan() gpt-sovits": best(lambda: plan("gpt-sovits"), 200),
    "plan() metavoice": best(lambda: plan("metavoice"), 200),
    "write_wav 1 s": best(lambda: write_wav(tmp / "a.wav", samples, 24000), 100),
    "Speech.save 1 s": best(lambda: Speech(samples, 24000).save(tmp / "b.wav"), 100),
    "read_result": best(lambda: read_result(tmp), 200),
}))
"""


def measure(root: Path) -> dict:
    env = {"PYTHONPATH": str(root), "PATH": ""}
    micro = json.loads(subprocess.run([sys.executable, "-c", MICRO], capture_output=True, text=True, env=env,
                                      cwd=root, check=True).stdout)
    dry = []
    for _ in range(7):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "colab_tts.deploy", "gpt-sovits", "--dry-run"], capture_output=True,
                       env=env, cwd=root, check=True)
        dry.append(time.perf_counter() - t)
    return {"dry run (process)": min(dry), **micro}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    other = Path(argv[0]).resolve()
    mine, theirs = {}, {}
    for _ in range(5):
        for best, root in ((mine, HERE), (theirs, other)):
            for key, value in measure(root).items():
                best[key] = min(value, best.get(key, value))
    print(f"{'':22} {'this s':>12} {'other s':>12} {'this/other':>10}")
    for key in mine:
        print(f"{key:22} {mine[key]:12.6f} {theirs[key]:12.6f} {mine[key] / theirs[key]:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
