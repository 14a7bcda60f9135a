"""Context windows: the official closed-loop "uniform" schedule, coverage, golden windows."""
import pytest

from xdyna_core.sampling.context_windows import context_windows, num_context_windows

PIPELINE_CASES = ["pipeline_3steps", "pipeline_25steps", "pipeline_long_context"]


def reference_windows(n, size, overlap, offset):
    """Plain re-statement of the official rule (spec §4), written independently of the module.

    Short clips: one window of every frame. Long clips: a window starts every (size - overlap)
    frames while the start is inside the clip; each window takes `size` consecutive frames, shifted by
    the step's offset, continuing at frame 0 after frame n-1 (closed loop).
    """
    if n <= size:
        return [list(range(n))]
    out = []
    start = 0
    while start < n:
        frame = start + offset
        while frame >= n:
            frame -= n
        win = []
        for _ in range(size):
            win.append(frame)
            frame += 1
            if frame == n:
                frame = 0
        out.append(win)
        start += size - overlap
    return out


@pytest.mark.parametrize("case", PIPELINE_CASES)
def test_windows_equal_golden_per_step(golden, case):
    meta, t = golden(case)
    call = meta["call"]
    n = call["video_length"]
    offsets = t["window_offsets"].tolist()
    assert len(offsets) == len(meta["context_windows_per_step"])
    for s, offset in enumerate(offsets):
        got = context_windows(n, call["context_frames"], call["context_overlap"], offset)
        assert got == meta["context_windows_per_step"][s], f"step {s}, offset {offset}"


@pytest.mark.parametrize("n", [1, 2, 16, 17, 20, 48, 192])
def test_official_schedule_and_full_coverage_default_parameters(n):
    for offset in range(16):
        wins = context_windows(n, 16, 4, offset)
        assert wins == reference_windows(n, 16, 4, offset), f"N={n} offset={offset}"
        assert len(wins) == num_context_windows(n, 16, 4)
        covered = set()
        for w in wins:
            assert len(w) == min(n, 16)
            assert len(set(w)) == len(w), "a window must not repeat a frame"
            assert all(0 <= i < n for i in w)
            covered.update(w)
        assert covered == set(range(n)), f"N={n} offset={offset}: frames not covered"


@pytest.mark.parametrize("size,overlap", [(8, 2), (4, 0), (12, 11), (1, 0), (24, 8)])
@pytest.mark.parametrize("n", [1, 5, 13, 30, 97])
def test_other_context_parameters(n, size, overlap):
    for offset in (0, 1, size - 1, 3 * size + 2):
        wins = context_windows(n, size, overlap, offset)
        assert wins == reference_windows(n, size, overlap, offset)
        assert set().union(*map(set, wins)) == set(range(n))


def test_long_clip_window_examples():
    # spec §4 / golden long-context example: N=20, offset 14
    assert context_windows(20, 16, 4, 14) == [list(range(14, 20)) + list(range(0, 10)),
                                              list(range(6, 20)) + [0, 1]]
    assert num_context_windows(192) == 16
    assert num_context_windows(16) == 1 and num_context_windows(17) == 2


@pytest.mark.parametrize("args,message", [
    ((0, 16, 4), r"num_frames must be a positive integer, got 0"), ((5, 0, 0), r"context_length must be a positive"),
    ((5, 16, 16), r"context_overlap must be .* got 16"), ((5, 16, -1), r"context_overlap must be .* got -1"),
    ((5, 2.5, 0), r"context_length must be a positive integer, got 2.5")])
def test_invalid_arguments_raise(args, message):
    with pytest.raises(ValueError, match=message):
        context_windows(*args)
