"""Stand-ins for ComfyUI's native VAE / CLIP_VISION / CONDITIONING built on our own core models,
with the methods the X-Dyna nodes call (same names and tensor layouts as ComfyUI's)."""
import types

import torch

from xdyna_core.loading.bundle import find_model_files, load_bundle
from xdyna_core.reference import clip_preprocess


class FakeVAE:
    def __init__(self, vae):
        self.first_stage_model = vae
        self.patcher = object()
        self.device = torch.device("cpu")
        self.vae_dtype = torch.float32

    def encode(self, pixels):  # IMAGE -> unscaled mean latent
        mean, _ = self.first_stage_model.encode(pixels[..., :3].movedim(-1, 1) * 2 - 1)
        return mean

    def decode(self, latent):  # unscaled latent -> IMAGE
        x = self.first_stage_model.decode(latent)
        return ((x / 2 + 0.5).clamp(0, 1)).movedim(1, -1)


class FakeClipVision:
    def __init__(self, model):
        self._m = model
        self.patcher = object()
        self.image_size = model.config.image_size
        self.load_device = torch.device("cpu")
        self.dtype = torch.float32

    def model(self, pixel_values, intermediate_output=-2):
        # the bundle's encoder gives the penultimate layer only (what the X-Dyna nodes read)
        assert intermediate_output == -2
        return (None, self._m(pixel_values), None)

    def encode_image(self, image, crop=True):
        u8 = (image[0, ..., :3] * 255 + 0.5).to(torch.uint8).numpy()
        pix = clip_preprocess(u8, size=self.image_size)
        return types.SimpleNamespace(penultimate_hidden_states=self._m(pix))


def natives(models_dir):
    b = load_bundle(find_model_files(models_dir))
    with torch.no_grad():
        text = b.text_encoder(input_ids=torch.tensor([[49406] + [49407] * 76])).last_hidden_state
    cond = [[text, {"pooled_output": None}]]
    return FakeVAE(b.vae), FakeClipVision(b.clip_vision), cond
