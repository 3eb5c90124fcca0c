"""Predicted vs reported KV-cache size for every published vLLM log in tests/data/vllm_logs.json.

    python benchmarks/kv_planner.py          # the table, with the error per case
    python benchmarks/kv_planner.py --fit    # redo the search for the non-torch constant

No GPU needed: the logs are the measurements, colab_tts.kv_cache.plan_vllm the prediction.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from colab_tts.display import Table
from colab_tts.kv_cache import DEFAULT_OVERHEADS, GpuOverheads, plan_published_case, published_error

LOGS = Path(__file__).resolve().parents[1] / "tests" / "data" / "vllm_logs.json"


def rows(overheads: GpuOverheads = DEFAULT_OVERHEADS) -> list[dict]:
    data = json.loads(LOGS.read_text())
    out = []
    for case in data["cases"]:
        plan = plan_published_case(case, data["models"], overheads)
        tokens = "reported_tokens" in case
        out.append({
            "case": case["id"],
            "GPU": f"{case['gpu']} x{case['settings'].get('tensor_parallel_size', 1)}",
            "vLLM": case["vllm_version"],
            "engine": "V0" if plan.v0 else "V1",
            "unit": "tokens" if tokens else "KV GiB",
            "reported": case["reported_tokens"] if tokens else case["reported_kv_gib"],
            "predicted": plan.kv_cache_tokens if tokens else round(plan.kv_cache_gib, 2),
            "error": f"{published_error(case, plan):+.1%}",
        })
    return out


def fit_non_torch(step: float = 0.01, top: float = 0.5) -> list[dict]:
    """Worst and RMS error for each non-torch constant, the others held at their measured values."""
    data = json.loads(LOGS.read_text())
    out = []
    for i in range(int(top / step) + 1):
        o = dataclasses.replace(DEFAULT_OVERHEADS, non_torch_gib=round(i * step, 4))
        errors = [published_error(c, plan_published_case(c, data["models"], o)) for c in data["cases"]]
        out.append({"non_torch_gib": o.non_torch_gib, "worst": max(abs(e) for e in errors),
                    "rms": (sum(e * e for e in errors) / len(errors)) ** 0.5})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="search the non-torch constant")
    args = parser.parse_args()
    table = rows()
    print(Table(table, title=f"vLLM KV cache: plan_vllm vs published logs ({LOGS.name})"))
    worst = max(abs(float(r["error"].rstrip("%"))) for r in table)
    print(f"\nworst error {worst:.1f}% over {len(table)} cases (target: within 10%)")
    if args.fit:
        results = fit_non_torch()
        best = min(results, key=lambda r: r["worst"])
        print(Table([r for r in results if abs(r["non_torch_gib"] * 100 % 5) < 1e-6 or r is best],
                    title="non-torch constant search (GiB)", digits=3))
        print(f"best worst-case: non_torch_gib={best['non_torch_gib']} -> {best['worst']:.1%}")


if __name__ == "__main__":
    main()
