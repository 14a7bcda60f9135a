"""The quality report of one animation: pose agreement, identity and temporal stability, as a
JSON-ready dict of every figure and a plot image. The ``X-Dyna Quality Report`` node and
``python -m xdyna_core report`` are thin fronts over :func:`quality_report`.

JSON keys: ``frames`` is how many frames were compared (the result's, paired by index with the
driving frames the job used) and ``driving_frames`` how many driving frames there were; ``notes``
says when the two differ in length or in frame rate. ``pck@0.05`` / ``pck@0.1`` are the overall pose
scores (body and hand points pooled),
``pck@0.05/body``, ``pck@0.05/hands`` ... the parts; ``identity`` the mean cosine similarity
(null with ``identity_note`` saying why when skipped); ``seam_ratio`` (mean change at seams /
inside windows) and ``seam_excess`` (seam change / local median, 1 = no flicker); per-frame
curves under ``per_frame``. NaN (nothing to score) is written as null.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import identity as idm
from .plot import Panel, draw_plot
from .pose_agreement import ALPHAS, PARTS, driving_and_result_poses, pck
from .stability import scheduled_window_offsets, seam_weights, stability


@dataclass
class ReportOptions:
    backend: str = "auto"              # pose detector, the one the job's driving pose came from
    fit: str = "crop"                  # crop | stretch: how the driving frames met the output size
    align: bool = False                # the job aligned the driving skeleton onto the reference
    landmarks: str = "auto"            # face landmarks for the identity crops
    context_length: int = 16
    context_overlap: int = 4
    window_offsets: Optional[List[int]] = None  # the sampler's per-step offsets, when known
    seed: Optional[int] = None         # else replayed from the run's seed and steps (None: offset 0)
    steps: int = 25
    latent: str = "sample"             # the reference latent mode of the run (its first draw)
    model_dirs: List[str] = field(default_factory=list)       # DWPose / landmark model folders
    insightface_dirs: List[str] = field(default_factory=list)  # models/insightface roots
    driving_count: Optional[int] = None   # driving frames the job had, when only the first ones are passed
    result_fps: Optional[float] = None    # frame rates, when known (videos): a mismatch gets a note
    driving_fps: Optional[float] = None   # of the driving frames as passed (source fps / stride)


def _clean(v):
    """JSON-safe: NaN/inf -> None, numpy scalars -> float, recursively."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _pooled(agreement, alpha: float) -> float:
    hits = sum(agreement.overall[p][alpha] * agreement.points[p] for p in PARTS if agreement.points[p])
    total = sum(agreement.points[p] for p in PARTS)
    return hits / total if total else float("nan")


def pairing_notes(compared: int, driving_count: int, result_fps: Optional[float],
                  driving_fps: Optional[float]) -> List[str]:
    """What a reader of the scores must know about how result and driving frames were paired."""
    notes = []
    if driving_count > compared:
        notes.append(f"the result has {compared} frames, the driving clip {driving_count}: "
                     f"{compared} of {driving_count} frames compared")
    if result_fps and driving_fps and abs(result_fps - driving_fps) > 0.01 * driving_fps:
        notes.append(f"the result plays at {result_fps:g} fps, the driving frames at {driving_fps:g} fps: "
                     f"frames are paired by index ({compared} compared), not by time")
    return notes


def _identity(opts: ReportOptions, reference, ref_pose, frames, poses, log) -> Tuple[List[float], float, str]:
    from ..preprocess.mediapipe_backend import quiet_native_logs
    from ..preprocess.sface_inputs import face_landmarks

    try:
        model = idm.ArcFace(idm.find_arcface_model(opts.insightface_dirs))
    except idm.ArcFaceNotFound as e:
        note = f"skipped: {e}"
        log(f"identity {note}")
        return [float("nan")] * len(frames), float("nan"), note
    try:
        # FaceMesh may write a native warning when its graph closes without having found a face
        # (the command line hides those; quiet_native_logs does nothing elsewhere)
        with quiet_native_logs():
            ref_lm, source = face_landmarks([reference], opts.landmarks, poses=[ref_pose],
                                            model_dirs=opts.model_dirs)
            lms, _ = face_landmarks(frames, opts.landmarks, poses=poses, model_dirs=opts.model_dirs)
        per, mean = idm.identity_scores(model, reference, ref_lm[0], frames, lms)
    except ValueError as e:  # no reference face, no landmark source: the other scores still stand
        note = f"skipped: {e}".replace("\n", " ")
        log(f"identity {note}")
        return [float("nan")] * len(frames), float("nan"), note
    found = sum(1 for s in per if not math.isnan(s))
    return per, mean, f"{model.path.name}, landmarks {source}, face found in {found}/{len(frames)} frames"


def _schedule(opts: ReportOptions, n: int, width: int, height: int):
    """(per-step window offsets, where they come from)."""
    if opts.window_offsets is not None:
        return [int(o) for o in opts.window_offsets], "window offsets given"
    if opts.seed is not None:
        offsets = scheduled_window_offsets(opts.seed, n, width, height, opts.steps, opts.context_length, opts.latent)
        return offsets, f"replayed from seed {opts.seed}, {opts.steps} steps"
    return [0], "fixed schedule (offset 0): give the run's seed and steps for its own seams"


def quality_report(reference: np.ndarray, driving_frames: Sequence[np.ndarray], result_frames: Sequence[np.ndarray],
                   opts: Optional[ReportOptions] = None,
                   log: Callable[[str], None] = lambda s: None) -> Tuple[dict, np.ndarray]:
    """(figures, plot RGB uint8). ``driving_frames`` are the driving frames the job used (same
    start and stride); the first ``len(result_frames)`` of them are compared. ``log`` gets each note
    once as it is found (they are in ``figures`` and :func:`summary` too: a caller printing the
    summary need not print them)."""
    from ..preprocess.pose_detection import close_quietly, detect_poses, open_pose_detector

    opts = opts or ReportOptions()
    n = len(result_frames)
    if n == 0:
        raise ValueError("the result has no frames")
    if len(driving_frames) < n:
        raise ValueError(f"the result has {n} frames but the driving clip only {len(driving_frames)}: give the "
                         f"driving video with the start and stride the job used")
    driving_count = max(len(driving_frames), opts.driving_count or 0)
    notes = pairing_notes(n, driving_count, opts.result_fps, opts.driving_fps)
    for note in notes:
        log(note)
    driving_frames = [driving_frames[i] for i in range(n)]
    result_frames = [result_frames[i] for i in range(n)]
    shape = result_frames[0].shape
    if any(f.shape != shape for f in result_frames):
        raise ValueError("the result frames differ in size")

    name, detector = open_pose_detector(opts.backend, opts.model_dirs)
    try:
        driving_poses, result_poses, geometry = driving_and_result_poses(
            driving_frames, result_frames, detector, opts.fit, reference if opts.align else None)
        ref_pose = detect_poses([reference], detector)[0]
    finally:
        close_quietly(detector)
    agreement = pck(driving_poses, result_poses)
    per_id, mean_id, id_note = _identity(opts, reference, ref_pose, result_frames, result_poses, log)
    offsets, schedule = _schedule(opts, n, shape[1], shape[0])
    stab = stability(result_frames, seam_weights(n, opts.context_length, opts.context_overlap, offsets))

    figures: Dict[str, object] = {"frames": n, "driving_frames": driving_count, "notes": notes,
                                  "pose_backend": name, "geometry": geometry}
    per_frame: Dict[str, object] = {}
    for a in ALPHAS:
        figures[f"pck@{a:g}"] = _pooled(agreement, a)
        for part in PARTS:
            figures[f"pck@{a:g}/{part}"] = agreement.overall[part][a]
            per_frame[f"pck@{a:g}/{part}"] = agreement.per_frame[part][a]
    figures["pose_points"] = dict(agreement.points)
    figures["identity"] = mean_id
    figures["identity_note"] = id_note
    per_frame["identity"] = per_id
    figures.update(seams=stab.seams, window_offsets=offsets, schedule=schedule, seam_ratio=stab.seam_ratio,
                   seam_excess=stab.seam_excess, inside_excess=stab.inside_excess, mean_change_seams=stab.mean_change_seams,
                   mean_change_inside=stab.mean_change_inside)
    per_frame["change"] = stab.changes
    per_frame["change_excess"] = stab.excess
    per_frame["seam_weight"] = stab.weights
    figures["per_frame"] = per_frame

    # marked: the boundaries that are seams in at least half as many steps as the most frequent one
    top = max(stab.weights, default=0.0)
    marks = [b for b in stab.seams if stab.weights[b - 1] >= 0.5 * top]
    panels = [Panel("pose PCK per frame", {f"body@{ALPHAS[0]:g}": agreement.per_frame["body"][ALPHAS[0]],
                                           f"hands@{ALPHAS[0]:g}": agreement.per_frame["hands"][ALPHAS[0]],
                                           f"body@{ALPHAS[1]:g}": agreement.per_frame["body"][ALPHAS[1]]},
                    value_range=(0.0, 1.0), seams=marks)]
    if not all(math.isnan(s) for s in per_id):
        panels.append(Panel("identity: ArcFace cosine to the reference", {"identity": per_id},
                            value_range=(min(0.0, np.nanmin(per_id)), 1.0), seams=marks))
    panels.append(Panel("frame-to-frame change", {"change": stab.changes}, x_offset=0.5, seams=marks))
    title = (f"pck@0.05 {_fmt(figures['pck@0.05'])}  identity {_fmt(mean_id)}  "
             f"seam ratio {_fmt(stab.seam_ratio)}  ({n} frames)")
    return _clean(figures), draw_plot(panels, n, title)


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def summary(figures: dict) -> str:
    """A few lines for a terminal or a node's text output."""
    lines = [f"pose ({figures['pose_backend']}): pck@0.05 {_fmt(figures['pck@0.05'])} "
             f"(body {_fmt(figures['pck@0.05/body'])}, hands {_fmt(figures['pck@0.05/hands'])}), "
             f"pck@0.1 {_fmt(figures['pck@0.1'])}",
             (f"identity: {figures['identity_note']}" if figures["identity_note"].startswith("skipped")
              else f"identity: {_fmt(figures['identity'])} ({figures['identity_note']})"),
             f"stability: seam ratio {_fmt(figures['seam_ratio'])}, seam excess {_fmt(figures['seam_excess'])} "
             f"vs inside {_fmt(figures['inside_excess'])}; seams at {figures['seams'] or 'none (one window)'} "
             f"({figures['schedule']})"]
    return "\n".join(lines + [f"note: {note}" for note in figures.get("notes", [])])
