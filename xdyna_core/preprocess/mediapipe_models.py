"""MediaPipe Tasks bundles built at install time from the models inside the mediapipe 0.10.14 wheel.

mediapipe 0.10.30+ (the only releases with Python 3.13 wheels) has just the Tasks API and ships no
models; the 0.10.14 wheels ship BlazePose / palm+hand / face-mesh TFLite files under an Apache-2.0
licence. :func:`build_bundles` reads them from that wheel (a registry download made by install.py,
sha256-pinned) and writes three ``.task`` bundles the Tasks landmarkers open. Three of the files
need a small, deterministic rewrite first (spec MEDIAPIPE_ON_PY313.md §2):

* ``pose_landmark_full``: no TFLite metadata, which the Tasks image preprocessing needs -> add
  metadata (RGB image in, mean 0 / std 255, five feature outputs).
* ``face_landmark`` (468 points): the Tasks face graph decodes 478 points -> append one GATHER that
  copies the 1404 values and pads 30 more (points 468-477 are copies of eyelid points, not irises).
* ``palm_detection_full``: the Tasks hand graph rotates the hand crop 0.4646 rad (26.62 deg) more
  than the legacy graph -> append one FULLY_CONNECTED that rotates palm keypoint 2 about keypoint 0
  by -0.4646 rad in the raw regressor output (the only keypoint pair the crop rotation reads).

The rewrites use ``flatbuffers`` and the TFLite/metadata schemas generated into mediapipe (1.2.3,
pinned). Nothing here runs at pose-extraction time; :func:`find_bundles` only looks for the files.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np

#: The registry file the models come from (any platform's wheel holds the same .tflite files).
SOURCE_WHEEL = "mediapipe-0.10.14-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
SOURCE_WHEEL_SHA256 = "9b1e72d754cd9e1b4b88d80ec9ead2f1cbe8424b7f883d3bda53341b982a9f8b"
PIP_DOWNLOAD_ARGS = ("download", "mediapipe==0.10.14", "--no-deps", "--only-binary=:all:",
                     "--python-version", "3.12", "--platform", "manylinux_2_17_x86_64")

#: The Tasks runtime whose internal schema modules the rewrite uses (install.py installs it).
TASKS_VERSION = "1.2.3"

#: Bumped whenever a rewrite changes, so stale bundles are rebuilt.
BUNDLE_FORMAT = 1

_MOD = "mediapipe/modules/"
#: bundle -> {member name: file in the 0.10.14 wheel}
BUNDLES: Dict[str, Dict[str, str]] = {
    "pose_landmarker.task": {
        "pose_detector.tflite": _MOD + "pose_detection/pose_detection.tflite",
        "pose_landmarks_detector.tflite": _MOD + "pose_landmark/pose_landmark_full.tflite",
    },
    "hand_landmarker.task": {
        "hand_detector.tflite": _MOD + "palm_detection/palm_detection_full.tflite",
        "hand_landmarks_detector.tflite": _MOD + "hand_landmark/hand_landmark_full.tflite",
    },
    "face_landmarker.task": {
        "face_detector.tflite": _MOD + "face_detection/face_detection_short_range.tflite",
        "face_landmarks_detector.tflite": _MOD + "face_landmark/face_landmark.tflite",
    },
}
PROVENANCE_FILE = "provenance.json"

#: Points 468-477 of the Tasks face graph (iris centre + ring, left then right) are filled with
#: these eyelid points of the 468-point mesh: placeholders, the model predicts no irises.
FACE_PAD_POINTS = (159, 33, 145, 133, 159, 386, 362, 374, 263, 386)
FACE_POINTS, FACE_TASK_POINTS = 468, 478
#: The Tasks hand graph's extra crop rotation, undone on palm keypoint 2 (spec §2).
PALM_ROTATION_FIX = -((90.0 % (2 * math.pi)) - math.pi / 2)  # -0.46460 rad = -26.62 deg
PALM_VALUES = 18  # 4 box values + 7 keypoints (x, y), in input pixels relative to the anchor


def models_dir() -> Path:
    """Where the bundles live: $XDYNA_MEDIAPIPE_MODELS, else ``xdyna_core/mediapipe_models``
    (inside the pack; git-ignored)."""
    env = os.environ.get("XDYNA_MEDIAPIPE_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "mediapipe_models"


def find_bundles(folder: Optional[os.PathLike] = None) -> Dict[str, Path]:
    """{bundle name: path} when all three current bundles are in ``folder``; FileNotFoundError
    (one line) otherwise: install.py makes them."""
    d = Path(folder) if folder is not None else models_dir()
    paths = {name: d / name for name in BUNDLES}
    missing = [n for n, p in paths.items() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"MediaPipe Tasks bundles missing in {d} ({', '.join(missing)})")
    try:
        fmt = json.loads((d / PROVENANCE_FILE).read_text()).get("bundle_format")
    except (OSError, ValueError):
        fmt = None
    if fmt != BUNDLE_FORMAT:
        raise FileNotFoundError(f"MediaPipe Tasks bundles in {d} are from an older install")
    return paths


# --------------------------------------------------------------------------- TFLite rewrites


def _schemas():
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta
    from mediapipe.tasks.metadata import schema_py_generated as tfl

    return tfl, meta


def _load(model: bytes):
    tfl, _ = _schemas()
    return tfl.ModelT.InitFromPackedBuf(bytearray(model), 0)


def _save(m) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(1 << 20)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _add_buffer(m, data: bytes) -> int:
    tfl, _ = _schemas()
    buf = tfl.BufferT()
    buf.data = np.frombuffer(data, dtype=np.uint8).copy()
    m.buffers.append(buf)
    return len(m.buffers) - 1


def _add_tensor(m, name: str, shape, dtype: int, data: Optional[bytes] = None) -> int:
    tfl, _ = _schemas()
    sg = m.subgraphs[0]
    t = tfl.TensorT()
    t.name = name.encode()
    t.shape = np.asarray(shape, dtype=np.int32)
    t.type = dtype
    t.buffer = _add_buffer(m, data) if data is not None else 0  # buffer 0: the empty sentinel
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _opcode(m, code: int) -> int:
    tfl, _ = _schemas()
    oc = tfl.OperatorCodeT()
    oc.builtinCode = code
    oc.deprecatedBuiltinCode = min(code, 127)
    oc.version = 1
    m.operatorCodes.append(oc)
    return len(m.operatorCodes) - 1


def _append_op(m, code: int, inputs, output: int, options_type: int, options) -> None:
    """Append one builtin op to subgraph 0 (ops run in list order, so it runs last)."""
    tfl, _ = _schemas()
    op = tfl.OperatorT()
    op.opcodeIndex = _opcode(m, code)
    op.inputs = np.asarray(inputs, dtype=np.int32)
    op.outputs = np.asarray([output], dtype=np.int32)
    op.builtinOptionsType = options_type
    op.builtinOptions = options
    m.subgraphs[0].operators.append(op)


def _output_shape(m, k: int):
    sg = m.subgraphs[0]
    return [int(v) for v in sg.tensors[int(sg.outputs[k])].shape]


def add_pose_metadata(model: bytes) -> bytes:
    """pose_landmark_full + TFLite metadata: an RGB float image normalised as (x - 0) / 255, and
    one feature-tensor entry per output."""
    import flatbuffers

    tfl, meta = _schemas()
    m = _load(model)
    sg = m.subgraphs[0]
    if m.metadata and any(md.name == b"TFLITE_METADATA" for md in m.metadata):
        raise ValueError("pose landmark model already has TFLite metadata: not the 0.10.14 file")
    image = meta.TensorMetadataT()
    image.name = b"image"
    image.content = meta.ContentT()
    image.content.contentPropertiesType = meta.ContentProperties.ImageProperties
    image.content.contentProperties = meta.ImagePropertiesT()
    image.content.contentProperties.colorSpace = meta.ColorSpaceType.RGB
    norm = meta.ProcessUnitT()
    norm.optionsType = meta.ProcessUnitOptions.NormalizationOptions
    norm.options = meta.NormalizationOptionsT()
    norm.options.mean, norm.options.std = [0.0], [255.0]
    image.processUnits = [norm]
    image.stats = meta.StatsT()
    image.stats.max, image.stats.min = [1.0], [0.0]
    outputs = []
    for i in sg.outputs:
        t = meta.TensorMetadataT()
        t.name = sg.tensors[int(i)].name
        t.content = meta.ContentT()
        t.content.contentPropertiesType = meta.ContentProperties.FeatureProperties
        t.content.contentProperties = meta.FeaturePropertiesT()
        outputs.append(t)
    sub = meta.SubGraphMetadataT()
    sub.inputTensorMetadata, sub.outputTensorMetadata = [image], outputs
    md = meta.ModelMetadataT()
    md.name = b"BlazePose landmarks (full)"
    md.minParserVersion = b"1.0.0"
    md.subgraphMetadata = [sub]
    b = flatbuffers.Builder(1024)
    b.Finish(md.Pack(b), file_identifier=b"M001")
    entry = tfl.MetadataT()
    entry.name = b"TFLITE_METADATA"
    entry.buffer = _add_buffer(m, bytes(b.Output()))
    m.metadata = list(m.metadata or []) + [entry]
    return _save(m)


def face_gather_indices() -> np.ndarray:
    """The 1434 indices the face GATHER takes from the 1404 (468 x xyz) values: all of them in
    order, then the padding points' x, y, z."""
    pad = [3 * p + c for p in FACE_PAD_POINTS for c in range(3)]
    return np.asarray(list(range(3 * FACE_POINTS)) + pad, dtype=np.int32)


def pad_face_landmarks(model: bytes) -> bytes:
    """face_landmark (1x1x1x1404) -> first output 1x1x1x1434 via an appended GATHER on axis 3."""
    tfl, _ = _schemas()
    m = _load(model)
    sg = m.subgraphs[0]
    if _output_shape(m, 0) != [1, 1, 1, 3 * FACE_POINTS]:
        raise ValueError(f"face landmark model: output 0 has shape {_output_shape(m, 0)}, expected [1, 1, 1, 1404]")
    idx = face_gather_indices()
    src = int(sg.outputs[0])
    ind = _add_tensor(m, "xdyna_face_pad_indices", [idx.size], tfl.TensorType.INT32, idx.tobytes())
    out = _add_tensor(m, "xdyna_face_landmarks_478", [1, 1, 1, 3 * FACE_TASK_POINTS], tfl.TensorType.FLOAT32)
    opts = tfl.GatherOptionsT()
    opts.axis, opts.batchDims = 3, 0
    _append_op(m, tfl.BuiltinOperator.GATHER, [src, ind], out, tfl.BuiltinOptions.GatherOptions, opts)
    sg.outputs[0] = out
    return _save(m)


def palm_rotation_weights(angle: float = PALM_ROTATION_FIX) -> np.ndarray:
    """(18, 18) FULLY_CONNECTED weights (out x in): identity, except keypoint 2 (values 8, 9)
    becomes kp0 + R(angle) (kp2 - kp0) with R the image-space rotation [[c, -s], [s, c]]."""
    c, s = math.cos(angle), math.sin(angle)
    w = np.eye(PALM_VALUES, dtype=np.float64)
    x0, y0, x2, y2 = 4, 5, 8, 9
    w[x2] = 0
    w[y2] = 0
    # x2' = x0 + c (x2 - x0) - s (y2 - y0);  y2' = y0 + s (x2 - x0) + c (y2 - y0)
    w[x2, x0], w[x2, y0], w[x2, x2], w[x2, y2] = 1 - c, s, c, -s
    w[y2, x0], w[y2, y0], w[y2, x2], w[y2, y2] = -s, 1 - c, s, c
    return w.astype(np.float32)


def rotate_palm_keypoint(model: bytes, angle: float = PALM_ROTATION_FIX) -> bytes:
    """palm_detection_full with output 0 (1x2016x18 raw boxes/keypoints) passed through one
    FULLY_CONNECTED (keep_num_dims) holding :func:`palm_rotation_weights`."""
    tfl, _ = _schemas()
    m = _load(model)
    sg = m.subgraphs[0]
    shape = _output_shape(m, 0)
    if len(shape) != 3 or shape[2] != PALM_VALUES:
        raise ValueError(f"palm detection model: output 0 has shape {shape}, expected [1, N, 18]")
    src = int(sg.outputs[0])
    w = palm_rotation_weights(angle)
    wt = _add_tensor(m, "xdyna_palm_kp2_rotation", list(w.shape), tfl.TensorType.FLOAT32, w.tobytes())
    out = _add_tensor(m, "xdyna_palm_regressors", shape, tfl.TensorType.FLOAT32)
    opts = tfl.FullyConnectedOptionsT()
    opts.keepNumDims = True
    _append_op(m, tfl.BuiltinOperator.FULLY_CONNECTED, [src, wt, -1], out,
               tfl.BuiltinOptions.FullyConnectedOptions, opts)
    sg.outputs[0] = out
    return _save(m)


#: wheel file -> rewrite applied before it goes into a bundle
REWRITES = {
    _MOD + "pose_landmark/pose_landmark_full.tflite": add_pose_metadata,
    _MOD + "face_landmark/face_landmark.tflite": pad_face_landmarks,
    _MOD + "palm_detection/palm_detection_full.tflite": rotate_palm_keypoint,
}


# --------------------------------------------------------------------------- build


def sha256(path: os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_source_wheel(dest: os.PathLike, timeout: float = 600) -> Path:
    """``pip download`` the pinned 0.10.14 wheel into ``dest`` (a registry download) and check its
    sha256; RuntimeError saying why when that fails."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / SOURCE_WHEEL
    if not (wheel.is_file() and sha256(wheel) == SOURCE_WHEEL_SHA256):
        r = subprocess.run([sys.executable, "-m", "pip", *PIP_DOWNLOAD_ARGS, "-d", str(dest), "-q"],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0 or not wheel.is_file():
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"pip download mediapipe==0.10.14 failed: {last}")
    got = sha256(wheel)
    if got != SOURCE_WHEEL_SHA256:
        raise RuntimeError(f"{wheel.name}: sha256 {got} is not the pinned {SOURCE_WHEEL_SHA256}")
    return wheel


def _zip_member(z: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
    info.compress_type = zipfile.ZIP_STORED  # Tasks maps bundle members in place
    z.writestr(info, data)


def build_bundles(wheel: os.PathLike, out_dir: Optional[os.PathLike] = None) -> Dict[str, Path]:
    """Write the three ``.task`` bundles (and provenance.json) from the 0.10.14 wheel into
    ``out_dir`` (default :func:`models_dir`); returns {bundle: path}."""
    out = Path(out_dir) if out_dir is not None else models_dir()
    out.mkdir(parents=True, exist_ok=True)
    got = sha256(wheel)
    if got != SOURCE_WHEEL_SHA256:
        raise ValueError(f"{wheel}: sha256 {got} is not the pinned mediapipe 0.10.14 wheel")
    written = {}
    with zipfile.ZipFile(wheel) as whl:
        for bundle, members in BUNDLES.items():
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for member, src in members.items():
                    data = whl.read(src)
                    rewrite = REWRITES.get(src)
                    _zip_member(z, member, rewrite(data) if rewrite else data)
            tmp = out / (bundle + ".tmp")
            tmp.write_bytes(buf.getvalue())
            os.replace(tmp, out / bundle)
            written[bundle] = out / bundle
    provenance = {
        "bundle_format": BUNDLE_FORMAT, "source_wheel": SOURCE_WHEEL, "source_sha256": SOURCE_WHEEL_SHA256,
        "licence": "Apache-2.0 (mediapipe 0.10.14 wheel)",
        "rewrites": {src: fn.__name__ for src, fn in REWRITES.items()},
        "bundles": {name: sha256(p) for name, p in written.items()},
    }
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1) + "\n")
    return written


def download_and_build(out_dir: Optional[os.PathLike] = None) -> Dict[str, Path]:
    """:func:`download_source_wheel` into a temporary folder, :func:`build_bundles`, delete the wheel."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="xdyna-mediapipe-") as tmp:
        return build_bundles(download_source_wheel(tmp), out_dir)


#: What the Tasks runtime needs besides numpy (as mediapipe 1.2.3 declares them); its other declared
#: deps (opencv-contrib-python, sounddevice) are not used by the landmarkers.
TASKS_DEPS = ("absl-py~=2.3", "flatbuffers~=25.9", "certifi", "matplotlib")
TASKS_DEP_MODULES = ("absl", "flatbuffers", "certifi", "matplotlib")
PIP_TIMEOUT_S = 900


def _pip_install(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args],
                       capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(args)} failed: "
                           f"{(r.stderr.strip().splitlines() or ['no output'])[-1]}")


def set_up() -> str:
    """Install the Tasks runtime into this Python and build the bundles where missing (registry
    downloads); returns what was done. An installed mediapipe other than the Tasks runtime (legacy
    0.10.14, or another pack's) is kept as it is."""
    import importlib
    import importlib.util

    from .mediapipe_backend import installed_mediapipe, is_legacy

    v = installed_mediapipe()
    if is_legacy(v) or (v is not None and v != TASKS_VERSION):
        return f"kept the installed mediapipe {v}"
    done = []
    if v is None:
        _pip_install("--no-deps", f"mediapipe=={TASKS_VERSION}")
        done.append(f"installed mediapipe {TASKS_VERSION} (Tasks runtime)")
    if any(importlib.util.find_spec(m) is None for m in TASKS_DEP_MODULES):
        _pip_install(*TASKS_DEPS)
        done.append(f"installed {', '.join(TASKS_DEPS)}")
    importlib.invalidate_caches()
    try:
        find_bundles()
    except FileNotFoundError:
        download_and_build()
        done.append(f"built the MediaPipe models in {models_dir()}")
    return ", ".join(done) or "MediaPipe already set up"


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m xdyna_core.preprocess.mediapipe_models",
                                description="Set up the MediaPipe Tasks extractor for this installed xdyna_core "
                                            "(what install.py does), or only build the bundles (--wheel/--out).")
    p.add_argument("--wheel", help="build from this 0.10.14 wheel instead of downloading it")
    p.add_argument("--out", help=f"build into this folder (default {models_dir()})")
    a = p.parse_args(argv)
    if not a.wheel and not a.out:
        print(set_up())
        return 0
    if a.wheel:
        written = build_bundles(a.wheel, a.out)
    else:
        written = download_and_build(a.out)
    for path in written.values():
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
