import math
import re
from pathlib import Path

import pytest

from colab_tts import hardware
from colab_tts.hardware import GPUS, GpuSpec, get_gpu, pick_dtype, resolve_dtype
from colab_tts.kv_cache import plan_vllm
from colab_tts.models import ModelSpec

FACTS_GPUS = ["T4", "L4", "A100-40GB", "A100-80GB", "H100-80GB", "V100-16GB", "A10G", "RTX-3060-12GB",
              "RTX-3070", "RTX-3090", "RTX-4060", "RTX-4070", "RTX-4090"]


def test_catalog_holds_every_gpu_in_facts_with_a_source():
    assert set(FACTS_GPUS) <= set(GPUS)
    for key, spec in GPUS.items():
        assert spec.source, key
        # torch reports less than the nominal size, never more than the box says
        assert 0 < spec.memory_gib < 81


def test_bf16_follows_compute_capability_only():
    assert not GPUS["T4"].bf16 and not GPUS["V100-16GB"].bf16
    assert GPUS["A100-40GB"].bf16 and GPUS["L4"].bf16 and GPUS["H100-80GB"].bf16
    assert GpuSpec("x", (8, 0), 1, 1, 1).bf16 and not GpuSpec("x", (7, 5), 1, 1, 1).bf16


@pytest.mark.parametrize("name,key", [
    ("t4", "T4"), ("Tesla T4", "T4"), ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
    ("NVIDIA GeForce RTX 3070", "RTX-3070"), ("NVIDIA L4", "L4"), ("GeForce RTX 3090", "RTX-3090"),
    ("rtx-4090", "RTX-4090"), ("a100-80gb", "A100-80GB"),
])
def test_get_gpu_accepts_keys_and_torch_names(name, key):
    assert get_gpu(name) is GPUS[key]


def test_get_gpu_unknown_name_lists_the_catalog():
    with pytest.raises(ValueError) as err:
        get_gpu("Tesla T5")
    assert "T4" in str(err.value) and "RTX-4090" in str(err.value)
    with pytest.raises(TypeError):
        get_gpu(42)


def test_custom_gpu_works_wherever_a_catalog_gpu_does():
    mine = GpuSpec("My Turing card", (7, 5), 5.8, 192, 20, "my datasheet")
    assert get_gpu(mine) is mine
    assert pick_dtype(mine) == "float16"
    assert resolve_dtype("bf16", mine).dtype == "float16"
    assert hardware.decode_ceiling_tokens_per_s(192e6, mine) == pytest.approx(1000)
    assert hardware.recommendations(mine)
    assert "My Turing card" in hardware.weights_fit_rows(gpus=[mine])[0]


@pytest.mark.parametrize("bad", [
    dict(compute_capability=(7,)), dict(compute_capability="7.5"), dict(memory_gib=0), dict(bandwidth_gbs=-1),
    dict(name=""),
])
def test_gpuspec_rejects_nonsense(bad):
    args = dict(name="x", compute_capability=(7, 5), memory_gib=1, bandwidth_gbs=1, fp16_tflops=1) | bad
    with pytest.raises((ValueError, TypeError)):
        GpuSpec(**args)


@pytest.mark.parametrize("gpu,expected", [
    ("T4", "float16"), ("V100-16GB", "float16"), ("L4", "bfloat16"), ("A100-40GB", "bfloat16"),
    (None, "float32"), ("cpu", "float32"),
    (GpuSpec("NVIDIA GeForce GTX 1660 Ti", (7, 5), 5.8, 288, 11), "float32"),
    (GpuSpec("Tesla P4", (6, 1), 7.4, 192, 5), "float32"),
])
def test_pick_dtype(gpu, expected):
    assert pick_dtype(gpu) == expected


def test_resolve_dtype_bf16_on_t4_becomes_fp16_with_reason():
    choice = resolve_dtype("bfloat16", "T4")
    assert choice.dtype == "float16"
    assert "8.0" in choice.reason and "T4" in choice.reason
    with pytest.raises(ValueError, match="float16"):
        resolve_dtype("bfloat16", "T4", strict=True)


def test_resolve_dtype_keeps_supported_requests_and_aliases():
    assert resolve_dtype("bf16", "A100-40GB").dtype == "bfloat16"
    assert resolve_dtype("half", "T4").dtype == "float16"
    assert resolve_dtype("auto", "T4").dtype == "float16"
    assert resolve_dtype("auto", None).dtype == "float32"
    torch = pytest.importorskip("torch")
    assert resolve_dtype(torch.bfloat16, "L4").dtype == "bfloat16"
    assert hardware.torch_dtype("fp16") is torch.float16


@pytest.mark.parametrize("bad,exc", [("float8", ValueError), ("", ValueError), (3, TypeError)])
def test_resolve_dtype_rejects_nonsense(bad, exc):
    with pytest.raises(exc):
        resolve_dtype(bad, "T4")


def test_decode_ceiling_is_bandwidth_over_bytes():
    # Orpheus 3B in fp16 reads ~6.6 GB per token; a T4 moves 320 GB/s.
    assert hardware.decode_ceiling_tokens_per_s(6.6e9, "T4") == pytest.approx(320 / 6.6)
    with_kv = hardware.decode_ceiling_tokens_per_s(6.6e9, "T4", kv_bytes_per_token=0.4e9)
    assert with_kv == pytest.approx(320 / 7.0)
    with pytest.raises(ValueError):
        hardware.decode_ceiling_tokens_per_s(0, "T4")


def test_detect_without_gpu_simulates_and_advises():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a real GPU is present")
    plain = hardware.detect()
    assert not plain.has_gpu and plain.gpu is None
    assert "Runtime" in str(plain)  # tells what Colab runtime to pick
    sim = hardware.detect(simulate="T4")
    assert sim.simulated and sim.gpu is GPUS["T4"] and sim.bf16 is False
    assert sim.dtype == "float16" and "simulated" in str(sim)
    assert math.isclose(sim.total_gib, 14.74)


def test_in_colab_reads_the_environment(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert not hardware.in_colab()
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20261101")
    assert hardware.in_colab()


def test_weights_fit_rows_scale_with_dtype():
    fp16 = {r["model"]: r for r in hardware.weights_fit_rows("float16", gpus=["T4"])}
    fp32 = {r["model"]: r for r in hardware.weights_fit_rows("fp32", gpus=["T4"])}
    orpheus = "Orpheus 3B (LLM)"
    assert fp32[orpheus]["float32 GiB"] == pytest.approx(2 * fp16[orpheus]["float16 GiB"])
    # the weights vLLM holds (padded vocabulary, rotary cache), the number every table and the planner show
    assert fp16[orpheus]["float16 GiB"] == ModelSpec.known("orpheus-3b").weight_gib("float16")


def test_recommendations_give_the_weights_the_planner_counts():
    line = next(x for x in hardware.recommendations("T4") if "Orpheus" in x)
    planned = plan_vllm("orpheus-3b", "T4", dtype="float16", max_model_len=4096).weights_gib
    assert f"{planned:.1f} GiB" in line and f"{planned:.1f}" == "6.2"  # the bare count, 6.15, would print 6.1


# --- the catalog's figures come from colab_tts/data/cited/gpus.json, each with a public source ---------

def test_every_catalog_figure_is_read_from_the_cited_data_with_its_source():
    from colab_tts.cited import SOURCE_FORMS, cited

    for key, spec in GPUS.items():
        for figure in hardware.FIGURES:
            entry = cited(f"gpus.{key}.{figure}")
            assert any(form.match(entry.source) for form in SOURCE_FORMS), (key, figure)
            value = getattr(spec, figure)
            assert value == (tuple(entry.value) if figure == "compute_capability" else entry.value)
            assert entry.source in spec.source
    assert hardware.figure_source("T4", "compute_capability") == "https://developer.nvidia.com/cuda-gpus"


VENDOR = re.compile(r"^https://([\w-]+\.)*nvidia\.com/\S+$")  # NVIDIA's pages, datasheets and whitepapers
PUBLISHED_LOG = re.compile(r"^https://github\.com/[\w.-]+/[\w.-]+/(issues|pull)/\d+$")
NO_VENDOR = "no vendor source: "


def test_every_gpu_figure_cites_the_vendor_or_says_why_it_cannot():
    # data/cited/gpus.json's rule: a spec figure from NVIDIA's own documents; the usable memory (what torch
    # reports, which no datasheet states) from a published log; anything else says why in its note
    from colab_tts.cited import all_cited

    entries = [c for c in all_cited() if c.key.startswith("gpus.")]
    assert len(entries) == 4 * len(GPUS) + 1  # every catalog figure, and the H200's bandwidth
    for entry in entries:
        primary = VENDOR if not entry.key.endswith(".memory_gib") else PUBLISHED_LOG
        if not primary.match(entry.source):
            assert entry.note.startswith(NO_VENDOR), f"{entry.key} cites {entry.source} without saying why"
            assert len(entry.note) > len(NO_VENDOR) + 40, entry.key  # a reason, not a stub
        else:
            assert NO_VENDOR not in entry.note, entry.key


def test_catalog_figures_are_not_typed_in_the_module():
    src = (Path(hardware.__file__)).read_text()
    for typed in ("14.74", "1555", "2039", "3350", "936", "1008"):
        assert typed not in src, f"{typed} is typed in hardware.py: it belongs in data/cited/gpus.json"


# --- no bfloat16 below compute capability 8.0, decided on the CC (simulated GPUs) ------------------------

GTX1660TI = GpuSpec("NVIDIA GeForce GTX 1660 Ti", (7, 5), 5.8, 288, 11)
SIMULATED = [*GPUS.values(), GTX1660TI, GpuSpec("Tesla P100", (6, 0), 15.9, 732, 19),
             GpuSpec("Quadro RTX 8000", (7, 5), 47.5, 672, 130), GpuSpec("RTX A6000", (8, 6), 47.5, 768, 155)]


@pytest.mark.parametrize("spec", SIMULATED, ids=lambda g: g.name)
@pytest.mark.parametrize("request_", ["auto", "bfloat16", "bf16", "float16", "float32"])
def test_no_path_picks_bfloat16_below_cc_8(spec, request_):
    choice = resolve_dtype(request_, spec)
    if spec.compute_capability < (8, 0):
        assert choice.dtype != "bfloat16"
        assert pick_dtype(spec) != "bfloat16"
        if request_ in ("bfloat16", "bf16"):
            assert choice.dtype == "float16" and choice.warnings
            with pytest.raises(ValueError, match="8.0"):
                resolve_dtype(request_, spec, strict=True)
    elif request_ in ("bfloat16", "bf16"):
        assert choice.dtype == "bfloat16" and not choice.warnings


def test_dtype_choice_ignores_torchs_bf16_answer(monkeypatch):
    """torch.cuda.is_bf16_supported() can say True on a T4 (emulation): the choice must not ask it."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("T4") == "float16" and resolve_dtype("auto", "T4").dtype == "float16"
    assert resolve_dtype("bfloat16", "T4").dtype == "float16"


def bf16_queries(path) -> list[int]:
    """Lines of ``path`` that call ``*.is_bf16_supported(...)``."""
    import ast

    return [node.lineno for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "is_bf16_supported"]


def test_the_package_never_asks_torch_whether_bf16_is_supported(tmp_path):
    pkg = Path(hardware.__file__).parent
    users = {p.name: bf16_queries(p) for p in pkg.rglob("*.py") if bf16_queries(p)}
    assert not users, f"decide bfloat16 with hardware.resolve_dtype on the compute capability: {users}"
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nhalf = 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'\n")
    assert bf16_queries(bad) == [2]


def test_explicit_float16_on_a_gtx_16xx_is_kept_with_a_sourced_warning():
    choice = resolve_dtype("float16", GTX1660TI)
    assert choice.dtype == "float16"
    assert any("https://github.com/pytorch/pytorch/issues/58123" in w for w in choice.warnings)
    assert resolve_dtype("float16", GTX1660TI, strict=True).dtype == "float16"  # strict refuses only what cannot run
    auto = resolve_dtype("auto", GTX1660TI)
    assert auto.dtype == "float32" and "dtype='float16'" in auto.reason
    assert not resolve_dtype("float16", "T4").warnings


# --- notebook 00's provenance tables (colab_tts.lessons.gpu_check) -----------------------------------

def test_device_rows_say_measured_on_a_real_gpu_and_cited_when_simulated():
    from colab_tts.lessons.gpu_check import device_rows

    sim = {r["figure"]: r["provenance"] for r in device_rows(hardware.detect(simulate="T4"))}
    assert sim["memory (GiB)"].startswith("cited (simulated T4): https://")
    assert sim["dtype to use"].startswith("predicted")
    h200 = GpuSpec("NVIDIA H200", (9, 0), 139.8, 1.0, 1.0, "detected (bandwidth unknown)")
    real = hardware.DeviceReport(True, "NVIDIA H200", (9, 0), 139.8, 139.2, True, "2.11", "12.8", False, gpu=h200)
    rows = {r["figure"]: r for r in device_rows(real)}
    assert rows["memory (GiB)"]["provenance"].startswith("measured") and rows["memory (GiB)"]["value"] == "139.80"
    assert rows["free memory (GiB)"]["provenance"].startswith("measured")
    assert rows["bandwidth (GB/s)"]["provenance"].startswith("unknown")
    t4 = hardware.DeviceReport(True, "Tesla T4", (7, 5), 14.74, 14.6, False, "2.11", "12.8", True, gpu=GPUS["T4"])
    assert {r["figure"]: r for r in device_rows(t4)}["bandwidth (GB/s)"]["provenance"].startswith("cited: https://")


def test_catalog_table_references_every_figure_source():
    from colab_tts.lessons.gpu_check import catalog_table

    rows, refs = catalog_table()
    urls = [r.split(" ", 1)[1] for r in refs]
    assert len(urls) == len(set(urls))
    t4 = next(r for r in rows if r["key"] == "T4")
    number = int(t4["sources"].split("bw[")[1].split("]")[0])
    assert urls[number - 1] == hardware.figure_source("T4", "bandwidth_gbs")


# --- a GPU name as a tired person types it ------------------------------------------------------------------

@pytest.mark.parametrize("typed, key", [
    ("RTX 3060", "RTX-3060-12GB"),  # the card's name without its memory: one card in the catalog has it
    ("rtx3070", "RTX-3070"), ("RTX 4060", "RTX-4060"), ("rtx-4060", "RTX-4060"), ("l4", "L4"),
    ("H100", "H100-80GB"), ("v100", "V100-16GB"), ("a100 80gb", "A100-80GB"), ("NVIDIA GeForce RTX 3060", "RTX-3060-12GB"),
])
def test_a_gpu_typed_without_separators_or_memory_is_the_one_catalog_card(typed, key):
    assert hardware.get_gpu(typed) == GPUS[key]
    assert hardware.detect(simulate=typed).gpu == GPUS[key]


def test_a_name_two_cards_share_is_refused_naming_both():
    with pytest.raises(ValueError, match="A100-40GB or A100-80GB"):
        hardware.get_gpu("A100")


@pytest.mark.parametrize("typed, wrong", [("RTX 3080", ["RTX-3090", "RTX-3060"]), ("a10", ["A100"]),
                                         ("RTX 3050", ["RTX-3060", "RTX-3090", "RTX-4060"])])
def test_an_unknown_card_is_never_offered_another_model_number(typed, wrong):
    with pytest.raises(ValueError) as err:
        hardware.get_gpu(typed)
    hint = str(err.value).split("Known:")[0]
    assert not any(w in hint for w in wrong), hint
    assert "GpuSpec" in str(err.value)  # the way to plan a card the catalog lacks


def test_a_detected_card_with_another_memory_size_than_its_catalog_entry_is_planned_as_it_is(monkeypatch):
    # the RTX 3060 is sold with 12 GB and with 8 GB under one torch name: plan the 8 GB one as 8 GB
    from types import SimpleNamespace

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i=0: SimpleNamespace(name="NVIDIA GeForce RTX 3060", major=8, minor=6))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (7 * 2**30, int(7.75 * 2**30)))
    report = hardware.detect()
    assert report.gpu.memory_gib == pytest.approx(7.75)
    assert report.gpu.bandwidth_gbs == GPUS["RTX-3060-12GB"].bandwidth_gbs
    assert any("7.75 GiB" in n for n in report.notes)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (11 * 2**30, int(11.7 * 2**30)))
    assert hardware.detect().gpu == GPUS["RTX-3060-12GB"]  # a driver's few hundred MiB is the same card


_PLACE = re.compile(r"\b(?:Appendix|Table|page|p\.|section|Figure)\s*[A-Z0-9]")


def test_a_note_that_places_a_figure_in_its_source_says_where_that_wording_was_read():
    # "Appendix A, GeForce RTX 4090" was typed without anyone reading the appendix: a note that names a place
    # inside its source names the copy on which that place was read, or does not name the place
    from colab_tts.cited import all_cited

    for entry in (c for c in all_cited() if c.key.startswith("gpus.")):
        if _PLACE.search(entry.note):
            assert re.search(r"read on its copy at https?://\S+", entry.note), f"{entry.key}: {entry.note}"


def test_memory_classes_are_the_sizes_the_cards_are_sold_with():
    classes = {k: hardware.memory_class_gb(g) for k, g in GPUS.items()}
    assert {k for k, gb in classes.items() if gb == 8} == {"RTX-3070", "RTX-4060"}
    assert classes["T4"] == classes["V100-16GB"] == 16 and classes["RTX-3060-12GB"] == 12
    assert classes["A10G"] == classes["L4"] == 24  # 21.99 GiB reported: a 24 GB card, not a "22 GB" one
    assert classes["A100-40GB"] == 40 and classes["H100-80GB"] == 80
    assert hardware.memory_classes_gb() == {8, 12, 16, 24, 40, 80}
    assert hardware.eight_gb_card("RTX-3070") is GPUS["RTX-3070"]
    with pytest.raises(ValueError, match="'T4' is a 16 GB card"):
        hardware.eight_gb_card("T4")


def test_the_device_note_says_a_known_card_with_other_memory_is_known():
    # notebook 00 called an 8 GB RTX 3060 "not in the catalog": it is, planned with the memory it reports
    from dataclasses import replace

    from colab_tts.lessons import gpu_check

    def report(spec):
        return hardware.DeviceReport(True, spec.name, spec.cc, spec.memory_gib, 1.0, True, None, None, False, gpu=spec)

    assert gpu_check.catalog_key(report(GPUS["RTX-3060-12GB"])) == ("RTX-3060-12GB", None)
    key, note = gpu_check.catalog_key(report(replace(GPUS["RTX-3060-12GB"], memory_gib=7.75)))
    assert key is None and "not in the catalog" not in note
    assert "in the catalog (RTX-3060-12GB)" in note and "7.75 GiB, not the catalog's 11.76 GiB" in note
    key, note = gpu_check.catalog_key(report(GpuSpec("NVIDIA B200", (10, 0), 178.0, 8000, 2250)))
    assert key is None and note.startswith("NVIDIA B200 is not in the catalog")
