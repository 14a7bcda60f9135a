"""The released-checkpoint converter: clean keys, verified round trip, refusals."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from xdyna_core.cli import main as xdyna_main
from xdyna_core.loading import checkpoints as C
from xdyna_core.loading import convert as CV
from xdyna_core.loading import tiny as T

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return T.write_tiny_set(tmp_path_factory.mktemp("models"), seed=1)


def _released_style_ckpt(src: Path, dst: Path) -> dict:
    """Like the released files: fp32, {'state_dict': {'module.<key>': ...}} plus training scalars."""
    sd = {k: v.float() for k, v in load_file(str(src)).items()}
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 5}, dst)
    return sd


def test_unet_ckpt_round_trip(tiny, tmp_path, capsys):
    ckpt = tmp_path / "unet-checkpoint-epoch-5.ckpt"
    sd = _released_style_ckpt(tiny["unet"], ckpt)
    out = tmp_path / "xdyna_unet.safetensors"
    assert xdyna_main(["convert", str(ckpt), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "X-Dyna UNet" in printed and f"{len(sd)} tensors" in printed
    assert "motion_module 560" in printed and "dynamics_adapter 48" in printed and "ip_adapter 32" in printed
    converted = load_file(str(out))
    assert converted.keys() == sd.keys()  # clean keys: no 'module.' anywhere
    assert all(torch.equal(converted[k], sd[k]) for k in sd)
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["xdyna_kind"] == "xdyna_unet"
    # the converted file loads like the original (config given: released files carry none)
    cfg = C.read_config_metadata(tiny["unet"])
    a, _ = C.load_xdyna_unet(out, config=cfg)
    b, _ = C.load_xdyna_unet(ckpt, config=cfg)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_dtype_cast_and_shared_storage(tiny, tmp_path):
    sd = {k: v.float() for k, v in load_file(str(tiny["face_controlnet"])).items()}
    # torch.save keeps views of one storage together; safetensors needs them separated
    big = torch.cat([sd["conv_in.weight"].flatten(), sd["conv_in.bias"]])
    n = sd["conv_in.weight"].numel()
    shared = dict(sd, **{"conv_in.weight": big[:n].view_as(sd["conv_in.weight"]), "conv_in.bias": big[n:]})
    ckpt = tmp_path / "controlnet_face.ckpt"
    torch.save({"state_dict": shared}, ckpt)
    loaded = C.load_state_dict(ckpt)
    assert loaded["conv_in.bias"].untyped_storage().data_ptr() == loaded["conv_in.weight"].untyped_storage().data_ptr()
    same = tmp_path / "same_dtype.safetensors"
    CV.convert_file(ckpt, same)  # no cast: views of one storage are written as separate tensors
    assert all(torch.equal(v, sd[k]) for k, v in load_file(str(same)).items())
    out = tmp_path / "xdyna_face_controlnet.safetensors"
    res = CV.convert_file(ckpt, out, dtype="bf16")
    assert res.kind == "controlnet" and "6-channel condition (S-Face)" in res.summary()
    conv = load_file(str(out))
    assert {v.dtype for v in conv.values()} == {torch.bfloat16}
    assert all(torch.equal(conv[k], sd[k].to(torch.bfloat16)) for k in sd)
    model, rep = C.load_controlnet(out, kind="face", config=C.read_config_metadata(tiny["face_controlnet"]))
    assert rep.ok and next(model.parameters()).dtype == torch.float32  # loaders cast on load


def test_ip_adapter_bin_to_flat_safetensors(tiny, tmp_path):
    flat = load_file(str(tiny["ip_adapter"]))
    nested = {"image_proj": {}, "ip_adapter": {}}
    for k, v in flat.items():
        s, _, rest = k.partition(".")
        nested[s][rest] = v
    bin_path = tmp_path / "ip-adapter-plus_sd15.bin"
    torch.save(nested, bin_path)
    out = tmp_path / "ip-adapter-plus_sd15.safetensors"
    res = CV.convert_file(bin_path, out)
    assert res.counts == {"image_proj": 29, "ip_adapter": 32}
    conv = load_file(str(out))
    assert conv.keys() == flat.keys()  # 'image_proj.latents', 'ip_adapter.1.to_k_ip.weight', ...
    assert "ip_adapter.31.to_v_ip.weight" in conv
    assert all(torch.equal(conv[k], flat[k]) for k in flat)


def test_refusals(tiny, tmp_path, capsys):
    # not an X-Dyna file
    assert xdyna_main(["convert", str(tiny["sd15"]), str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert str(tiny["sd15"]) in err and "Stable Diffusion checkpoint" in err
    assert not (tmp_path / "x.safetensors").exists()

    # a pickle that would run code
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"conv_in.weight": torch.zeros(1)}, "p": Payload()}, bad)
    assert xdyna_main(["convert", str(bad), str(tmp_path / "y.safetensors")]) == 2
    captured = capsys.readouterr()
    assert "refused" in captured.err and "pwned" not in captured.out
    with pytest.raises(ValueError, match=".safetensors"):
        CV.convert_file(tiny["unet"], tmp_path / "out.ckpt")
    with pytest.raises(ValueError, match="overwrite"):
        CV.convert_file(tiny["unet"], tiny["unet"])


def test_module_cli(tiny, tmp_path):
    ckpt = tmp_path / "pose.ckpt"
    _released_style_ckpt(tiny["pose_controlnet"], ckpt)
    out = tmp_path / "pose.safetensors"
    proc = subprocess.run([sys.executable, "-m", "xdyna_core.convert", str(ckpt), str(out), "--dtype", "fp16"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "3-channel condition (pose)" in proc.stdout and "verified" in proc.stdout
    assert {v.dtype for v in load_file(str(out)).values()} == {torch.float16}
