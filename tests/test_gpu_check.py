"""benchmarks/gpu_check.py: the dry run writes the report a GPU run would, every figure labelled, and without
CUDA every CUDA part or check says it did not run and why."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(gpu_check, tmp_path_factory):
    """The dry run on the CPU (--device cpu: the same on a machine with a GPU), report read back from disk."""
    out = tmp_path_factory.mktemp("gpu_check")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = gpu_check.main(["--dry-run", "--device", "cpu", "--out", str(out)])
    finally:
        # leave the process as it was (the speech server's engine thread now follows a changed count itself)
        torch.set_num_threads(before)
    return code, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_every_part_runs_on_the_cpu_and_the_report_has_their_shape(gpu_check, dry_run):
    code, report, md = dry_run
    assert code == 0, [p for p in report["parts"] if p["status"] == "FAIL"]
    assert report["schema"] == gpu_check.SCHEMA and report["dry_run"] and not report["cuda"]
    assert [p["name"] for p in report["parts"]] == [p[0] for p in gpu_check.PARTS]
    for part in report["parts"]:
        assert part["status"] in gpu_check.STATUSES and part["checks"], part["name"]
        assert part["seconds"] >= 0 and part["expected_h200_s"] <= part["budget_s"], part["name"]
        assert all(c["status"] in gpu_check.STATUSES for c in part["checks"])
        assert all(c["detail"] for c in part["checks"] if c["status"] != "PASS"), part["name"]  # never silently
    assert sum(p[4] for p in gpu_check.PARTS) <= gpu_check.DEADLINE_S < 8 * 60  # expected H200 seconds
    for part in report["parts"]:  # the markdown holds every part and check the JSON holds
        assert f"| {part['name']} | {part['status']} |" in md
        assert all(f"| {part['name']} | {c['name']} | {c['status']} |" in md for c in part["checks"])


def test_every_figure_names_its_device_and_provenance(dry_run):
    _, report, _ = dry_run
    figures = [f for p in report["parts"] for f in p["figures"]]
    names = {f["name"] for f in figures}
    assert any("roofline" in n for n in names) and any("real-time factor" in n for n in names)
    for f in figures:
        assert f["provenance"].split(":")[0] in ("measured", "predicted", "cited"), f
        if not f["provenance"].startswith("cited"):
            assert f["device"] == report["device"] and report["device"] in f["provenance"], f
        assert "dry run" in f["device"] or f["provenance"].startswith("cited"), f
        assert f["transfers_to_t4"], f


def test_without_cuda_each_cuda_check_is_not_run_with_its_reason(gpu_check, dry_run):
    _, report, _ = dry_run
    checks = {(p["name"], c["name"]): c for p in report["parts"] for c in p["checks"]}
    cuda_only = [("orpheus_3b", "vLLM (dummy weights, float16, CUDA graphs)"),
                 ("orpheus_3b", "CUDA graphs (torch.compile reduce-overhead, static cache)"),
                 ("gpt_sovits_t2s", "CUDA graphs (colab_tts.compiled)"),
                 ("flow_8gb", "real size under a 8 GiB allocator cap"),
                 ("flow_8gb", "track_peak on CUDA vs the CPU counter"),
                 ("selftest", "cuda_graph_decode"), ("selftest", "allocator_cap_8gb")]
    for key in cuda_only:
        assert checks[key]["status"] == "NOT-RUN" and gpu_check.NO_CUDA in checks[key]["detail"], key
    ran = [k for k, c in checks.items() if c["status"] == "PASS"]
    assert ("orpheus_3b", "greedy tokens: dynamic vs static cache") in ran
    assert ("gpt_sovits_t2s", "greedy tokens: concat vs static cache") in ran
    # teacher-forced logits: what catches a cache that drops or overwrites a position (greedy tokens of a small
    # random model may not change); seen failing with StaticCache writing each step over the previous one
    assert ("gpt_sovits_t2s", "logits: static cache, eager vs upstream concat cache, eager") in ran
    assert ("orpheus_3b", "logits: eager, static cache vs eager, dynamic cache") in ran


def test_without_dry_run_a_cpu_skips_cuda_parts_by_name(gpu_check):
    ctx = gpu_check.Context(dry_run=False, deadline_s=60, device="cpu")
    parts = gpu_check.run_all(ctx, only=["environment", "orpheus_3b", "snac"])
    by_name = {p.name: p for p in parts}
    assert by_name["environment"].status == "PASS"
    for name in ("orpheus_3b", "snac"):
        assert by_name[name].status == "NOT-RUN" and gpu_check.NO_CUDA in by_name[name].reason
    assert by_name["selftest"].status == "NOT-RUN" and "--only" in by_name["selftest"].reason


def test_part_status_and_token_comparison(gpu_check):
    Check = gpu_check.Check
    assert gpu_check.part_status([Check("a", "PASS"), Check("b", "NOT-RUN", "why")]) == "PASS"
    assert gpu_check.part_status([Check("a", "PASS"), Check("b", "FAIL")]) == "FAIL"
    assert gpu_check.part_status([Check("b", "NOT-RUN", "why")]) == "NOT-RUN"
    assert gpu_check.first_difference([[1, 2, 3]], [[1, 2, 3]]) == "identical"
    assert gpu_check.first_difference([[1, 2, 3]], [[1, 5, 3]]) == "row 0 differs from step 1 of 3"
    assert gpu_check.token_check("t", [[1, 2]], [[1, 3]]).status == "FAIL"
    assert gpu_check.token_check("t", [[1, 2, 1, 3, 4]], [[1, 2, 1, 3, 4]]).status == "PASS"
    assert gpu_check.token_check("t", [[7] * 8], [[7] * 8]).status == "FAIL"  # agreeing on NaN logits
    with pytest.raises(ValueError, match="status must be one of"):
        Check("x", "SKIP")


def test_roofline_transfer_says_bandwidth_bound_only_near_the_ceiling(gpu_check):
    ctx = gpu_check.Context(dry_run=True, deadline_s=60, device="cpu")
    ctx.copy_gbs = 1000.0  # 1 GB per token -> 1 ms ceiling
    figs = {f.name: f for f in gpu_check.roofline_figures(ctx, "m", {"fast": 1.25, "slow": 10.0}, 1e9)}
    assert figs["m: batch-1 roofline"].value == 1.0 and figs["m: batch-1 roofline"].provenance.startswith("predicted")
    assert figs["m: fast, share of the roofline"].value == 80.0
    assert figs["m: batch-1 decode, fast"].transfers_to_t4.startswith("yes")
    assert "T4 about 3.91 ms/token" in figs["m: batch-1 decode, fast"].transfers_to_t4  # 1e9 B / 320 GB/s / 0.8
    assert figs["m: batch-1 decode, slow"].transfers_to_t4.startswith("no")
    # with a cited datasheet the T4 figure scales by the share of the datasheet roofline (like for like)
    ctx.datasheet_gbs = (1250.0, "https://example.invalid/datasheet")  # 0.8 ms datasheet ceiling: 64% reached
    sheet = {f.name: f for f in gpu_check.roofline_figures(ctx, "m", {"fast": 1.25}, 1e9)}
    assert "T4 about 4.88 ms/token" in sheet["m: batch-1 decode, fast"].transfers_to_t4  # 3.125 ms / 0.64


def test_datasheet_bandwidth_is_cited_for_the_h200_and_absent_for_unknown_gpus(gpu_check):
    gbs, source = gpu_check.datasheet_bandwidth("NVIDIA H200")
    assert gbs == 4800 and source.startswith("https://")
    from colab_tts import hardware

    assert gpu_check.datasheet_bandwidth("Tesla T4") == (hardware.GPUS["T4"].bandwidth_gbs,
                                                          hardware.figure_source("T4", "bandwidth_gbs"))
    assert gpu_check.datasheet_bandwidth("NVIDIA B200") is None


def test_logit_check_fails_a_path_whose_cache_changes_one_position(gpu_check):
    """Teacher-forced logits catch what greedy tokens of a small model can miss: one step computed differently."""
    class Runner:
        def __init__(self, off_at=None):
            self.seen, self.off_at = [0], off_at

        def logits(self):
            x = torch.arange(16, dtype=torch.float32) * (1 + sum(self.seen)) / 16
            return (x * 1.01 if len(self.seen) == self.off_at else x)[None]

        def start(self):
            return self.logits()

        def step(self, token):
            self.seen.append(int(token))
            return self.logits()

    ctx = gpu_check.Context(dry_run=True, deadline_s=60, device="cpu")
    part = gpu_check.Part("p", "p", 10.0, 10.0, False)
    gpu_check.logit_checks(ctx, part, "m", torch.float32, Runner, "ref",
                           {"same": Runner, "off at step 3": lambda: Runner(off_at=3)}, [1, 2, 3, 4, 5])
    status = {c.name: c.status for c in part.checks}
    assert status == {"logits: same vs ref": "PASS", "logits: off at step 3 vs ref": "FAIL"}
