"""Reference-image encoding (spec §1.4, §1.8, §5): crop/resize, CLIP preprocessing, VAE latent, tokens."""
import numpy as np
import pytest
import torch

from tests.conftest import assets_dir
from xdyna_core.models.clip import PenultimateCLIPVision, new_vision_encoder, vision_config, vision_tower
from xdyna_core.models.vae import AutoencoderKL, AutoencoderKLConfig
from xdyna_core.reference import (
    CLIP_MEAN,
    CLIP_STD,
    clip_image_hidden,
    clip_preprocess,
    clip_uncond_hidden,
    encode_image_tokens,
    encode_reference,
    encode_reference_all,
    image_to_vae_input,
    image_tokens,
    prepare_reference_image,
    reference_crop_box,
)

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def tiny_vae(golden):
    meta, weights = golden("tiny_vae")
    vae = AutoencoderKL(AutoencoderKLConfig.from_diffusers_config(meta["config"])).eval()
    vae.load_state_dict(weights, strict=True)
    return vae


@pytest.fixture(scope="module")
def full_clip():
    """transformers' CLIPVisionModelWithProjection (random weights): the model the official code runs."""
    cfg = vision_config(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                        image_size=224, patch_size=56, projection_dim=16)
    m = new_vision_encoder(cfg, projection=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m.eval()


@pytest.fixture(scope="module")
def tiny_clip(full_clip):
    """The standalone path's encoder with the same weights (built without the last layer)."""
    m = new_vision_encoder(full_clip.config)
    vision_tower(m).load_state_dict(vision_tower(full_clip).state_dict())
    return PenultimateCLIPVision(m)


def _random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _asset_images():
    from PIL import Image

    files = sorted((assets_dir() / "reference_image").glob("example_*"))
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


# ------------------------------------------------------------------------------------ VAE path


@pytest.mark.parametrize(
    "h, w, H, W, box",
    [
        # wider than 512/896: keep the height, crop width int(512/896 * 1000) = 571, left (1000-571)//2
        (1000, 1000, 896, 512, (0, 214, 1000, 571)),
        # taller than the target aspect: keep the width, crop height int(300 / (512/896)) = 525
        (700, 300, 896, 512, (87, 0, 525, 300)),
        # same aspect: nothing removed
        (1792, 1024, 896, 512, (0, 0, 1792, 1024)),
        # square target from a landscape picture
        (480, 641, 512, 512, (0, 80, 480, 480)),
    ],
)
def test_crop_numbers(h, w, H, W, box):
    assert reference_crop_box(h, w, H, W) == box


def _official_crop_resize(rgb, H, W):
    """§5 written out: BGR read, centre crop to W/H (width int(ratio*h) if too wide, else height
    int(w/ratio)), offset excess//2, cv2.resize (bilinear) to W x H, back to RGB."""
    bgr = rgb[..., ::-1]
    h, w, _ = bgr.shape
    ratio = W / H
    if w / h > ratio:
        nw = int(ratio * h)
        off = (w - nw) // 2
        bgr = bgr[:, off:off + nw]
    else:
        nh = int(w / ratio)
        off = (h - nh) // 2
        bgr = bgr[off:off + nh, :]
    return cv2.resize(bgr, (W, H))[..., ::-1]


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (97, 301), (896, 512)])
def test_prepare_reference_image_matches_reference_procedure(size):
    img = _random_image(*size, seed=size[0])
    for H, W in [(896, 512), (128, 64), (64, 64)]:
        out = prepare_reference_image(img, H, W)
        assert out.shape == (H, W, 3) and out.dtype == np.uint8
        assert np.array_equal(out, _official_crop_resize(img, H, W))


def test_prepare_reference_on_assets():
    imgs = _asset_images()
    assert imgs, "no reference images in the shared assets"
    for img in imgs:
        assert np.array_equal(prepare_reference_image(img, 896, 512), _official_crop_resize(img, 896, 512))


def test_bad_images_are_rejected():
    with pytest.raises(ValueError, match="uint8"):
        prepare_reference_image(np.zeros((10, 10, 3), np.float32), 8, 8)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        clip_preprocess(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(ValueError, match="positive"):
        prepare_reference_image(_random_image(10, 10), 0, 8)
    grey = np.full((20, 30), 77, np.uint8)  # grey and RGBA are converted like PIL's convert("RGB")
    assert np.array_equal(prepare_reference_image(grey, 8, 8)[..., 0], prepare_reference_image(grey, 8, 8)[..., 2])


def test_encode_reference_is_a_seeded_posterior_sample(tiny_vae):
    img = prepare_reference_image(_random_image(150, 90, seed=3), 128, 64)
    lat = encode_reference(tiny_vae, img, torch.Generator().manual_seed(42))
    assert lat.shape == (1, 4, 1, 16, 8) and torch.isfinite(lat).all()
    again = encode_reference(tiny_vae, img, torch.Generator().manual_seed(42))
    other = encode_reference(tiny_vae, img, torch.Generator().manual_seed(43))
    assert torch.equal(lat, again) and not torch.equal(lat, other)
    x = image_to_vae_input(img)
    assert x.shape == (1, 3, 128, 64) and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[0, :, 5, 7], torch.from_numpy(img[5, 7]).float() / 127.5 - 1)
    with torch.no_grad():
        mean, logvar = tiny_vae.encode(x)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(42))
    expected = (mean + torch.exp(0.5 * logvar) * eps) * 0.18215
    assert torch.allclose(lat[:, :, 0], expected, atol=1e-6)
    mean_lat = encode_reference(tiny_vae, img, sample=False)
    assert torch.allclose(mean_lat[:, :, 0], mean * 0.18215, atol=1e-6)
    # the same thing from a float tensor input
    assert torch.equal(encode_reference(tiny_vae, x, torch.Generator().manual_seed(42)), lat)


# ----------------------------------------------------------------------------------- CLIP path


def test_clip_preprocess_constant_colour_and_shape():
    img = np.zeros((300, 500, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 128, 250
    px = clip_preprocess(img)
    assert px.shape == (1, 3, 224, 224) and px.dtype == torch.float32
    for c, v in enumerate((10, 128, 250)):
        assert torch.allclose(px[0, c], torch.tensor((v / 255 - CLIP_MEAN[c]) / CLIP_STD[c]), atol=1e-5)


def test_clip_preprocess_centre_crops_the_long_side():
    # 224 x 448: left quarter red, middle half green, right quarter blue -> the crop is all green
    img = np.zeros((224, 448, 3), np.uint8)
    img[:, :112, 0] = 255
    img[:, 112:336, 1] = 255
    img[:, 336:, 2] = 255
    px = clip_preprocess(img)
    green = (1 - CLIP_MEAN[1]) / CLIP_STD[1]
    assert torch.allclose(px[0, 1, :, 2:-2], torch.tensor(green), atol=1e-5)
    assert px[0, 0].max() < (0.5 - CLIP_MEAN[0]) / CLIP_STD[0] + 0.1  # little red at most at the edge


def test_clip_preprocess_matches_clip_image_processor():
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    proc = transformers.CLIPImageProcessor()
    images = _asset_images() + [_random_image(h, w, seed=h) for h, w in [(300, 200), (200, 301), (224, 224), (100, 57)]]
    for img in images:
        ref = proc(images=Image.fromarray(img), return_tensors="pt").pixel_values
        assert torch.allclose(clip_preprocess(img), ref, atol=1e-6, rtol=0)


def test_clip_hidden_and_uncond(tiny_clip, full_clip):
    px = clip_preprocess(_random_image(260, 180, seed=5))
    hidden = clip_image_hidden(tiny_clip, px)
    with torch.no_grad():
        full = full_clip(px, output_hidden_states=True)
        zero = full_clip(torch.zeros_like(px), output_hidden_states=True)
    assert hidden.shape == (1, 17, 48)
    assert torch.allclose(hidden, full.hidden_states[-2], atol=1e-6)  # second-to-last layer output
    assert not torch.allclose(hidden, full.hidden_states[-1])
    unc = clip_uncond_hidden(tiny_clip, px)
    assert torch.allclose(unc, zero.hidden_states[-2], atol=1e-6)
    assert torch.equal(clip_uncond_hidden(tiny_clip), unc)


def test_clip_hidden_with_transformers_model(tiny_clip, full_clip):
    px = clip_preprocess(_random_image(200, 200, seed=9))
    assert torch.allclose(clip_image_hidden(full_clip, px), clip_image_hidden(tiny_clip, px), atol=1e-6)


def test_image_tokens_reproduce_pipeline_golden(golden):
    resampler_mod = pytest.importorskip("xdyna_core.models.resampler")
    meta, weights = golden("tiny_resampler")
    res = resampler_mod.Resampler(resampler_mod.ResamplerConfig.from_dict(meta["config"])).eval()
    res.load_state_dict(weights, strict=True)
    _, t = golden("pipeline_3steps")
    for kind in ("cond", "uncond"):
        ref = t[f"image_tokens_{kind}"]
        out = image_tokens(res, t[f"clip_hidden_{kind}"])
        assert out.shape == ref.shape
        assert (out - ref).abs().max() <= 1e-4 * max(1, ref.abs().max())


def test_encode_image_tokens_and_full_reference(tiny_vae, tiny_clip):
    calls = []

    def fake_resampler(h):  # any callable (B, 257, D) -> tokens
        calls.append(h)
        return h[:, :4] * 2

    img = _random_image(400, 300, seed=11)
    px = clip_preprocess(img)
    cond, uncond = encode_image_tokens(tiny_clip, fake_resampler, px)
    assert torch.allclose(cond, clip_image_hidden(tiny_clip, px)[:, :4] * 2)
    assert torch.allclose(uncond, clip_uncond_hidden(tiny_clip, px)[:, :4] * 2)
    enc = encode_reference_all(img, 128, 64, tiny_vae, tiny_clip, fake_resampler)
    assert enc.image.shape == (128, 64, 3) and enc.size == (64, 128)
    assert np.array_equal(enc.image, prepare_reference_image(img, 128, 64))
    # the VAE sample is the generator's first draw (made by the sampler); CLIP uses the *uncropped* image
    assert torch.equal(enc.latent(torch.Generator().manual_seed(5)),
                       encode_reference(tiny_vae, enc.image, torch.Generator().manual_seed(5)))
    assert torch.equal(enc.latent(None, sample=False), encode_reference(tiny_vae, enc.image, sample=False))
    # callables instead of models (what the nodes pass): the same encoding
    same = encode_reference_all(img, 128, 64, lambda x: tiny_vae.encode(x), lambda p: clip_image_hidden(tiny_clip, p),
                                fake_resampler, scaling_factor=tiny_vae.config.scaling_factor)
    assert torch.equal(same.moments.mean, enc.moments.mean) and torch.equal(same.image_tokens_cond, enc.image_tokens_cond)
    assert torch.allclose(enc.image_tokens_cond, cond) and torch.allclose(enc.image_tokens_uncond, uncond)


# ------------------------------------------------------------------ large references, shrunk on read

def _read_quietly(path, working):
    """(image, Python warnings raised, tracemalloc peak in bytes) of reading the reference."""
    import tracemalloc
    import warnings

    from xdyna_core.preprocess.video import read_first_frame

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracemalloc.start()
        try:
            img = read_first_frame(path, working)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return img, caught, peak


def test_a_108_megapixel_reference_is_shrunk_on_read_without_a_warning(tmp_path):
    """Issue 22: a 100-megapixel reference printed Pillow's DecompressionBombWarning twice and took 2.1 GB.
    Read for a 512x896 working size it comes back shrunk by a whole factor (9000 // (2 * 896) = 5), with
    no warning, and no full-size array ever made (numpy's allocations are traced)."""
    from PIL import Image

    from xdyna_core.preprocess.video import probe_video

    path = tmp_path / "huge.png"
    Image.new("RGB", (12000, 9000), (128, 128, 128)).save(path, compress_level=1)
    img, caught, peak = _read_quietly(path, (512, 896))
    assert img.shape == (1800, 2400, 3) and int(img.min()) == int(img.max()) == 128
    assert not caught, [str(w.message) for w in caught]
    assert peak < 3 * img.nbytes, f"{peak / 1e6:.0f} MB traced for a {img.nbytes / 1e6:.0f} MB result"
    assert (probe_video(path).width, probe_video(path).height) == (12000, 9000)  # header only: no decode


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_and_small_images_untouched(tmp_path):
    from PIL import Image

    from xdyna_core.preprocess.video import read_video

    big = tmp_path / "big.jpg"
    Image.new("RGB", (5000, 4000), (90, 120, 150)).save(big, quality=90)
    img, caught, _ = _read_quietly(big, (512, 896))
    assert img.shape == (2000, 2500, 3) and not caught  # DCT scale 1/2: still 2x the working size's 896
    small = assets_dir() / "reference_image" / "example_2.jpg"
    np.testing.assert_array_equal(_read_quietly(small, (64, 64))[0], read_video(small, frame_count=1)[0][0])
