"""The MediaPipe acceptance measure: how much of X-Dyna's official pose video of an example our
extractor's skeleton covers (pixels within 5 px, every 5th frame of the first 200), one protocol
shared by the coverage test, the legacy-reference tool and the extractor bench."""
from __future__ import annotations

import hashlib
import os
from typing import Callable, List, Tuple

import numpy as np

SAMPLE_STEP = 5  # every 5th frame
SAMPLES = 40  # first 40 sampled frames (200 video frames) per video
TOLERANCE_PX = 5
EXAMPLES = (1, 2, 3)


def example_videos(assets: os.PathLike, k: int) -> Tuple[str, str]:
    """(driving video, official pose video) of shared example ``k`` under ``assets``."""
    return (os.path.join(assets, "driving_video", f"example_{k}_driving_{k}.mp4"),
            os.path.join(assets, "poses", f"example_{k}_pose_{k}.mp4"))


def sampled_frames(path: os.PathLike, step: int = SAMPLE_STEP, count: int = SAMPLES) -> List[np.ndarray]:
    import av

    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(f.to_ndarray(format="rgb24"))
                if len(out) == count:
                    break
    return out


def frames_digest(frames) -> str:
    """sha256 of the decoded frames (what a reference figure was measured on)."""
    h = hashlib.sha256()
    for f in frames:
        h.update(np.ascontiguousarray(f).tobytes())
    return h.hexdigest()


def official_coverage(detector: Callable, driving: List[np.ndarray], official: List[np.ndarray]):
    """:class:`render.CoverageResult` of ``detector`` (image -> PoseFrame, unrelated images) on the
    driving frames, rendered at the official frames' size, against the official frames."""
    from .render import render_pose, skeleton_coverage

    if len(driving) != len(official):
        raise ValueError(f"{len(driving)} driving frames but {len(official)} official pose frames")
    ours = [render_pose(detector(f), o.shape[1], o.shape[0]) for f, o in zip(driving, official)]
    return skeleton_coverage(ours, official, tolerance_px=TOLERANCE_PX)
