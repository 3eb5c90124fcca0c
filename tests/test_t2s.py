"""The GPT-SoVITS GPT stage: config, upstream checkpoint layout, and the forward pass against torch's own layers."""

import pytest
import torch
from torch import nn

from colab_tts.decode_caches import NoCache
from colab_tts.t2s import (
    T2SConfig,
    T2SModel,
    load_gpt_sovits_checkpoint,
    prefix_mask,
    to_upstream_checkpoint,
    upstream_names,
)

SMALL = T2SConfig.small(n_layer=2, hidden_dim=64, n_head=4)


def test_defaults_are_gpt_sovits_v2():
    c = T2SConfig()
    assert (c.n_layer, c.hidden_dim, c.n_head, c.head_dim, c.ffn_dim) == (24, 512, 16, 32, 2048)
    assert (c.vocab_size, c.eos_id, c.phoneme_vocab_size, c.bert_dim) == (1025, 1024, 732, 1024)
    assert c.tokens_per_second == 25
    with torch.device("meta"):  # count without allocating or initialising 77 M weights
        model = T2SModel(c)
    total = sum(p.numel() for p in model.parameters())
    assert 76e6 < total < 79e6  # ~77 M parameters


@pytest.mark.parametrize("kwargs, match", [
    ({"hidden_dim": 100, "n_head": 16}, "multiple of n_head"),
    ({"vocab_size": 1025, "eos_id": 3}, "vocab_size - 1"),
    ({"n_layer": 0}, "n_layer"),
])
def test_config_rejects_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        T2SConfig(**kwargs)


def test_upstream_config_round_trip():
    up = SMALL.to_upstream()
    assert set(up["model"]) >= {"n_layer", "hidden_dim", "head", "vocab_size", "phoneme_vocab_size", "EOS"}
    assert T2SConfig.from_upstream(up) == SMALL
    with pytest.raises(ValueError, match="lacks"):
        T2SConfig.from_upstream({"model": {"n_layer": 2}})


def _upstream_checkpoint(seed=0):
    torch.manual_seed(seed)
    model = T2SModel(SMALL).eval()
    with torch.no_grad():  # alphas are 1 at init: make them tell apart text and audio
        model.text_alpha.fill_(0.7)
        model.audio_alpha.fill_(1.3)
    return model, to_upstream_checkpoint(model)


def test_checkpoint_uses_upstream_names_and_loads_exactly(tmp_path):
    model, ckpt = _upstream_checkpoint()
    names = set(ckpt["weight"])
    for name in ["model.ar_text_embedding.word_embeddings.weight", "model.bert_proj.weight",
                 "model.ar_audio_position.alpha", "model.h.layers.1.self_attn.in_proj_weight",
                 "model.h.layers.0.self_attn.out_proj.bias", "model.h.layers.1.linear2.weight",
                 "model.h.layers.0.norm2.bias", "model.ar_predict_layer.weight"]:
        assert name in names
    assert len(names) == len(upstream_names(SMALL.n_layer)) == len(model.state_dict())
    path = tmp_path / "s1.ckpt"
    torch.save(ckpt, path)
    loaded = load_gpt_sovits_checkpoint(path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_checkpoint_errors_name_the_problem():
    _, ckpt = _upstream_checkpoint()
    bad = dict(ckpt, weight=dict(ckpt["weight"]))
    bad["weight"]["model.h.layers.0.linear1.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"model\.h\.layers\.0\.linear1\.weight has shape \(3, 3\)"):
        load_gpt_sovits_checkpoint(bad)
    short = dict(ckpt, weight={k: v for k, v in ckpt["weight"].items() if "ar_predict_layer" not in k})
    with pytest.raises(ValueError, match="missing.*head.weight"):
        load_gpt_sovits_checkpoint(short)
    extra = dict(ckpt, weight={**ckpt["weight"], "enc_p.proj.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected.*enc_p"):
        load_gpt_sovits_checkpoint(extra)
    with pytest.raises(ValueError, match="'config' and 'weight'"):
        load_gpt_sovits_checkpoint({"weight": {}})
    with pytest.raises(ValueError, match="does not exist"):
        load_gpt_sovits_checkpoint("/nonexistent/s1.ckpt")


class _RunsCode:
    """A pickle that calls a function when it is unpickled (what a hostile .ckpt does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.write_text, (pathlib.Path(self.marker), "the checkpoint ran code"))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    _, ckpt = _upstream_checkpoint()
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.ckpt"
    torch.save({**ckpt, "info": _RunsCode(marker)}, path)  # the real layout, plus one object that runs code
    with pytest.raises(ValueError, match=r"evil\.ckpt cannot be read .*other than tensors, numbers and strings"):
        load_gpt_sovits_checkpoint(path)
    assert not marker.exists(), "loading a checkpoint ran code"
    import pickle  # a plain pickle (not torch's zip format) naming os.system, too

    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(ValueError, match="plain.ckpt cannot be read"):
        load_gpt_sovits_checkpoint(plain)
    assert not marker.exists()


def test_a_truncated_corrupt_or_folder_checkpoint_is_one_clear_error(tmp_path):
    _, ckpt = _upstream_checkpoint()
    good = tmp_path / "s1.ckpt"
    torch.save(ckpt, good)
    data = good.read_bytes()
    cases = {"truncated.ckpt": data[: len(data) // 2], "empty.ckpt": b"", "noise.ckpt": bytes(range(256)) * 8,
             "text.ckpt": b"not a checkpoint\n"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=rf"checkpoint .*{name} cannot be read as a GPT-SoVITS s1 checkpoint"):
            load_gpt_sovits_checkpoint(tmp_path / name)
    (tmp_path / "folder.ckpt").mkdir()
    with pytest.raises(ValueError, match="folder.ckpt is a folder, not a file"):
        load_gpt_sovits_checkpoint(str(tmp_path / "folder.ckpt"))
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(ValueError, match="a dict with 'config' and 'weight'; got list"):
        load_gpt_sovits_checkpoint(tmp_path / "list.ckpt")
    with pytest.raises(TypeError, match="path .* or the loaded dict, got int"):
        load_gpt_sovits_checkpoint(3)


def test_prefix_mask_text_is_bidirectional_semantic_is_causal():
    # one row, 1 pad + 2 text + 3 semantic positions
    m = prefix_mask(torch.tensor([2]), torch.tensor([3]), 6)[0, 0]
    text, sem = [1, 2], [3, 4, 5]
    assert m[1, 2] and m[2, 1]  # text sees all text
    assert not m[1, 3] and not m[2, 5]  # text never sees semantic tokens
    assert m[3, 1] and m[3, 3] and not m[3, 4]  # semantic: text + causal
    assert not m[:, 0][1:].any() and m[0, 0]  # padding is never attended, only itself
    assert m[5, text + sem].all()


def test_forward_matches_torch_transformer_layers_with_upstream_weights():
    """Upstream layers have torch.nn.TransformerEncoderLayer's names and math (post-norm, ReLU):
    load the upstream-layout weights into torch's layers and compare the full forward pass."""
    model, ckpt = _upstream_checkpoint()
    c = SMALL
    layers = nn.ModuleList(nn.TransformerEncoderLayer(c.hidden_dim, c.n_head, c.ffn_dim, dropout=0.0,
                                                      batch_first=True) for _ in range(c.n_layer)).eval()
    w = ckpt["weight"]
    layers.load_state_dict({k.removeprefix("model.h.layers."): v for k, v in w.items() if k.startswith("model.h.")})
    g = torch.Generator().manual_seed(1)
    phon, bert = torch.randint(0, 732, (7,), generator=g), torch.randn(7, 1024, generator=g)
    sem = torch.randint(0, 1024, (5,), generator=g)
    with torch.inference_mode():
        x = model.embed_text(phon, bert)
        y = model.embed_audio(sem, torch.arange(5))
        xy = torch.cat([x, y])[None]
        allowed = prefix_mask(torch.tensor([7]), torch.tensor([5]), 12)[0, 0]
        h = xy
        for layer in layers:
            h = layer(h, src_mask=~allowed)  # torch: True = masked
        expected = h[0, -1] @ w["model.ar_predict_layer.weight"].T
        got = model.prefill(xy, NoCache(), allowed[None, None])[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # embeddings follow upstream: token + alpha * sine table
    torch.testing.assert_close(y[2] - model.audio_embedding.weight[sem[2]], 1.3 * model.sine[2], atol=1e-5, rtol=0)


def test_embed_text_rejects_upstream_bert_layout():
    model = T2SModel(SMALL)
    with pytest.raises(ValueError, match="transpose"):
        model.embed_text(torch.zeros(5, dtype=torch.long), torch.zeros(1024, 5))
