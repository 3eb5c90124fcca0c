"""The decode loop: greedy equivalence across caches and batching, the sampler's distribution, stopping,
buckets, HF models, precision chosen on compute capability, and notebook 04's lesson arithmetic."""

import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from colab_tts import hardware, precision
from colab_tts.decode_caches import CACHES
from colab_tts.decoding import FIXED_LENGTH, GREEDY, HFRunner, Sampling, generate, length_buckets, sample
from colab_tts.lessons import gpt_stage
from colab_tts.precision import prepare_model
from colab_tts.t2s import T2SConfig, T2SModel
from colab_tts.t2s_runner import T2SRunner, decode_segments, random_prompt, random_segments

CONFIG = T2SConfig.small(n_layer=2, hidden_dim=64, n_head=4)
LENGTHS = [7, 15, 3, 11]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return T2SModel(CONFIG).eval()


@pytest.fixture(scope="module")
def segments():
    return random_segments(CONFIG, LENGTHS, seed=3)


@pytest.fixture(scope="module")
def prompt():
    return random_prompt(CONFIG, 9)


def _greedy(model, segs, prompt, cache, n=16, **kw):
    runner = T2SRunner(model, segs, prompt, cache, max_new_tokens=n, **kw)
    return generate(runner, FIXED_LENGTH, CONFIG.eos_id, n).tokens


def test_greedy_tokens_identical_for_every_cache_variant(model, segments, prompt):
    results = {cache: _greedy(model, segments, prompt, cache) for cache in CACHES}
    results["static fixed-shape"] = _greedy(model, segments, prompt, "static", fixed_shape=True)
    reference = results["concat"]
    assert all(len(t) == 16 for t in reference)
    assert len({tuple(t) for t in reference}) == len(LENGTHS)  # rows really differ
    for name, tokens in results.items():
        assert tokens == reference, name


def test_segment_alone_equals_segment_in_a_left_padded_batch(model, segments, prompt):
    batched = _greedy(model, segments, prompt, "static")  # batched concat == batched static: test above
    for i, seg in enumerate(segments):
        assert _greedy(model, [seg], prompt, "concat")[0] == batched[i]


def test_finished_rows_leave_the_batch(model, segments, prompt):
    caps = [16, 3, 10, 5]  # the last row left (0) is a padded one: its mask must survive the drops
    runner = T2SRunner(model, segments, prompt, "static", max_new_tokens=16)
    g = generate(runner, FIXED_LENGTH, CONFIG.eos_id, caps)
    assert [len(t) for t in g.tokens] == caps
    assert g.steps == 16 and g.row_steps == sum(caps)  # no work after a row's cap
    full = _greedy(model, segments, prompt, "static")
    assert all(full[i][:c] == g.tokens[i] for i, c in enumerate(caps))


def test_buckets_group_similar_lengths_and_keep_the_order(model, segments, prompt):
    assert length_buckets([5, 40, 7, 38, 20], 2) == [[1, 3], [4, 2], [0]]
    caps = [6, 9, 4, 8]
    upstream = decode_segments(model, segments, prompt, FIXED_LENGTH, "concat", batch_size=1, max_new_tokens=caps)
    bucketed = decode_segments(model, segments, prompt, FIXED_LENGTH, "static", batch_size=3, max_new_tokens=caps)
    assert bucketed.tokens == upstream.tokens
    assert [len(t) for t in bucketed.tokens] == caps


class ScriptedRunner:
    """Logits that favour a scripted token per row and step: tests the loop without a model."""

    def __init__(self, script, vocab=8):
        self.script, self.vocab, self.batch, self.history = script, vocab, len(script), [[] for _ in script]
        self.rows, self.t, self.can_drop, self.kept = torch.arange(len(script)), 0, True, []

    def _logits(self):
        out = torch.zeros(len(self.rows), self.vocab)
        for j, r in enumerate(self.rows.tolist()):
            out[j, self.script[r][min(self.t, len(self.script[r]) - 1)]] = 10.0
        return out

    def start(self):
        return self._logits()

    def step(self, tokens):
        self.t += 1
        return self._logits()

    def keep(self, rows):
        self.kept.append(len(rows))
        self.rows = self.rows[rows]


def test_stops_at_eos_drops_the_row_and_masks_eos_early():
    eos = 7
    script = [[1, 7, 2, 7], [3, 4, 5, 6, 1, 2, 3, 4, 5]]
    runner = ScriptedRunner(script)
    g = generate(runner, Sampling(greedy=True, repetition_penalty=1.0, min_new_tokens=2), eos, 9)
    # step 1 wants EOS but it is blocked (min_new_tokens=2): the next best (token 0) comes instead;
    # step 3 draws EOS: the row ends with 3 tokens, EOS not included
    assert g.tokens[0] == [1, 0, 2] and g.hit_eos == [True, False]
    assert g.tokens[1] == script[1]
    assert runner.kept == [1]  # row 0 left the batch
    lazy = generate(ScriptedRunner(script), Sampling(greedy=True, repetition_penalty=1.0, min_new_tokens=2), eos, 9,
                    sync_every=4)
    assert lazy.tokens == g.tokens  # fewer host syncs, same result


def test_sampling_settings():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    seen = torch.zeros(4, 50, dtype=torch.bool)
    g = torch.Generator().manual_seed(5)
    a, _ = sample(logits, seen, Sampling(seed=5), generator=torch.Generator().manual_seed(5))
    b, _ = sample(logits, seen, Sampling(seed=5), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)  # seeded
    top1, best = sample(logits, seen, Sampling(top_k=1), generator=g)
    assert torch.equal(top1, logits.argmax(-1)) and torch.equal(best, top1)
    tiny_p, _ = sample(logits, seen, Sampling(top_p=1e-6), generator=g)
    assert torch.equal(tiny_p, logits.argmax(-1))
    draws = torch.stack([sample(logits, seen, Sampling(top_k=3), generator=g)[0] for _ in range(200)])
    allowed = logits.topk(3, -1).indices
    assert all(set(draws[:, r].tolist()) <= set(allowed[r].tolist()) for r in range(4))
    assert len(set(draws[:, 0].tolist())) > 1  # it does sample
    # repetition penalty: a seen positive logit is divided, pushing the argmax elsewhere
    two = torch.tensor([[2.0, 1.9, -1.0]])
    penal = sample(two, torch.tensor([[True, False, False]]), GREEDY)[0]
    assert penal.item() == 1
    blocked = sample(torch.tensor([[0.0, 0.0, 9.0]]), torch.zeros(1, 3, dtype=torch.bool), GREEDY, eos_id=2,
                     block_eos=True)[0]
    assert blocked.item() != 2


@pytest.mark.parametrize("kwargs", [{"top_p": 0}, {"top_k": 0}, {"temperature": -1}, {"min_new_tokens": 1.5}])
def test_bad_sampling_settings_raise(kwargs):
    with pytest.raises((ValueError, TypeError)):
        Sampling(**kwargs)


def test_bad_inputs_name_the_fix(model, segments, prompt):
    with pytest.raises(ValueError, match="Known: concat, static, none"):
        T2SRunner(model, segments, prompt, "paged")
    with pytest.raises(ValueError, match="one per row"):
        generate(T2SRunner(model, segments, prompt), FIXED_LENGTH, CONFIG.eos_id, [3, 4])
    with pytest.raises(ValueError, match="fixed_shape and kv_dtype need"):
        T2SRunner(model, segments, prompt, "concat", fixed_shape=True)


def test_reduced_precision_and_int8_decode(segments, prompt):
    torch.manual_seed(0)
    base = T2SModel(CONFIG).eval()
    state = base.state_dict()
    ref = _greedy(base, segments[:1], prompt, "static", n=8)[0]
    bf16, reason = prepare_model(T2SModel(CONFIG).eval(), "bfloat16", "cpu")
    assert bf16.dtype == torch.bfloat16 and "CPU" in reason
    q = T2SModel(CONFIG).eval()
    q.load_state_dict(state)
    q, reason = prepare_model(q, "int8", "cpu")
    assert "int8" in reason and q.layers[0].qkv.weight().dtype == torch.qint8
    tokens = _greedy(q, segments[:1], prompt, "static", n=8)[0]
    assert len(tokens) == 8 and all(0 <= t < CONFIG.vocab_size for t in tokens)
    assert tokens[0] == ref[0]  # int8 weights keep the first choice of this tiny model
    with pytest.raises(ValueError, match="CPU only"):
        prepare_model(T2SModel(CONFIG), "int8", "meta")


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_same_loop_drives_a_hugging_face_causal_lm(cache):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    lm = LlamaForCausalLM(cfg).eval()
    prompts = [[5, 17, 3, 44, 8, 9], [12, 60, 2]]
    g = generate(HFRunner(lm, prompts, cache, max_new_tokens=10),
                 Sampling(greedy=True, repetition_penalty=1.0, min_new_tokens=0), None, 10)
    for p, tokens in zip(prompts, g.tokens):
        with torch.inference_mode():
            ref = lm.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False, pad_token_id=0)
        assert tokens == ref[0, len(p):].tolist()


def test_roofline_of_the_real_gpt_stage_on_a_t4():
    (t4,) = gpt_stage.roofline_rows(["T4"], "float16", context=0)
    assert 150 < t4["MB per token"] < 156  # ~77 M parameters in fp16 (~154 MB per token)
    assert t4["ceiling tokens/s"] == pytest.approx(320e9 / (t4["MB per token"] * 1e6))
    (with_kv,) = gpt_stage.roofline_rows(["T4"], "float16", context=500)
    assert with_kv["ceiling tokens/s"] < t4["ceiling tokens/s"]  # the cache is read too
    assert with_kv["kind"].startswith("predicted")


def test_bf16_kv_cache_beside_fp32_weights(model, segments, prompt):
    ref = _greedy(model, segments, prompt, "static", n=6)
    runner = T2SRunner(model, segments, prompt, "static", max_new_tokens=6, kv_dtype="bfloat16")
    assert runner.cache.k[0].dtype == torch.bfloat16
    tokens = generate(runner, FIXED_LENGTH, CONFIG.eos_id, 6).tokens
    assert [t[0] for t in tokens] == [t[0] for t in ref]  # the prefill's choice survives bf16 K/V
    with pytest.raises(ValueError, match="need cache='static'"):
        T2SRunner(model, segments, prompt, "concat", kv_dtype="bfloat16")


def _reference_probs(logits, seen, top_k, top_p, temperature, penalty):
    """GPT-SoVITS's order, written out token by token: penalty -> top-p -> temperature -> top-k -> softmax."""
    x = [(v * penalty if v < 0 else v / penalty) if s else v for v, s in zip(logits, seen)]
    order = sorted(range(len(x)), key=lambda i: -x[i])
    z = sum(math.exp(v) for v in x)
    kept, cum = set(), 0.0
    for rank, i in enumerate(order):
        cum += math.exp(x[i]) / z
        if rank == 0 or cum <= top_p:  # upstream drops a token once the mass up to it exceeds top_p
            kept.add(i)
    kth = sorted((x[i] / temperature for i in kept), reverse=True)[min(top_k, len(kept)) - 1]
    kept = {i for i in kept if x[i] / temperature >= kth}
    w = {i: math.exp(x[i] / temperature) for i in kept}
    total = sum(w.values())
    return [w.get(i, 0.0) / total for i in range(len(x))]


@pytest.mark.parametrize("settings, n_kept", [
    ({"top_k": 5, "top_p": 1.0}, 5),  # top-k cuts
    ({"top_k": 9, "top_p": 0.7}, 4),  # top-p cuts (both keep a prefix of the same order: one cut at a time)
])
def test_sampler_draws_from_the_softmax_after_penalty_top_p_temperature_and_top_k(settings, n_kept):
    # The penalty reorders tokens 0 and 9 (seen) against 1 and 2; temperature sharpens what is kept.
    logits = [2.0, 1.8, 1.5, 1.0, 0.8, 0.3, -0.5, -1.0, 0.9, 1.7]
    seen = [True, False, False, False, False, False, False, True, False, True]
    s = Sampling(temperature=0.7, repetition_penalty=1.35, **settings)
    expected = torch.tensor(_reference_probs(logits, seen, s.top_k, s.top_p, s.temperature, s.repetition_penalty))
    assert int((expected > 0).sum()) == n_kept and expected.max() > 1.5 * expected[expected > 0].min()
    n = 20_000
    rows = torch.tensor([logits]).expand(n, -1)
    tokens, _ = sample(rows, torch.tensor([seen]).expand(n, -1), s, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=len(logits)).double() / n
    assert (freq[expected == 0] == 0).all()  # nothing outside the kept set, ever
    tv = 0.5 * (freq - expected.double()).abs().sum().item()
    assert tv < 0.015, f"total variation {tv:.4f}: the draws do not follow the softmax"  # noise at n=20k: ~0.006


def _fake_cuda(monkeypatch, name, cc):
    """Make torch report one CUDA GPU (nothing runs on it); is_bf16_supported answers True as on a T4."""
    props = SimpleNamespace(name=name, major=cc[0], minor=cc[1], total_memory=16 * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: props)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: cc)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (14 * 2**30, 15 * 2**30))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def _benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpt_stage.py"
    spec = importlib.util.spec_from_file_location("gpt_stage_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, cc, half", [("Tesla T4", (7, 5), "float16"), ("Tesla V100-SXM2-16GB", (7, 0), "float16"),
                                            ("Some Turing Card", (7, 5), "float16"),
                                            ("NVIDIA A100-SXM4-40GB", (8, 0), "bfloat16")])
def test_no_bfloat16_below_compute_capability_8(monkeypatch, name, cc, half):
    bench = _benchmark()
    _fake_cuda(monkeypatch, name, cc)
    assert hardware.detect().compute_capability == cc
    assert bench.half_dtype("cuda") == half  # the benchmark's half-precision rows
    assert precision.choose_dtype("bfloat16", "cuda").dtype == half  # what prepare_model would cast to
    assert (precision.choose_dtype("auto", "cuda").dtype == "bfloat16") == (cc >= (8, 0))


def test_sampling_is_timed_on_the_decode_device(monkeypatch):
    synced = []
    monkeypatch.setattr(gpt_stage.devices, "sync", lambda d: synced.append(torch.device(d).type))
    rows = gpt_stage.time_sampling({"greedy": GREEDY}, vocab=50, repeats=3, device="cpu")
    assert synced == ["cpu", "cpu"] and rows[0]["kind"] == "measured: this run, cpu"
    assert rows[0]["us per token"] > 0


def test_step_kernel_count_separates_kernels_from_views():
    one = gpt_stage.step_kernel_count(CONFIG)
    deeper = gpt_stage.step_kernel_count(T2SConfig.small(n_layer=4, hidden_dim=64, n_head=4))
    per_layer = (deeper["kernels"] - one["kernels"]) / 2
    assert 8 <= per_layer <= 16  # qkv, attention, out, 2 norms, 2 FFN, residual adds, cache writes
    assert one["views"] > 0 and deeper["views"] > one["views"]


def test_headline_never_leads_with_a_cpu_only_effect():
    def row(t, x):
        return {"technique": t, "speed-up": x, "RTF": 1 / x, "kind": "measured: this run, cpu",
                "on a GPU": gpt_stage.gpu_expectation(t, "cpu")}
    long_rows = [row("upstream", 1.0), row("buckets of 8, static, float32", 3.0), row("buckets of 8, static, int8", 5.0)]
    lines = gpt_stage.headline([row("concat", 1.0), row("static cache, float16", 0.58)], long_rows, "cpu")
    assert lines[0].startswith("best path that transfers to a GPU: buckets of 8, static, float32: 3.0x")
    assert any(line.startswith("on this CPU only: buckets of 8, static, int8") for line in lines)
    assert any("static cache, float16: 0.58x" in line and "T4" in line for line in lines)
    on_gpu = gpt_stage.headline([row("concat", 1.0)], long_rows, "cuda")
    assert "int8" in on_gpu[0]  # measured on a GPU, whatever is fastest leads


def test_overhead_verdict_compares_with_the_t4_bandwidth_time():
    assert "overhead-bound" in gpt_stage.overhead_verdict(5e-3)
    assert "bandwidth-bound" in gpt_stage.overhead_verdict(1e-4)


def test_every_row_of_the_step_budget_says_what_kind_of_figure_it_is():
    rows = gpt_stage.step_budget_rows("T4", overhead_s=6e-3, kernels=295)
    assert all(r["kind"].startswith(("predicted", "measured", "cited")) for r in rows)
    weights, with_kv = rows[0]["ms per token"], rows[1]["ms per token"]
    assert 0.45 < weights < with_kv < 0.6  # 154 MB of fp16 weights at 320 GB/s, then the K/V on top
    assert [r["ms per token"] for r in rows if r["kind"].startswith("measured: this run")] == [6.0]
