"""CLIP text / vision encoders of the standalone path (transformers' models loaded from our files)
and the prompt tokenizer.

The oracle is transformers' own loading path, as the official pipeline uses it:
``CLIPTextModel.from_pretrained(<sd15>/text_encoder)`` and
``CLIPVisionModelWithProjection.from_pretrained(image_encoder)(...).hidden_states[-2]``.
Our loaders read the same weights from the files users have (LDM single file, diffusers folder,
ComfyUI clip_vision file, OpenCLIP layout) and must give the same outputs.
"""
import json
import re
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file, save_file

from xdyna_core.loading import clip_keys, sd_checkpoint_keys
from xdyna_core.loading import keys as K
from xdyna_core.loading import tiny as T
from xdyna_core.loading.bundle import (_text_config, _vision_config, find_model_files, load_clip_vision,
                                      load_sd15_parts)
from xdyna_core.loading.checkpoints import CheckpointError, read_config_metadata
from xdyna_core.models.clip import (SD15_TEXT, VIT_H_14, PenultimateCLIPVision, config_dict, new_text_encoder,
                                    new_vision_encoder, text_config, text_tower, vision_config, vision_tower)
from xdyna_core.models.tokenizer import BOS_ID, EOS_ID, tokenize
from xdyna_core.reference import clip_image_hidden

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return T.write_tiny_set(tmp_path_factory.mktemp("models"), seed=3, dtype="fp32")


@pytest.fixture(scope="module")
def diffusers_sd15(tiny, tmp_path_factory):
    """The tiny SD1.5 as a diffusers folder: vae/ (the tiny VAE config as metadata: too small for the
    shape heuristics), text_encoder/ (config.json + model.safetensors)."""
    root = tmp_path_factory.mktemp("sd15") / "sd15-diffusers"
    parts = sd_checkpoint_keys.split_ldm_checkpoint(load_file(str(tiny["sd15"])), parts=("vae", "clip_text"))
    (root / "vae").mkdir(parents=True)
    vae_meta = json.dumps(read_config_metadata(tiny["sd15"])["vae"])
    save_file(parts["vae"], str(root / "vae" / "diffusion_pytorch_model.safetensors"),
              metadata={K.CONFIG_METADATA_KEY: vae_meta})
    (root / "text_encoder").mkdir()
    save_file({k: v.contiguous() for k, v in parts["clip_text"].items()}, str(root / "text_encoder" / "model.safetensors"))
    text_config(**read_config_metadata(tiny["sd15"])["clip_text"]).save_pretrained(str(root / "text_encoder"))
    return root


@pytest.fixture(scope="module")
def image_encoder(tiny, tmp_path_factory):
    """The tiny ComfyUI clip_vision file as an HF image_encoder folder (what IP-Adapter's code loads)."""
    root = tmp_path_factory.mktemp("image_encoder")
    save_file(load_file(str(tiny["clip_vision"])), str(root / "model.safetensors"))
    vision_config(**read_config_metadata(tiny["clip_vision"])).save_pretrained(str(root))
    return root


def _ids(n=2, seed=0):
    ids = torch.randint(0, 49406, (n, 77), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = BOS_ID
    ids[:, 20:] = EOS_ID
    return ids


# ------------------------------------------------------------------------------------------ text


@torch.no_grad()
def test_text_encoder_matches_transformers_loading(tiny, diffusers_sd15):
    official = transformers.CLIPTextModel.from_pretrained(str(diffusers_sd15 / "text_encoder")).eval()
    ids = _ids()
    want = official(input_ids=ids).last_hidden_state
    for src in (tiny["sd15"], diffusers_sd15):  # LDM single file, diffusers folder
        _, text = load_sd15_parts(src, vae_file=diffusers_sd15 / "vae" / "diffusion_pytorch_model.safetensors")
        assert isinstance(text, transformers.CLIPTextModel) and text.config._attn_implementation == "sdpa"
        assert config_dict(text.config) == config_dict(official.config)
        got = text(input_ids=ids).last_hidden_state
        assert got.shape == (2, 77, 32)
        assert (got - want).abs().max() <= 1e-6 * max(1, want.abs().max()), src
    # SD1.5 attends causally: an earlier position cannot see a later token
    ids2 = ids.clone()
    ids2[:, 10] += 1
    out2 = text(input_ids=ids2).last_hidden_state
    assert torch.equal(got[:, :10], out2[:, :10]) and not torch.allclose(got[:, 10:], out2[:, 10:])


def test_text_key_conversion_and_old_files(tiny):
    sd = load_file(str(tiny["sd15"]))
    hf = clip_keys.convert_text_encoder_keys(sd)  # from the LDM single file: position_ids and other parts dropped
    assert hf and all(k.startswith("text_model.") and not k.endswith("position_ids") for k in hf)
    tower = clip_keys.clip_tower_keys(hf, clip_keys.CLIP_TEXT_TOWER)
    model = text_tower(new_text_encoder(text_config(**read_config_metadata(tiny["sd15"])["clip_text"])))
    assert set(tower) == set(model.state_dict())  # what transformers' tower expects, in 4.x and 5.x
    # very old transformers (no "text_model." level), transformers 5's flat names, diffusers prefix
    old = {clip_keys.LDM_CLIP_PREFIX + k[len("text_model."):]: v for k, v in hf.items()}
    flat = {k[len("text_model."):]: v for k, v in hf.items()}
    pref = {"text_encoder." + k: v for k, v in hf.items()}
    for variant in (old, flat, pref):
        assert clip_keys.convert_text_encoder_keys(variant).keys() == hf.keys()
    with pytest.raises(ValueError, match="text_model"):
        clip_keys.convert_text_encoder_keys({"foo.weight": torch.zeros(1)})


def test_text_config_from_shapes_of_sd15():
    with torch.device("meta"):
        sd = text_tower(new_text_encoder(text_config())).state_dict()
    assert config_dict(_text_config(sd, None)) == SD15_TEXT


# ---------------------------------------------------------------------------------------- vision


def _to_open_clip(sd):
    """OpenCLIP VisionTransformer names (visual.conv1, ln_pre, transformer.resblocks.i with a fused
    nn.MultiheadAttention in_proj, mlp.c_fc/c_proj, ln_post, proj = projection weight transposed)."""
    out = {
        "visual.class_embedding": sd["vision_model.embeddings.class_embedding"],
        "visual.conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
        "visual.positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
        "visual.proj": sd["visual_projection.weight"].t(),
        "logit_scale": torch.ones(()),
        "token_embedding.weight": torch.zeros(3, 3),  # text tower of a full OpenCLIP model
    }
    for s in ("weight", "bias"):
        out[f"visual.ln_pre.{s}"] = sd[f"vision_model.pre_layrnorm.{s}"]
        out[f"visual.ln_post.{s}"] = sd[f"vision_model.post_layernorm.{s}"]
    i = 0
    while f"vision_model.encoder.layers.{i}.layer_norm1.weight" in sd:
        h, o = f"vision_model.encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        for s in ("weight", "bias"):
            out[o + f"attn.in_proj_{s}"] = torch.cat([sd[h + f"self_attn.{n}_proj.{s}"] for n in "qkv"])
            out[o + f"attn.out_proj.{s}"] = sd[h + f"self_attn.out_proj.{s}"]
            out[o + f"ln_1.{s}"] = sd[h + f"layer_norm1.{s}"]
            out[o + f"ln_2.{s}"] = sd[h + f"layer_norm2.{s}"]
            out[o + f"mlp.c_fc.{s}"] = sd[h + f"mlp.fc1.{s}"]
            out[o + f"mlp.c_proj.{s}"] = sd[h + f"mlp.fc2.{s}"]
        i += 1
    return out


@torch.no_grad()
def test_clip_vision_penultimate_matches_transformers_loading(tiny, image_encoder, tmp_path):
    official = transformers.CLIPVisionModelWithProjection.from_pretrained(str(image_encoder)).eval()
    px = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    want = official(pixel_values=px, output_hidden_states=True).hidden_states[-2]
    meta = read_config_metadata(tiny["clip_vision"])
    # the same weights in OpenCLIP names; the tiny tower is too small for the shape heuristics
    # (heads = width / 64), so the file carries its config like every tiny file
    open_clip = tmp_path / "open_clip_vit.safetensors"
    save_file({k: v.contiguous() for k, v in _to_open_clip(load_file(str(tiny["clip_vision"]))).items()},
              str(open_clip), metadata={K.CONFIG_METADATA_KEY: json.dumps(meta)})
    for src in (tiny["clip_vision"], open_clip):
        vis = load_clip_vision(src)
        assert isinstance(vis, PenultimateCLIPVision) and vis.model.config._attn_implementation == "sdpa"
        # the last layer is neither kept nor run; config still describes the full encoder
        assert len(vision_tower(vis.model).encoder.layers) == meta["num_hidden_layers"] - 1
        assert vis.config.num_hidden_layers == meta["num_hidden_layers"]
        got = clip_image_hidden(vis, px)
        assert got.shape == want.shape == (2, 257, 48)
        assert (got - want).abs().max() <= 1e-6 * max(1, want.abs().max()), src
    # any transformers model works too (hidden_states[-2])
    assert torch.allclose(clip_image_hidden(official, px), want)


def test_vision_key_conversion(tiny):
    sd = load_file(str(tiny["clip_vision"]))
    conv = clip_keys.convert_vision_encoder_keys(_to_open_clip(sd))
    assert set(conv) == set(sd)
    for k, v in sd.items():
        assert torch.equal(conv[k], v), k
    # HF files pass through, old position_ids and a text tower dropped
    hf = {**sd, "vision_model.embeddings.position_ids": torch.arange(257)[None], "text_model.x": torch.zeros(1)}
    assert set(clip_keys.convert_vision_encoder_keys(hf)) == set(sd)
    tower = clip_keys.clip_tower_keys(sd, clip_keys.CLIP_VISION_TOWER)
    model = new_vision_encoder(vision_config(**read_config_metadata(tiny["clip_vision"])))
    assert set(tower) == set(vision_tower(model).state_dict())
    with pytest.raises(ValueError, match="vision_model"):
        clip_keys.convert_vision_encoder_keys({"foo": torch.zeros(1)})


def test_wrong_file_for_clip_vision_is_named(tiny):
    with pytest.raises(CheckpointError, match=r"not a CLIP vision encoder \(it is a single-file Stable Diffusion"):
        load_clip_vision(tiny["sd15"])


@pytest.mark.parametrize("fields", [VIT_H_14, dict(VIT_H_14, hidden_size=1024, intermediate_size=4096,
                                                   num_hidden_layers=24, projection_dim=768)])
def test_vision_config_from_shapes(fields):
    """ViT-H/14 (the IP-Adapter image encoder) and ViT-L/14 from their weights' shapes alone."""
    with torch.device("meta"):
        model = new_vision_encoder(vision_config(**fields), projection=True)
    sd = clip_keys.clip_tower_keys(model.state_dict(), clip_keys.CLIP_VISION_TOWER)
    proj = model.state_dict()[clip_keys.CLIP_VISION_PROJECTION].shape[0]
    assert config_dict(_vision_config(sd, None, proj)) == fields


@torch.no_grad()
def test_fp16_load(tiny):
    vis32, vis16 = load_clip_vision(tiny["clip_vision"]), load_clip_vision(tiny["clip_vision"], dtype=torch.float16)
    _, text16 = load_sd15_parts(tiny["sd15"], dtype=torch.float16)
    assert {p.dtype for p in vis16.parameters()} == {p.dtype for p in text16.parameters()} == {torch.float16}
    px = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    a, b = clip_image_hidden(vis32, px), clip_image_hidden(vis16, px)
    assert b.dtype == torch.float16 and (a - b.float()).abs().max() <= 1e-2 * max(1, a.abs().max())


def test_config_validation():
    with pytest.raises(ValueError, match="hidden_act"):
        text_config(hidden_act="relu6")
    with pytest.raises(ValueError, match="divisible"):
        vision_config(hidden_size=50, num_attention_heads=4)
    assert text_config(foo=1, hidden_size=64, num_attention_heads=2).hidden_size == 64  # unknown keys ignored


# ------------------------------------------------------------------------------------- tokenizer

CORPUS = ("a photo of a dancing person, high quality, masterpiece. the quick brown fox jumps over the lazy "
          "dog's back! it's 42 degrees; cafe dancing dancer danced photos")


def _bytes_to_unicode():
    """CLIP's byte -> printable character table (whitespace/control bytes moved above 255)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def _train_bpe(words, n_merges):
    """A few BPE merges learned on `words`, with CLIP's end-of-word marker."""
    words = Counter(tuple(w[:-1]) + (w[-1] + "</w>",) for w in words)
    merges = []
    for _ in range(n_merges):
        pairs = Counter(p for w, c in words.items() for p in zip(w, w[1:]) for _ in range(c))
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        joined = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if w[i:i + 2] == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            joined[tuple(out)] += c
        words = joined
    return merges


@pytest.fixture(scope="module")
def sd15_folder(tmp_path_factory):
    """An SD1.5-like folder whose tokenizer/ has a vocabulary with CLIP's structure and ids: bytes,
    bytes + </w>, learned merges, filler, and <|startoftext|> = 49406, <|endoftext|> = 49407."""
    root = tmp_path_factory.mktemp("sd15tok")
    d = root / "tokenizer"
    d.mkdir()
    merges = _train_bpe(re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", CORPUS), 80)
    be = _bytes_to_unicode()
    vocab = be + [c + "</w>" for c in be] + ["".join(m) for m in merges]
    vocab += [f"<unused{i}>" for i in range(BOS_ID - len(vocab))] + ["<|startoftext|>", "<|endoftext|>"]
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("XDYNA_TOKENIZER_DIR", raising=False)
    monkeypatch.delenv("COMFYUI_DIR", raising=False)


def test_empty_prompt_needs_no_vocab(no_env, sd15_folder):
    ids = tokenize("")
    assert ids.dtype == torch.long and ids.shape == (1, 77)
    assert ids[0, 0].item() == BOS_ID == 49406 and (ids[0, 1:] == EOS_ID).all() and EOS_ID == 49407
    assert tokenize(["", " "]).shape == (2, 77)
    # exactly what the SD1.5 tokenizer gives for "" (padding with <|endoftext|>)
    assert torch.equal(ids, tokenize("", sd15_folder))


def test_prompt_without_vocab_is_a_clear_error(no_env):
    with pytest.raises(FileNotFoundError) as e:
        tokenize("a dancing person")
    msg = str(e.value)
    assert "\n" not in msg and "vocab.json" in msg and "merges.txt" in msg and "models/xdyna/tokenizer/" in msg
    assert "XDYNA_TOKENIZER_DIR" in msg
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tokenize("", vocab_dir="/nowhere")


def test_prompt_with_the_sd15_tokenizer(sd15_folder, no_env):
    vocab = json.loads((sd15_folder / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    ids = tokenize(["a dancing person", "  A DANCING\nperson "], vocab_dir=sd15_folder)  # folder with tokenizer/
    row = ids[0].tolist()
    assert row[:3] == [BOS_ID, vocab["a</w>"], vocab["dancing</w>"]]  # merges applied, lower-cased
    end = row.index(EOS_ID)
    assert all(t < len(vocab) - 2 for t in row[1:end]) and set(row[end:]) == {EOS_ID}  # EOS padding
    assert torch.equal(ids[0], ids[1])  # case and whitespace normalised
    long_ids = tokenize("dog " * 100, vocab_dir=sd15_folder / "tokenizer")
    assert long_ids.shape == (1, 77) and long_ids[0, 0] == BOS_ID and long_ids[0, -1] == EOS_ID
    assert (long_ids[0, 1:-1] == vocab["dog</w>"]).all()  # truncated to 75 body tokens


def test_env_var_location(sd15_folder, no_env, monkeypatch):
    monkeypatch.setenv("XDYNA_TOKENIZER_DIR", str(sd15_folder))
    assert torch.equal(tokenize("a photo"), tokenize("a photo", vocab_dir=sd15_folder))


def test_models_folder_tokenizer(tiny, sd15_folder, no_env):
    """models/xdyna/tokenizer/ is found when it holds both files, and only then."""
    import shutil

    root = tiny["unet"].parents[1]
    assert root.name != "xdyna" and (root / "xdyna").is_dir()
    dest = root / "xdyna" / "tokenizer"
    dest.mkdir()
    shutil.copy(sd15_folder / "tokenizer" / "vocab.json", dest)
    assert find_model_files(root).tokenizer_dir is None  # merges.txt missing
    shutil.copy(sd15_folder / "tokenizer" / "merges.txt", dest)
    files = find_model_files(root)
    assert files.tokenizer_dir == dest
    assert torch.equal(tokenize("a dancing person", files.tokenizer_dir), tokenize("a dancing person", sd15_folder))
    shutil.rmtree(dest)
