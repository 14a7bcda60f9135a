"""Make the test clips in tests/data/assets from the official X-Dyna example videos (maintainers only;
the tests read the result). The clips are the first frames of each video, cut without re-encoding: a
prefix of the compressed stream, so every kept frame decodes to exactly the pixels of the full video.

    python tests/data/trim_clips.py SRC_ASSETS tests/data/assets

SRC_ASSETS holds driving_video/, poses/ and reference_image/ as in the official repository's assets.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

# The frames the tests read: every 5th of the first 200 (pose coverage of the official renderings), and
# of example 1's driving video also frames 200-231 (the seam measure of tests/core/test_quality.py).
FRAMES = {"driving_video/example_1_driving_1.mp4": 232}
DEFAULT_FRAMES = 200


def cut(src: Path, dst: Path, frames: int) -> int:
    """Copy the shortest prefix (in decode order) of src's video packets that holds display frames
    0..n-1 and no others, n >= frames. References precede their users in decode order, so the prefix
    decodes alone, frame for frame as in src. Returns n."""
    import av

    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        packets = [p for p in inp.demux(stream) if p.size]
    order = sorted(p.pts for p in packets)
    kept, latest = 0, None
    for i, p in enumerate(packets):
        latest = p.pts if latest is None else max(latest, p.pts)
        if i + 1 >= frames and latest == order[i]:  # i+1 distinct pts, none after the (i+1)-th: frames 0..i
            kept = i + 1
            break
    if not kept:
        raise SystemExit(f"{src}: no prefix of >= {frames} frames ends on a frame boundary")
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        istream = inp.streams.video[0]
        ostream = out.add_stream_from_template(istream)
        written = 0
        for p in inp.demux(istream):
            if not p.size:
                continue
            if written == kept:
                break
            p.stream = ostream
            out.mux(p)
            written += 1
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="the official example assets (driving_video/, poses/, reference_image/)")
    ap.add_argument("dst", type=Path)
    args = ap.parse_args()
    for folder in ("driving_video", "poses", "reference_image"):
        (args.dst / folder).mkdir(parents=True, exist_ok=True)
        for f in sorted((args.src / folder).iterdir()):
            rel = f"{folder}/{f.name}"
            if folder == "reference_image":
                shutil.copyfile(f, args.dst / rel)  # pictures are kept whole
                continue
            n = cut(f, args.dst / rel, FRAMES.get(rel, DEFAULT_FRAMES))
            print(f"{rel}: {n} frames, {(args.dst / rel).stat().st_size} bytes")


if __name__ == "__main__":
    main()
