"""Upstream GPT-SoVITS's own GPT-stage modules on this CPU, through the worker's comparison (what it reports on Colab).

Runs only when ``GPT_SOVITS_UPSTREAM`` names a checkout of RVC-Boss/GPT-SoVITS (checked against commit
48b1a0169a28582a8984402f82cf438d3bfa6aca): the folder holding ``GPT_SoVITS/AR``. Upstream's
``AR/models/t2s_model.py`` imports ``torchmetrics`` and ``tqdm``; put them on ``PYTHONPATH`` from a throwaway
folder (``pip install --target DIR --no-deps torchmetrics lightning-utilities``). Nothing of upstream is in
this repository. Small random weights (2 layers, width 64), three short segments: seconds.
"""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from colab_tts.decoding import Sampling
from colab_tts.deploy import gpt_sovits
from colab_tts.t2s import T2SConfig, load_gpt_sovits_checkpoint
from colab_tts.t2s_runner import Segment

ROOT = os.environ.get("GPT_SOVITS_UPSTREAM")
pytestmark = [pytest.mark.upstream,
              pytest.mark.skipif(not ROOT, reason="GPT_SOVITS_UPSTREAM (a checkout of RVC-Boss/GPT-SoVITS) is not set")]

EARLY_STOP = 30  # upstream's early_stop_num: it stops after EARLY_STOP + 1 tokens (random weights rarely say EOS)
CAP = EARLY_STOP + 1
SEGMENT_PHONEMES = (9, 4, 13)  # after the reference text's 6 phonemes, as TTS.run prepends them
GREEDY = Sampling(greedy=True, repetition_penalty=1.35)


@pytest.fixture(scope="module")
def upstream():
    with pytest.MonkeyPatch.context() as mp:
        for path in (Path(ROOT), Path(ROOT) / "GPT_SoVITS"):  # as upstream's api_v2.py puts them on sys.path
            mp.syspath_prepend(str(path))
        try:
            from AR.models import structs_cudagraph, t2s_model, t2s_model_cudagraph
        except ImportError as e:
            pytest.fail(f"GPT_SOVITS_UPSTREAM={ROOT} is set but upstream's AR modules do not import ({e}); point it at "
                        "the folder holding GPT_SoVITS/AR and put torchmetrics and tqdm on PYTHONPATH")
        yield SimpleNamespace(t2s=t2s_model, cudagraph=t2s_model_cudagraph, structs=structs_cudagraph)


@pytest.fixture(scope="module")
def setup(upstream, tmp_path_factory):
    """Upstream's decoder with random weights, its checkpoint, and three segments laid out as TTS.run does."""
    config = T2SConfig.small(n_layer=2, hidden_dim=64, n_head=4).to_upstream()
    torch.manual_seed(0)
    decoder = upstream.t2s.Text2SemanticDecoder(config).eval()
    ckpt = tmp_path_factory.mktemp("gsv") / "s1.ckpt"
    torch.save({"config": config, "weight": {f"model.{k}": v for k, v in decoder.state_dict().items()}}, ckpt)
    g = torch.Generator().manual_seed(1)
    ref_phones, ref_bert = torch.randint(0, 732, (6,), generator=g), torch.randn(1024, 6, generator=g)
    prompt = torch.randint(0, 1024, (8,), generator=g)  # the reference clip's semantic tokens
    inputs = [(torch.cat([ref_phones, torch.randint(0, 732, (n,), generator=g)]),
               torch.cat([ref_bert, torch.randn(1024, n, generator=g)], 1)) for n in SEGMENT_PHONEMES]
    return SimpleNamespace(decoder=decoder, ckpt=ckpt, prompt=prompt, inputs=inputs)


def _naive(setup) -> list:
    """Upstream's naive greedy decode of each segment alone (TTS.run's default batch_size=1)."""
    with torch.no_grad():
        return [setup.decoder.infer_panel_naive_batched([x], torch.tensor([len(x)]), setup.prompt[None], [b], top_k=1,
                                                        top_p=1, temperature=1.0, early_stop_num=EARLY_STOP,
                                                        repetition_penalty=1.35)[0][0][len(setup.prompt):].tolist()
                for x, b in setup.inputs]


def _captured(setup, tmp_path) -> dict:
    """The worker's glue around upstream's decoder: two decode calls (one segment, then two), then finish."""
    gpt_sovits.CAPTURED.clear()
    tts = SimpleNamespace(t2s_model=SimpleNamespace(model=setup.decoder),
                          configs=SimpleNamespace(t2s_weights_path=str(setup.ckpt), is_half=False, device="cpu"))
    plan = {"settings": {"compare_greedy": True, "greedy_max_new_tokens": CAP}}
    gpt_sovits.after_build("TTS", tts, plan)
    try:
        with gpt_sovits.around({"kwargs": {"top_k": 1}}, plan, {}), torch.no_grad():
            for batch in (setup.inputs[:1], setup.inputs[1:]):  # as TTS.run with batch_size=1, then 2
                setup.decoder.infer_panel_naive_batched(
                    [x for x, _ in batch], torch.tensor([len(x) for x, _ in batch]),
                    setup.prompt[None].expand(len(batch), -1), [b for _, b in batch], top_k=1, top_p=1,
                    temperature=1.0, early_stop_num=EARLY_STOP, repetition_penalty=1.35)
        return gpt_sovits.finish(plan, tmp_path)
    finally:
        for method in ("infer_panel_batch_infer", "infer_panel_naive_batched"):
            vars(setup.decoder).pop(method, None)  # drop the instance wrappers after_build set
        gpt_sovits.CAPTURED.clear()


def test_every_segment_greedy_identical_to_upstreams_naive_decode(setup, tmp_path):
    extra = _captured(setup, tmp_path)
    rows = extra["greedy_comparison"]
    assert extra["greedy_segments"] == 3 and extra["upstream_greedy_tokens"] == 3 * CAP
    assert {label: row["segments_identical"] for label, row in rows.items() if "skipped" not in row} == {
        "ours, one segment at a time": "3/3", "ours, static cache, length buckets of 8": "3/3"}
    assert [row["skipped"].split(":")[0] for label, row in rows.items() if label in gpt_sovits.CUDA_GRAPH_PATHS] == [
        "needs CUDA", "needs CUDA"]


def _cuda_graph_rows(setup, monkeypatch) -> dict:
    """Both CUDA-graph rows with the device check faked: upstream's runner moves a tensor with ``.cuda()``
    (made a no-op) and only captures a graph when CUDA is available, so it decodes eagerly here, the
    computation its graph replays; ours gets the plain step (compiling on this CPU takes minutes)."""
    from colab_tts import compiled

    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
    monkeypatch.setattr(compiled, "compiled_step", lambda model: model.decode_step)
    model = load_gpt_sovits_checkpoint(setup.ckpt)
    segments = [Segment(x, b.T) for x, b in setup.inputs]
    return gpt_sovits.cuda_graph_rows(segments, setup.prompt, _naive(setup), model, str(setup.ckpt), GREEDY, CAP,
                                      EARLY_STOP, cuda=True)


def test_cuda_graph_rows_run_upstreams_runner_and_ours_when_the_device_check_says_cuda(setup, monkeypatch):
    rows = _cuda_graph_rows(setup, monkeypatch)
    upstream_label, ours_label = gpt_sovits.CUDA_GRAPH_PATHS
    assert {label: row["of"] for label, row in rows.items()} == {upstream_label: "upstream", ours_label: "ours"}
    assert all("failed" not in row and row["tokens"] == 3 * CAP and row["first_pass_seconds"] > 0
               for row in rows.values()), rows
    assert rows[ours_label]["segments_identical"] == "3/3"


def test_upstreams_cuda_graph_decoder_attends_to_cache_slots_it_has_not_written(setup, upstream, monkeypatch):
    """At 48b1a01 its decode step runs scaled_dot_product_attention over the whole preallocated KV cache
    without a mask (t2s_model_cudagraph.py, Attention.forward): the zero slots dilute every attention
    row, so its greedy tokens leave the naive path's. Cut to the slots written so far, they agree."""
    upstream_label, _ = gpt_sovits.CUDA_GRAPH_PATHS
    assert _cuda_graph_rows(setup, monkeypatch)[upstream_label]["segments_identical"] == "0/3", \
        "upstream's CUDA-graph decoder now agrees with its naive one: has t2s_model_cudagraph.py changed since 48b1a01?"
    update = upstream.cudagraph.KVCacheNHD.update

    def written_only(self, input_pos, k, v):
        k_all, v_all = update(self, input_pos, k, v)
        n = int(input_pos.max())  # batch 1: slots [0, input_pos) hold the prompt and the tokens so far
        return k_all[:, :n], v_all[:, :n]

    monkeypatch.setattr(upstream.cudagraph.KVCacheNHD, "update", written_only)
    assert _cuda_graph_rows(setup, monkeypatch)[upstream_label]["segments_identical"] == "3/3"
