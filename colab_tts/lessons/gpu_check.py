"""Notebook 00's tables: the device in use and the GPU catalog, every figure with where it comes from.

Provenance words: *measured* (read from this machine by torch, now), *cited* (a public source, in
``colab_tts/data/cited/gpus.json``), *predicted* (computed by a model in this package, with what it
leaves out).
"""

from __future__ import annotations

from .. import hardware
from ..cited import cited


def device_rows(report: hardware.DeviceReport) -> list[dict]:
    """The device report as (figure, value, provenance) rows; memory in GiB."""
    if report.gpu is None:
        return [{"figure": "GPU", "value": "none", "provenance": "measured: torch sees no CUDA device"}]
    if report.simulated:
        key = next(k for k, g in hardware.GPUS.items() if g == report.gpu)
        how = {f: f"cited (simulated {key}): {cited(f'gpus.{key}.{f}').source}" for f in hardware.FIGURES}
    else:
        where = f"measured: torch on this {report.gpu_name}"
        how = dict.fromkeys(hardware.FIGURES, where)
        known = next((k for k, g in hardware.GPUS.items() if g.name == report.gpu.name), None)
        for f in ("bandwidth_gbs", "fp16_tflops"):  # torch cannot read these: from the catalog, or unknown
            how[f] = f"cited: {cited(f'gpus.{known}.{f}').source}" if known else "unknown (not in the catalog)"
    spec = report.gpu
    rows = [
        {"figure": "GPU", "value": report.gpu_name, "provenance": how["compute_capability"].split(":")[0]},
        {"figure": "compute capability", "value": spec.cc, "provenance": how["compute_capability"]},
        {"figure": "memory (GiB)", "value": f"{spec.memory_gib:.2f}", "provenance": how["memory_gib"]},
        {"figure": "bandwidth (GB/s)", "value": f"{spec.bandwidth_gbs:g}", "provenance": how["bandwidth_gbs"]},
        {"figure": "fp16 tensor TFLOPS", "value": f"{spec.fp16_tflops:g}", "provenance": how["fp16_tflops"]},
        {"figure": "dtype to use", "value": report.dtype,
         "provenance": "predicted: hardware.pick_dtype from the compute capability"},
    ]
    if report.free_gib is not None:
        rows.insert(3, {"figure": "free memory (GiB)", "value": f"{report.free_gib:.2f}",
                        "provenance": f"measured: torch.cuda.mem_get_info on this {report.gpu_name}"})
    return rows


def catalog_key(report: hardware.DeviceReport) -> tuple[str | None, str | None]:
    """The catalog key of the card in use, when the catalog's figures are its own, else None; and a note
    saying which of the two it is when they are not: a card the catalog lacks, or one it knows that reports
    another memory size (an 8 GB RTX 3060 under the 12 GB one's name), which is planned with what it reports."""
    gpu = report.gpu
    key = next((k for k, g in hardware.GPUS.items() if g == gpu), None)
    if gpu is None or key is not None:
        return key, None
    known = next((k for k, g in hardware.GPUS.items() if g.name == gpu.name), None)
    if known is None:
        return None, f"{gpu.name} is not in the catalog: notebook 02 plans it from the memory PyTorch reports"
    return None, (f"{gpu.name} is in the catalog ({known}), but this one reports {gpu.memory_gib:.2f} GiB: "
                  f"notebook 02 plans it with the memory it reports, {gpu.memory_gib:.2f} GiB, not the "
                  f"catalog's {hardware.GPUS[known].memory_gib:.2f} GiB")


def catalog_table() -> tuple[list[dict], list[str]]:
    """The catalog as rows with numbered references per figure, and the numbered references."""
    refs: list[str] = []

    def ref(key, figure):
        source = hardware.figure_source(key, figure)
        if source not in refs:
            refs.append(source)
        return refs.index(source) + 1

    rows = []
    for row in hardware.catalog_rows():
        key = row["key"]
        rows.append(row | {"sources": " ".join(f"{short}[{ref(key, f)}]" for short, f in
                                                (("cc", "compute_capability"), ("mem", "memory_gib"),
                                                 ("bw", "bandwidth_gbs"), ("tf", "fp16_tflops")))})
    return rows, [f"[{i}] {url}" for i, url in enumerate(refs, 1)]
