"""Full-size models built on the meta device have exactly the released checkpoints' keys and shapes."""
import json

import pytest
import torch

from tests.conftest import spec_dir
from xdyna_core.models import (ControlNetConfig, ControlNetModel, Resampler, ResamplerConfig,
                               UNet3DConditionModel, UNet3DConfig)


def manifest(name):
    data = json.loads((spec_dir() / "checkpoint_keys" / f"{name}.json").read_text())
    return data, {e["key"]: tuple(e["shape"]) for e in data["keys"]}


def model_keys(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def build(name, data):
    with torch.device("meta"):
        if name == "xdyna_unet":
            cfg = data["config"]
            return UNet3DConditionModel(UNet3DConfig.from_diffusers_config(cfg["sd_config"], cfg["unet_additional_kwargs"]))
        if name in ("pose_controlnet", "face_controlnet"):
            return ControlNetModel(ControlNetConfig.from_diffusers_config(data["config"]))
        return Resampler(ResamplerConfig.from_dict(data["config"]))


@pytest.mark.parametrize("name", ["xdyna_unet", "pose_controlnet", "face_controlnet", "ip_adapter_image_proj"])
def test_meta_model_matches_manifest(name):
    data, expected = manifest(name)
    got = model_keys(build(name, data))
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing and not extra, f"{name}: missing {missing[:5]}, unexpected {extra[:5]}"
    wrong = [(k, got[k], expected[k]) for k in expected if got[k] != expected[k]]
    assert not wrong, f"{name}: shape mismatches {wrong[:5]}"
    assert len(got) == data["num_keys"]


def test_default_configs_are_the_released_ones():
    """The loaders build released files from default configs: they must equal the manifests' configs."""
    data, expected = manifest("xdyna_unet")
    with torch.device("meta"):
        assert model_keys(UNet3DConditionModel(UNet3DConfig())) == expected
        assert model_keys(ControlNetModel(ControlNetConfig())) == manifest("pose_controlnet")[1]
        assert model_keys(ControlNetModel(ControlNetConfig(conditioning_channels=6))) == manifest("face_controlnet")[1]
        assert model_keys(Resampler(ResamplerConfig())) == manifest("ip_adapter_image_proj")[1]


def test_unet_parameter_count():
    data, _ = manifest("xdyna_unet")
    with torch.device("meta"):
        model = UNet3DConditionModel(UNet3DConfig())
    params = sum(p.numel() for p in model.parameters())  # the manifest counts parameters, not the pe buffers
    assert params == data["num_parameters"]
