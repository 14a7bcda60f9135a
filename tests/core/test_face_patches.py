"""S-Face patches: exact parity with the reference (golden face_preprocess) and the fixed mode."""
import numpy as np
import pytest

pytest.importorskip("cv2")

from xdyna_core.preprocess.face_patches import (
    crop2ratio,
    crop2ratio_params,
    crop_resize,
    crop_resize_points,
    face_patch_sequence,
    face_patches,
)


def _np(t):
    return t.numpy() if hasattr(t, "numpy") else np.asarray(t)


@pytest.fixture(scope="module")
def case(golden):
    meta, t = golden("face_preprocess")
    frames = _np(t["frames_u8"]).astype(np.uint8)
    lms = _np(t["landmarks_68"]).astype(np.float32)
    return meta, frames, lms, _np(t["local_u8"]).astype(np.uint8), _np(t["global_u8"]).astype(np.uint8)


def test_golden_single_frames_exact(case):
    meta, frames, lms, local_ref, global_ref = case
    for i, lm in enumerate([lms[0], lms[1], None]):
        local, glob, info = face_patches(frames[i], lm)
        assert np.array_equal(local, local_ref[i]), f"frame {i} local"
        assert np.array_equal(glob, global_ref[i]), f"frame {i} global"
        assert list(info.bbox) == meta["per_frame"][i]["bbox_ltrb"]
        if lm is not None:
            assert [list(c) for c in info.centers] == meta["per_frame"][i]["centers_xy"]
    # The top-edge frame really exercises the dropped-window quirk: only the mouth window survives.
    local1 = local_ref[1]
    assert local1[:10].sum() == 0 and local1.any()


def test_golden_sequence_official_mode(case):
    meta, frames, lms, local_ref, global_ref = case
    seq = face_patch_sequence(list(frames), [lms[0], lms[1], None], fix_failures=False)
    assert np.array_equal(seq.local_images, local_ref) and np.array_equal(seq.global_images, global_ref)
    for info, ref in zip(seq.infos, meta["per_frame"]):
        assert list(info.bbox) == ref["bbox_ltrb"]
        assert [list(c) for c in info.centers] == ref["centers_xy"]  # undetected: previous centres
    assert seq.has_face == [True, True, False]


def test_crop2ratio_golden_cases(case):
    meta = case[0]
    H, W = meta["crop2ratio_resolution_hw"]
    for c in meta["crop2ratio_cases"]:
        h, w = c["input_hw"]
        expected = c["w,h,start_w,start_h,target_w,target_h"]
        assert list(crop2ratio_params(h, w, H, W)) == expected
        img = np.arange(h * w, dtype=np.int64).reshape(h, w)
        _, _, sw, sh, tw, th = expected
        assert np.array_equal(crop2ratio(img, H, W), img[sh:sh + th, sw:sw + tw])


def test_crop_resize_points_follow_pixels():
    img = np.zeros((1080, 1920, 3), np.uint8)
    img[495:506, 995:1006] = 255  # 11x11 square centred on (1000, 500)
    out = crop_resize(img, 896, 512)
    assert out.shape == (896, 512, 3)
    ys, xs = np.nonzero(out[..., 0] > 127)
    p = crop_resize_points(np.array([[1000.0, 500.0, 0.7]]), (1080, 1920), 896, 512)
    assert abs(xs.mean() - p[0, 0]) < 0.5 and abs(ys.mean() - p[0, 1]) < 0.5 and p[0, 2] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="interpolation"):
        crop_resize(img, 896, 512, "cubic")


def test_fixed_mode_clamps_windows_at_the_border(case):
    _, frames, lms, _, _ = case
    seq = face_patch_sequence([frames[1]], [lms[1]], fix_failures=True)
    info = seq.infos[0]
    (ax, ay), (bx, by), _ = info.centers
    hw, hh = info.half
    assert ay - hh < 0  # the reference drops this window
    local = seq.local_images[0]
    # Clamped: rows [0, ay + hh) of both eye windows are copied from the frame.
    assert np.array_equal(local[0:ay + hh, ax - hw:ax + hw], frames[1][0:ay + hh, ax - hw:ax + hw])
    assert np.array_equal(local[0:by + hh, bx - hw:bx + hw], frames[1][0:by + hh, bx - hw:bx + hw])
    assert local[0:ay + hh, ax - hw:ax + hw].any()
    # Outside the three windows the local image stays black.
    mask = np.zeros(local.shape[:2], bool)
    for cx, cy in info.centers:
        mask[max(0, cy - hh):cy + hh, max(0, cx - hw):cx + hw] = True
    assert not local[~mask].any()


def test_fixed_mode_carries_and_backfills(case):
    _, frames, lms, _, _ = case
    f = list(frames)
    seq = face_patch_sequence([f[2], f[0], f[1], f[2]], [None, lms[0], None, None], fix_failures=True)
    assert [i.source for i in seq.infos] == ["backfilled", "detected", "carried", "carried"]
    assert seq.has_face == [False, True, False, False] and seq.clip_has_face
    g = seq.infos[1]
    for k, frame in ((0, f[2]), (2, f[1]), (3, f[2])):
        assert seq.infos[k].bbox == g.bbox and seq.infos[k].centers == g.centers
        l, t, r, b = g.bbox
        # Geometry of the good face, pixels of the current frame.
        assert np.array_equal(seq.global_images[k][t:b, l:r], frame[t:b, l:r])
        assert not seq.global_images[k][:t].any()
    # The reference mode leaves the misses black.
    ref = face_patch_sequence([f[2], f[0], f[1]], [None, lms[0], None], fix_failures=False)
    assert not ref.global_images[0].any() and not ref.local_images[2].any()


def test_clip_without_any_face_is_black_and_flagged(case):
    _, frames, _, _, _ = case
    for fix in (True, False):
        seq = face_patch_sequence(list(frames), [None] * 3, fix_failures=fix)
        assert not seq.clip_has_face and seq.has_face == [False] * 3
        assert not seq.local_images.any() and not seq.global_images.any()
        assert seq.local_images.dtype == np.uint8 and np.isfinite(seq.local_images.astype(np.float32)).all()


def test_bad_inputs(case):
    _, frames, lms, _, _ = case
    with pytest.raises(ValueError, match="68"):
        face_patches(frames[0], lms[0][:60])
    with pytest.raises(ValueError, match="NaN"):
        face_patches(frames[0], np.full((68, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="uint8"):
        face_patches(frames[0].astype(np.float32), lms[0])
    with pytest.raises(ValueError, match="landmark entries"):
        face_patch_sequence(list(frames), [None])
