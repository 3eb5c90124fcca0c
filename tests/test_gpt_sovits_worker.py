"""The GPT-SoVITS worker's comparison rows without upstream: the CUDA-graph rows' skip lines and, with the
device check faked, our CUDA-graph path on this CPU (``tests/test_gpt_sovits_upstream.py`` adds upstream's)."""

import torch

from colab_tts import compiled
from colab_tts.decoding import GREEDY
from colab_tts.deploy import gpt_sovits
from colab_tts.t2s import T2SConfig, T2SModel
from colab_tts.t2s_runner import decode_segments, random_prompt, random_segments

CAP = 8


def _inputs():
    torch.manual_seed(0)
    model = T2SModel(T2SConfig.small(n_layer=2, hidden_dim=64, n_head=4)).eval()
    segments, prompt = random_segments(model.config, [7, 3, 11]), random_prompt(model.config, 6)
    reference = decode_segments(model, segments, prompt, GREEDY, cache="concat", batch_size=1, max_new_tokens=CAP).tokens
    return model, segments, prompt, reference


def test_cuda_graph_rows_without_cuda_are_one_needs_cuda_line_each(one_thread):
    model, segments, prompt, reference = _inputs()
    rows = gpt_sovits.cuda_graph_rows(segments, prompt, reference, model, "s1.ckpt", GREEDY, CAP, -1, cuda=False)
    assert list(rows) == list(gpt_sovits.CUDA_GRAPH_PATHS)
    lines = [row["skipped"] for row in rows.values()]
    assert all(set(row) == {"skipped"} for row in rows.values())
    assert all(line.startswith("needs CUDA: ") and line.endswith("; this run has cpu") and "\n" not in line
               for line in lines)
    assert "CUDAGraphRunner" in lines[0] and "reduce-overhead" in lines[1]


def test_cuda_graph_rows_with_the_device_check_faked_time_ours_and_keep_a_failing_path_to_one_line(monkeypatch, one_thread):
    model, segments, prompt, reference = _inputs()
    steps = []
    monkeypatch.setattr(compiled, "compiled_step", lambda m: steps.append(m) or m.decode_step)  # no CPU compile
    rows = gpt_sovits.cuda_graph_rows(segments, prompt, reference, model, "missing.ckpt", GREEDY, CAP, -1, cuda=True)
    upstream, ours = (rows[label] for label in gpt_sovits.CUDA_GRAPH_PATHS)
    assert steps == [model], "our row decodes with the compiled step"
    assert ours["of"] == "ours" and ours["segments_identical"] == "3/3" and ours["tokens"] == 3 * CAP
    assert ours["first_pass_seconds"] > 0 and ours["tokens_per_s"] > 0
    # no upstream here: its row fails (the import or the checkpoint), in one line, and the other rows stay
    assert upstream["of"] == "upstream" and set(upstream) == {"failed", "of"} and "\n" not in upstream["failed"]
