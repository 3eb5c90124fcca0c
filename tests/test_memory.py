import pytest
import torch

from colab_tts.memory import (
    MIB,
    is_on_accelerator,
    model_offload,
    module_bytes,
    offload_hook,
    on_accelerator,
    to_accelerator,
    to_host,
    track_peak,
)

N = 1_000_000  # floats: 4 MB each block below


def test_known_allocation_pattern_within_5_percent():
    with track_peak("cpu") as mem:
        a = torch.empty(N)          # 4 MB
        b = a * 2                   # 8 MB live
        view = b[:10]               # a view: no new storage
        del a                       # 4 MB
        c = torch.ones(3 * N)       # 16 MB live: the peak
        del c                       # 4 MB
        d = torch.zeros(N // 2)     # 6 MB
    expected_peak = 4 * 4 * N
    assert mem.peak_bytes == pytest.approx(expected_peak, rel=0.05)
    assert mem.end_bytes == pytest.approx(4 * N + 2 * N, rel=0.05)
    assert mem.peak_mib == pytest.approx(expected_peak / MIB, rel=0.05)
    del b, view, d


def test_tensors_from_before_the_block_are_not_counted():
    big = torch.ones(4 * N)
    with track_peak("cpu") as mem:
        y = big[: N].clone()  # 4 MB
        y.add_(1)             # in place: nothing new
    assert mem.peak_bytes == pytest.approx(4 * N, rel=0.05)
    del big, y


def test_matmul_chain_reads_its_intermediates():
    x = torch.randn(256, 512)
    w = torch.randn(512, 512)
    with torch.no_grad(), track_peak("cpu") as mem:
        h = x @ w          # 512 KiB
        h = torch.relu(h)  # new 512 KiB while the old one is alive
    assert mem.peak_bytes == pytest.approx(2 * 256 * 512 * 4, rel=0.05)


def test_grad_keeps_activations_no_grad_does_not():
    layers = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)])
    x = torch.randn(512, 256, requires_grad=True)
    with torch.no_grad(), track_peak("cpu") as off:
        layers(x)
    with track_peak("cpu") as on:
        layers(x).sum()
    act = 512 * 256 * 4
    assert off.peak_bytes <= 2.1 * act
    assert on.peak_bytes >= 7 * act  # every layer's input is kept for backward


def test_bad_device():
    with pytest.raises(ValueError, match="device"):
        with track_peak("tpu-ish"):
            pass


def _net():
    return torch.nn.Sequential(torch.nn.Linear(500, 500), torch.nn.ReLU(), torch.nn.Linear(500, 500))


def test_on_accelerator_emulated_copies_weights_and_frees_them():
    net = _net()
    size = module_bytes(net)
    assert size == (2 * 500 * 500 + 2 * 500) * 4
    home = net[0].weight.data_ptr()
    with track_peak("cpu") as mem:
        with on_accelerator(net, "cpu"):
            assert is_on_accelerator(net, "cpu") and net[0].weight.data_ptr() != home
            net(torch.randn(4, 500))
    assert not is_on_accelerator(net, "cpu") and net[0].weight.data_ptr() == home
    assert mem.peak_bytes == pytest.approx(size, rel=0.05)
    assert mem.end_bytes < 0.01 * size


def test_offload_hook_moves_in_for_each_call():
    net = _net()
    handle = offload_hook(net, "cpu")
    x = torch.randn(2, 500)
    with track_peak("cpu") as mem:
        out = net(x)
    assert not is_on_accelerator(net, "cpu") and out.shape == (2, 500)
    assert mem.peak_bytes >= module_bytes(net)
    handle.remove()
    with track_peak("cpu") as mem:
        net(x)
    assert mem.peak_bytes < 0.05 * module_bytes(net)


def test_model_offload_keeps_one_stage_at_a_time():
    a, b = _net(), _net()
    hooks = model_offload({"a": a, "b": b}, "cpu")
    x = torch.randn(2, 500)
    with track_peak("cpu") as mem:
        a(x)
        a(x)
        assert is_on_accelerator(a, "cpu") and not is_on_accelerator(b, "cpu")
        b(x)
        assert is_on_accelerator(b, "cpu") and not is_on_accelerator(a, "cpu")
    one = module_bytes(a)
    assert mem.peak_bytes == pytest.approx(one, rel=0.05)  # never both
    hooks.remove()
    assert not is_on_accelerator(a, "cpu") and not is_on_accelerator(b, "cpu")


def test_to_host_is_idempotent_and_type_checked():
    net = _net()
    to_accelerator(net, "cpu")
    to_accelerator(net, "cpu")  # twice: still one copy
    to_host(net)
    to_host(net)
    assert not is_on_accelerator(net, "cpu")
    with pytest.raises(TypeError, match="nn.Module"):
        to_host("model")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_peak_matches_analytic():
    with track_peak("cuda") as mem:
        a = torch.empty(N, device="cuda")
        b = torch.empty(3 * N, device="cuda")
        del a, b
    assert mem.peak_bytes == pytest.approx(16 * N, rel=0.05)
