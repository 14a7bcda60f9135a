"""Feed-forward row chunking (exact, bounds the activation peak) and the window memory estimate
the ComfyUI sampler hands to ComfyUI, checked against exact storage accounting on CPU."""
import sys
from contextlib import contextmanager

import pytest
import torch

from tests.conftest import REPO
from xdyna_core.models.attention import FeedForward, set_feed_forward_chunking
from xdyna_core.sampling.memory import window_activation_bytes

sys.path.insert(0, str(REPO / "bench"))
bench = pytest.importorskip("bench_activation_memory")


@contextmanager
def chunking(rows, *models):
    """Feed-forward chunking `rows` on `models` for the block, the default afterwards."""
    for m in models:
        set_feed_forward_chunking(m, rows)
    try:
        yield
    finally:
        for m in models:
            set_feed_forward_chunking(m, FeedForward.chunk_rows)


def tiny_unet():
    torch.manual_seed(0)
    return bench.build(True, torch.device("cpu"), torch.float32)


def test_chunked_feed_forward_gives_the_same_result():
    ff = FeedForward(16)
    x = torch.randn(3, 50, 16)
    calls = []
    ff.net[0].register_forward_hook(lambda *a: calls.append(a[1][0].shape[0]))
    ff.chunk_rows = None
    full = ff(x)
    ff.chunk_rows = 32
    chunked = ff(x)
    assert calls[1:] == [32, 32, 32, 32, 22]           # 150 rows in passes of 32
    assert chunked.shape == full.shape
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        set_feed_forward_chunking(ff, -1)


def test_unet_output_unchanged_by_chunking():
    (unet, _, _), dim = tiny_unet()
    x = torch.randn(2, 4, 5, 16, 8)
    ctx = torch.randn(2, 93, dim)
    with torch.no_grad():
        with chunking(None, unet):
            ref = unet(x, 500, ctx)
        with chunking(64, unet):
            out = unet(x, 500, ctx)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rows", [None, 256])
def test_estimate_covers_the_measured_peak(rows):
    (unet, cn, _), dim = tiny_unet()
    with chunking(rows, unet, cn):
        peak = bench.step_peak(unet, cn, dim, 16, 16)
    est = window_activation_bytes(unet.config, 16, 16, 16, 2, torch.float32, ff_chunk_rows=rows)
    assert peak > 0
    assert peak <= est <= 2 * peak, (peak, est)


def test_chunking_lowers_the_peak():
    (unet, cn, _), dim = tiny_unet()
    peaks = {}
    for rows in (None, 256):
        with chunking(rows, unet, cn):
            peaks[rows] = bench.step_peak(unet, cn, dim, 16, 16)
    assert peaks[256] < 0.9 * peaks[None], peaks
