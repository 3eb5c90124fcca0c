"""Predicted vs reported KV-cache size for every published vLLM log in tests/data/vllm_logs.json.

    python benchmarks/kv_planner.py          # in-sample and leave-one-out errors, with each log's version range
    python benchmarks/kv_planner.py --fit    # the constants fitted on every log, and on all but each one

No GPU needed: the logs are the measurements (cited, linked in the file), colab_tts.kv_cache.plan_vllm the
prediction. "leave-one-out" predicts each log with the constants fitted without it
(colab_tts.lessons.kv_sizing.fit_overheads); every case must stay within 15% out-of-sample. The quantized
logs (tests/data/vllm_quant_logs.json) never enter the fit, so each is out-of-sample; the ranges no
published log checks are listed last.
"""

from __future__ import annotations

import argparse

from colab_tts.display import Table
from colab_tts.lessons import kv_sizing

TARGET = 0.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="print the fitted constants per held-out case")
    args = parser.parse_args()
    data = kv_sizing.load_logs()
    loo = kv_sizing.leave_one_out(data)
    print(Table(kv_sizing.validation_rows(data, loo), title=f"vLLM KV cache: plan_vllm vs published logs "
                                                            f"({kv_sizing.LOGS.name})"))
    print("\n" + kv_sizing.loo_summary(loo))
    over = [r["case"] for r in loo if abs(r["error"]) >= TARGET]
    print(f"target: every case within {TARGET:.0%} out-of-sample: " + ("met" if not over else f"missed by {over}"))
    print("\n" + str(Table(kv_sizing.quantized_rows(data), title=f"quantized: plan_vllm vs published logs "
                                                                f"({kv_sizing.QUANT_LOGS.name}), constants fitted on "
                                                                f"the unquantized logs")))
    print("\nnot validated by any published log held (plans there carry a warning):")
    for line in kv_sizing.NOT_VALIDATED:
        print(f"  - {line}")
    if args.fit:
        print("\nall logs:", kv_sizing.fit_overheads(data["cases"], data["models"]))
        for r in loo:
            print(f"without {r['case']}: {r['overheads']}")


if __name__ == "__main__":
    main()
