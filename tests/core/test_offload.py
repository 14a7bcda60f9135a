"""Low-memory mode: only the current phase's networks sit on the compute device.

No GPU here, so the moves are recorded instead of performed (the placement's bookkeeping is what
decides them; `.to()` itself is torch's). The job test checks, at the moment each network runs,
which networks the placement holds on the compute device.
"""
import pytest
import torch

from tests.conftest import assets_dir
from xdyna_core import offload
from xdyna_core.offload import PhasePlacement, resolve_memory_mode


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.to_calls = []

    def to(self, *args, **kwargs):          # record, do not move (there is no second device here)
        self.to_calls.append(args[0] if args else kwargs.get("device"))
        return self


def test_low_memory_keeps_only_the_phase_networks():
    nets = {n: Net() for n in ("unet", "pose", "vae", "clip")}
    place = PhasePlacement("cuda", low_memory=True)
    for n, m in nets.items():
        place.register(n, m)
    place.register("face", None)            # absent optional network: ignored by use()
    place.use(["vae", "clip"])
    assert place.resident() == ["clip", "vae"]
    place.use(["unet", "pose", "face"])
    assert place.resident() == ["pose", "unet"]
    # the phase's networks were moved only after the previous phase's left the device
    assert place.moves == [("vae", "cuda"), ("clip", "cuda"), ("vae", "cpu"), ("clip", "cpu"),
                           ("unet", "cuda"), ("pose", "cuda")]
    place.use(["vae"])
    assert place.resident() == ["vae"]
    assert nets["unet"].to_calls == [torch.device("cuda"), torch.device("cpu")]


def test_high_memory_moves_each_network_once():
    nets = {n: Net() for n in ("unet", "vae")}
    place = PhasePlacement("cuda", low_memory=False)
    for n, m in nets.items():
        place.register(n, m)
    place.use(["vae"])
    place.use(["unet"])
    place.use(["vae"])
    assert place.resident() == ["unet", "vae"]
    assert place.moves == [("vae", "cuda"), ("unet", "cuda")]


def test_unknown_network_and_mode_are_refused():
    place = PhasePlacement("cpu")
    place.register("unet", Net())
    with pytest.raises(KeyError, match="not registered"):
        place.use(["unet", "vea"])
    with pytest.raises(ValueError, match="memory mode must be one of"):
        resolve_memory_mode("tiny", torch.device("cpu"))
    assert resolve_memory_mode("low", torch.device("cpu")) == "high"   # CPU: nothing to offload to


def test_animate_runs_each_phase_with_only_its_networks(tmp_path, monkeypatch):
    """The whole job in low-memory mode; at every network call the resident set is that phase's."""
    from xdyna_core.animate import AnimateOptions, animate
    from xdyna_core.sampling.settings import SamplingSettings
    from xdyna_core.loading.bundle import find_model_files, load_bundle
    from xdyna_core.loading.tiny import write_tiny_set

    write_tiny_set(tmp_path / "models", seed=5)
    bundle = load_bundle(find_model_files(tmp_path / "models", face=True))
    placements = []

    class Recorded(PhasePlacement):
        def __init__(self, device, low_memory=True):
            super().__init__(device, offload_device="meta", low_memory=low_memory)
            placements.append(self)

        def _move(self, name, device):       # bookkeeping only: both "devices" are this CPU
            if self.where[name] != device:
                self.where[name] = device
                self.moves.append((name, str(device)))

    monkeypatch.setattr(offload, "PhasePlacement", Recorded)
    monkeypatch.setattr(offload, "resolve_memory_mode", lambda mode, device: "low")
    seen = {}

    def spy(name, fn):
        def call(*a, **k):
            seen.setdefault(name, set()).add(tuple(placements[-1].resident()))
            return fn(*a, **k)
        return call

    for name in ("unet", "pose_controlnet", "face_controlnet", "clip_vision", "text_encoder", "resampler"):
        net = getattr(bundle, name)
        net.forward = spy(name, net.forward)
    bundle.vae.decode = spy("vae.decode", bundle.vae.decode)
    bundle.vae.encode = spy("vae.encode", bundle.vae.encode)

    assets = assets_dir()
    opts = AnimateOptions(sampling=SamplingSettings(steps=2), width=128, height=192, frame_count=3, quiet=True,
                          face=False, pose_video=str(assets / "poses" / "example_2_pose_2.mp4"), memory="low")
    result = animate(assets / "reference_image" / "example_2.jpg", assets / "driving_video" / "example_2_driving_2.mp4",
                     bundle, opts)
    assert result.video.shape[0] == 3
    encode = {("clip_vision", "resampler", "text_encoder", "vae")}
    sample = {("pose_controlnet", "unet")}
    assert seen["clip_vision"] == encode and seen["vae.encode"] == encode and seen["text_encoder"] == encode
    assert seen["unet"] == sample and seen["pose_controlnet"] == sample
    assert seen["vae.decode"] == {("vae",)}
