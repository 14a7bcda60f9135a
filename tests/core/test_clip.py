"""CLIP text / vision encoders (HF layout) and the CLIP BPE tokenizer."""
import collections
import json

import pytest
import torch

from xdyna_core.models.clip import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    convert_text_encoder_keys,
    convert_vision_encoder_keys,
)
from xdyna_core.models.tokenizer import BOS_ID, EOS_ID, CLIPTokenizer, _bytes_to_unicode, tokenize

TINY_TEXT = dict(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                 max_position_embeddings=77, hidden_act="quick_gelu")
TINY_VISION = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, image_size=28,
                   patch_size=7, projection_dim=16, hidden_act="gelu")


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def text_model():
    return _randomise(CLIPTextModel(CLIPTextConfig(**TINY_TEXT)))


@pytest.fixture(scope="module")
def vision_model():
    return _randomise(CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_VISION)), seed=1)


# ------------------------------------------------------------------------------------------ text


def test_text_shapes_and_causality(text_model):
    ids = torch.randint(0, 120, (2, 77), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = text_model(ids)
        last, states = text_model(ids, output_hidden_states=True)
    assert out.shape == (2, 77, 32) and torch.isfinite(out).all()
    assert torch.equal(out, last) and len(states) == 4
    # output is the final LayerNorm of the last layer's output
    ln = text_model.text_model.final_layer_norm
    assert torch.allclose(out, ln(states[-1]), atol=1e-6)
    ids2 = ids.clone()
    ids2[:, 10] = (ids2[:, 10] + 1) % 120
    with torch.no_grad():
        out2 = text_model(ids2)
    assert torch.equal(out[:, :10], out2[:, :10])  # earlier positions cannot see token 10
    assert (out[:, 10:] - out2[:, 10:]).abs().amax(dim=-1).min() > 0  # every later one does


def test_text_input_validation(text_model):
    with pytest.raises(ValueError, match="max_position_embeddings"):
        text_model(torch.zeros(1, 78, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        text_model(torch.zeros(77, dtype=torch.long))
    with pytest.raises(ValueError, match="hidden_act"):
        CLIPTextConfig(hidden_act="relu6")


def as_oracle_keys(sd: dict, oracle) -> dict:
    """Our "text_model.*" keys in the oracle's naming: transformers 5 dropped the "text_model."
    level of CLIPTextModel's own state dict (4.x has it)."""
    if any(k.startswith("text_model.") for k in oracle.state_dict()):
        return dict(sd)
    return {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in sd.items()}


def test_text_matches_transformers(text_model):
    transformers = pytest.importorskip("transformers")
    ref = transformers.CLIPTextModel(transformers.CLIPTextConfig(**TINY_TEXT)).eval()
    ref.load_state_dict(as_oracle_keys(text_model.state_dict(), ref), strict=True)
    ids = torch.randint(0, 120, (2, 77), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        r = ref(ids, output_hidden_states=True)
        last, states = text_model(ids, output_hidden_states=True)
    assert (r.last_hidden_state - last).abs().max() <= 1e-4 * max(1, r.last_hidden_state.abs().max())
    for a, b in zip(r.hidden_states, states, strict=True):
        assert (a - b).abs().max() <= 1e-4 * max(1, a.abs().max())


def test_text_key_conversion_and_old_files(text_model):
    sd = text_model.state_dict()
    # LDM single file: prefix + old persistent position_ids buffer + other model parts
    ldm = {"cond_stage_model.transformer." + k: v for k, v in sd.items()}
    ldm["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    ldm["model.diffusion_model.conv_in.weight"] = torch.zeros(1)
    conv = convert_text_encoder_keys(ldm)
    assert set(conv) == set(sd)
    # very old transformers: no "text_model." level
    old = {"cond_stage_model.transformer." + k[len("text_model."):]: v for k, v in sd.items()}
    assert set(convert_text_encoder_keys(old)) == set(sd)
    # a checkpoint with position_ids loads strictly (the buffer is recomputed)
    m = CLIPTextModel(text_model.config)
    m.load_state_dict({**sd, "text_model.embeddings.position_ids": torch.arange(77)[None]}, strict=True)
    ids = torch.arange(77)[None] % 120
    with torch.no_grad():
        assert torch.equal(m(ids), text_model(ids))
    with pytest.raises(ValueError, match="text_model"):
        convert_text_encoder_keys({"foo.weight": torch.zeros(1)})


def test_sd15_text_defaults_layout():
    cfg = CLIPTextConfig()
    with torch.device("meta"):
        m = CLIPTextModel(cfg)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["text_model.embeddings.token_embedding.weight"] == (49408, 768)
    assert shapes["text_model.embeddings.position_embedding.weight"] == (77, 768)
    assert shapes["text_model.encoder.layers.11.mlp.fc1.weight"] == (3072, 768)
    assert "text_model.final_layer_norm.weight" in shapes


def test_sd15_text_defaults_layout_matches_transformers():
    transformers = pytest.importorskip("transformers")
    cfg = CLIPTextConfig()
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in CLIPTextModel(cfg).state_dict().items()}
    hf_cfg = transformers.CLIPTextConfig(**{k: v for k, v in cfg.to_dict().items()})
    with torch.device("meta"):
        ref = transformers.CLIPTextModel(hf_cfg)
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.endswith("position_ids")}
    assert as_oracle_keys(shapes, ref) == ref_shapes


# ---------------------------------------------------------------------------------------- vision


def test_vision_shapes_and_hidden_states(vision_model):
    px = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = vision_model(px)
        early = vision_model(px, num_layers=2)
    vm = vision_model.vision_model
    assert out.image_embeds.shape == (2, 16)
    assert len(out.hidden_states) == 4 and all(h.shape == (2, 17, 48) for h in out.hidden_states)
    with torch.no_grad():
        emb = vm.pre_layrnorm(vm.embeddings(px))
        pooled = vision_model.visual_projection(vm.post_layernorm(out.hidden_states[-1][:, 0]))
    assert torch.allclose(out.hidden_states[0], emb, atol=1e-6)  # [0] = embeddings after pre_layrnorm
    assert torch.equal(out.last_hidden_state, out.hidden_states[-1])
    assert torch.allclose(out.image_embeds, pooled, atol=1e-6)
    # stopping one layer early gives hidden_states[-2] of the full run
    assert early.image_embeds is None
    assert torch.equal(early.hidden_states[-1], out.hidden_states[-2])
    with pytest.raises(ValueError, match=r"\(B, 3, 28, 28\)"):
        vision_model(torch.zeros(1, 3, 32, 32))


def test_vision_matches_transformers(vision_model):
    transformers = pytest.importorskip("transformers")
    ref = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**TINY_VISION)).eval()
    ref.load_state_dict(vision_model.state_dict(), strict=True)
    px = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        r = ref(px, output_hidden_states=True)
        o = vision_model(px)
    tol = lambda t: 1e-4 * max(1, t.abs().max())  # noqa: E731
    assert (r.image_embeds - o.image_embeds).abs().max() <= tol(r.image_embeds)
    assert (r.last_hidden_state - o.last_hidden_state).abs().max() <= tol(r.last_hidden_state)
    assert len(r.hidden_states) == len(o.hidden_states)
    for a, b in zip(r.hidden_states, o.hidden_states, strict=True):
        assert (a - b).abs().max() <= tol(a)


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


def test_vision_key_conversion(vision_model):
    sd = vision_model.state_dict()
    conv = convert_vision_encoder_keys(_to_open_clip(sd))
    assert set(conv) == set(sd)
    for k, v in sd.items():
        assert torch.equal(conv[k], v), k
    # HF files pass through, old position_ids and a text tower dropped
    hf = {**sd, "vision_model.embeddings.position_ids": torch.arange(17)[None], "text_model.x": torch.zeros(1)}
    assert set(convert_vision_encoder_keys(hf)) == set(sd)
    m = CLIPVisionModelWithProjection(vision_model.config)
    m.load_state_dict({**sd, "vision_model.embeddings.position_ids": torch.arange(17)[None]}, strict=True)
    with pytest.raises(ValueError, match="vision_model"):
        convert_vision_encoder_keys({"foo": torch.zeros(1)})


def test_vit_h_defaults_layout():
    cfg = CLIPVisionConfig()
    with torch.device("meta"):
        m = CLIPVisionModelWithProjection(cfg)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["vision_model.embeddings.position_embedding.weight"] == (257, 1280)
    assert shapes["vision_model.embeddings.patch_embedding.weight"] == (1280, 3, 14, 14)
    assert shapes["visual_projection.weight"] == (1024, 1280)
    assert "vision_model.encoder.layers.31.self_attn.q_proj.weight" in shapes


def test_vit_h_defaults_layout_matches_transformers():
    transformers = pytest.importorskip("transformers")
    cfg = CLIPVisionConfig()
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in CLIPVisionModelWithProjection(cfg).state_dict().items()}
    with torch.device("meta"):
        ref = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**cfg.to_dict()))
    assert shapes == {k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.endswith("position_ids")}


def test_config_from_nested_hf_dict():
    vision = {k: v for k, v in TINY_VISION.items() if k != "projection_dim"}
    full = {"projection_dim": 16, "text_config": dict(TINY_TEXT), "vision_config": vision}
    assert CLIPTextConfig.from_dict(full) == CLIPTextConfig(**TINY_TEXT)
    assert CLIPVisionConfig.from_dict(full) == CLIPVisionConfig(**TINY_VISION)


# ------------------------------------------------------------------------------------- tokenizer

CORPUS = ("a photo of a dancing person, high quality, masterpiece. The quick brown fox jumps over the lazy "
          "dog's back! it's 42 degrees; cafe dancing dancer danced photos")


def _train_bpe(text, n_merges):
    """A few BPE merges learned on `text`, with CLIP's byte alphabet and end-of-word marker."""
    import regex

    pat = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.I)
    be = _bytes_to_unicode()
    words = collections.Counter()
    for w in pat.findall(text.lower()):
        s = "".join(be[b] for b in w.encode())
        words[tuple(s[:-1]) + (s[-1] + "</w>",)] += 1
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        new = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i < len(w) - 1 and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    return merges


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    """A small vocabulary with the structure of CLIP's: bytes, bytes + </w>, merges, two specials."""
    d = tmp_path_factory.mktemp("sd15") / "tokenizer"
    d.mkdir()
    merges = _train_bpe(CORPUS, 80)
    be = list(_bytes_to_unicode().values())
    vocab = be + [c + "</w>" for c in be] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return d


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("XDYNA_TOKENIZER_DIR", raising=False)
    monkeypatch.delenv("COMFYUI_DIR", raising=False)


def test_empty_prompt_needs_no_vocab(no_env):
    ids = tokenize("")
    assert ids.dtype == torch.long and ids.shape == (1, 77)
    assert ids[0, 0].item() == BOS_ID == 49406
    assert (ids[0, 1:] == EOS_ID).all() and EOS_ID == 49407
    assert tokenize(["", " "]).shape == (2, 77)


def test_prompt_without_vocab_is_a_clear_error(no_env):
    with pytest.raises(FileNotFoundError, match=r"vocab\.json.*XDYNA_TOKENIZER_DIR"):
        tokenize("a dancing person")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tokenize("", vocab_dir="/nowhere")


def test_bpe_merges_and_padding(vocab_dir, no_env):
    tok = CLIPTokenizer.from_dir(vocab_dir)
    enc = tok.encoder
    # "dancing" is frequent in the corpus: it must come out as one learned symbol
    assert tok.encode("dancing") == [enc["dancing</w>"]]
    assert tok.encode("  DANCING\n") == [enc["dancing</w>"]]  # lower-cased, whitespace cleaned
    assert tok.encode("zq") == [enc["z"], enc["q</w>"]]  # unseen pair stays split into bytes
    ids = tokenize("a dancing person", vocab_dir=vocab_dir.parent)  # SD1.5 folder with tokenizer/
    body = tok.encode("a dancing person")
    bos, eos = enc["<|startoftext|>"], enc["<|endoftext|>"]
    assert ids[0, : len(body) + 2].tolist() == [bos] + body + [eos]
    assert (ids[0, len(body) + 2:] == eos).all()
    long_ids = tokenize("dog " * 100, vocab_dir=vocab_dir)
    assert long_ids.shape == (1, 77) and long_ids[0, 0] == bos and long_ids[0, -1] == eos
    assert (long_ids[0, 1:-1] == enc["dog</w>"]).all()  # truncated to 75 body tokens


def test_env_var_location(vocab_dir, no_env, monkeypatch):
    monkeypatch.setenv("XDYNA_TOKENIZER_DIR", str(vocab_dir))
    assert torch.equal(tokenize("a photo"), tokenize("a photo", vocab_dir=vocab_dir))


def test_tokenizer_matches_transformers(vocab_dir):
    transformers = pytest.importorskip("transformers")
    ref = transformers.CLIPTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"))
    ours = CLIPTokenizer.from_dir(vocab_dir)
    prompts = [CORPUS, "", "  Hello   WORLD\tnew\nline ", "a<|endoftext|>b <|startoftext|>", "x" * 200,
               "don't stop, it's fine", "caf\u00e9 na\u00efve \U0001F600"]
    if int(transformers.__version__.split(".")[0]) < 5:
        # Cases where transformers 5 changed CLIPTokenizer's text cleaning and 4.x is the reference
        # (SD1.5 and X-Dyna ran with it; we reproduce it): 4.x lowercases before matching
        # special-token markup (5.x: case-sensitive), splits CJK ideographs into single characters
        # and drops control / zero-width characters.
        prompts += ["a<|endoftext|>b <|STARTOFTEXT|>", "caf\u00e9 \u6771\u4eac \U0001F600",
                    "\x00ctl\x07 zero\u200bwidth"]
    for p in prompts:
        a = ref(p, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        assert torch.equal(a, ours(p)), p
