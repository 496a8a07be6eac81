"""MVDream LDM checkpoint -> stock diffusers/transformers models (``mvdiffusion.convert``).

The checkpoints here are built from the ORIGINAL key layouts (LDM ``openaimodel`` UNet with
MVDream's ``camera_embed``, LDM ``AutoencoderKL``, OpenCLIP text tower) by small generators that
mirror those modules' constructors, independently of the converter. Tiny sizes carry random
values everywhere (MVDream zero-initialises output layers; zeros would prove nothing); the full
SD-2.1 sizes are checked on the meta device (shapes only, no memory).
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import CLIPTextConfig, CLIPTextModel

from dreamreward.models.mvdiffusion.convert import (
    SD21_MVDREAM_LDM_CONFIG,
    ConvertedMVDream,
    convert_mvdream_state_dict,
    load_mvdream_checkpoint,
    load_mvdream_diffusers,
    mvdream_scheduler_config,
    mvdream_unet_config,
)
from dreamreward.models.weight_errors import (
    CheckpointFormatError,
    CheckpointMismatchError,
    check_state_dict,
)

U, V, T = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.model."
TEXT_HEADS = 2
LATENT = 8  # UNet input side (MVDream: 32)

TINY_LDM_CONFIG = copy.deepcopy(SD21_MVDREAM_LDM_CONFIG)
_p = TINY_LDM_CONFIG["model"]["params"]
_p["unet_config"]["params"].update(
    image_size=LATENT,
    model_channels=32,
    channel_mult=[1, 2, 2],
    attention_resolutions=[1, 2],  # attention on the first two levels, not the last (as SD)
    num_res_blocks=2,
    num_head_channels=16,
    context_dim=32,
)
_p["first_stage_config"]["params"]["ddconfig"].update(ch=32, ch_mult=[1, 2], num_res_blocks=1)
# Not in MVDream's yaml: the tiny text tower's heads are 16 wide, not OpenCLIP's 64.
_p["cond_stage_config"]["params"]["heads"] = TEXT_HEADS
TINY_TEXT = {"width": 32, "layers": 3, "vocab": 64, "context": 77, "embed": 16}
FULL_TEXT = {"width": 1024, "layers": 24, "vocab": 49408, "context": 77, "embed": 1024}


# ------------------------------------------------------------------------- LDM layout generators
class _Shapes(dict):
    def linear(self, name: str, n_in: int, n_out: int, bias: bool = True) -> None:
        self[f"{name}.weight"] = (n_out, n_in)
        if bias:
            self[f"{name}.bias"] = (n_out,)

    def conv(self, name: str, n_in: int, n_out: int, k: int) -> None:
        self[f"{name}.weight"] = (n_out, n_in, k, k)
        self[f"{name}.bias"] = (n_out,)

    def norm(self, name: str, c: int) -> None:
        self[f"{name}.weight"] = (c,)
        self[f"{name}.bias"] = (c,)


def ldm_unet_shapes(p: dict) -> dict[str, tuple[int, ...]]:
    """Keys/shapes of MVDream's ``MultiViewUNetModel`` (LDM openaimodel), without prefix."""
    s = _Shapes()
    mc, ctx, nhc = p["model_channels"], p["context_dim"], p["num_head_channels"]
    emb = 4 * mc

    def res(name: str, c_in: int, c_out: int) -> None:
        s.norm(f"{name}.in_layers.0", c_in)
        s.conv(f"{name}.in_layers.2", c_in, c_out, 3)
        s.linear(f"{name}.emb_layers.1", emb, c_out)
        s.norm(f"{name}.out_layers.0", c_out)
        s.conv(f"{name}.out_layers.3", c_out, c_out, 3)
        if c_in != c_out:
            s.conv(f"{name}.skip_connection", c_in, c_out, 1)

    def transformer(name: str, c: int) -> None:
        inner = (c // nhc) * nhc
        s.norm(f"{name}.norm", c)
        s.linear(f"{name}.proj_in", c, inner)  # use_linear_in_transformer
        for d in range(p["transformer_depth"]):
            b = f"{name}.transformer_blocks.{d}"
            for attn, kv in (("attn1", inner), ("attn2", ctx)):
                s.linear(f"{b}.{attn}.to_q", inner, inner, bias=False)
                s.linear(f"{b}.{attn}.to_k", kv, inner, bias=False)
                s.linear(f"{b}.{attn}.to_v", kv, inner, bias=False)
                s.linear(f"{b}.{attn}.to_out.0", inner, inner)
            s.linear(f"{b}.ff.net.0.proj", inner, inner * 4 * 2)  # GEGLU
            s.linear(f"{b}.ff.net.2", inner * 4, inner)
            for n in (1, 2, 3):
                s.norm(f"{b}.norm{n}", inner)
        s.linear(f"{name}.proj_out", inner, c)

    s.linear("time_embed.0", mc, emb)
    s.linear("time_embed.2", emb, emb)
    s.linear("camera_embed.0", p["camera_dim"], emb)
    s.linear("camera_embed.2", emb, emb)
    s.conv("input_blocks.0.0", p["in_channels"], mc, 3)
    mults, nrb, attn_at = p["channel_mult"], p["num_res_blocks"], p["attention_resolutions"]
    chans, ch, ds, i = [mc], mc, 1, 1
    for level, mult in enumerate(mults):
        for _ in range(nrb):
            res(f"input_blocks.{i}.0", ch, mult * mc)
            ch = mult * mc
            if ds in attn_at:
                transformer(f"input_blocks.{i}.1", ch)
            chans.append(ch)
            i += 1
        if level != len(mults) - 1:
            s.conv(f"input_blocks.{i}.0.op", ch, ch, 3)
            chans.append(ch)
            i, ds = i + 1, ds * 2
    res("middle_block.0", ch, ch)
    transformer("middle_block.1", ch)
    res("middle_block.2", ch, ch)
    i = 0
    for level, mult in reversed(list(enumerate(mults))):
        for r in range(nrb + 1):
            res(f"output_blocks.{i}.0", ch + chans.pop(), mc * mult)
            ch, j = mc * mult, 1
            if ds in attn_at:
                transformer(f"output_blocks.{i}.1", ch)
                j = 2
            if level and r == nrb:
                s.conv(f"output_blocks.{i}.{j}.conv", ch, ch, 3)
                ds //= 2
            i += 1
    s.norm("out.0", ch)
    s.conv("out.2", mc, p["out_channels"], 3)
    return dict(s)


def ldm_vae_shapes(params: dict) -> dict[str, tuple[int, ...]]:
    """Keys/shapes of LDM's ``AutoencoderKL`` (``ldm.modules.diffusionmodules.model``)."""
    s, dd = _Shapes(), params["ddconfig"]
    ch, mults, nrb, z = dd["ch"], dd["ch_mult"], dd["num_res_blocks"], dd["z_channels"]

    def res(name: str, c_in: int, c_out: int) -> None:
        s.norm(f"{name}.norm1", c_in)
        s.conv(f"{name}.conv1", c_in, c_out, 3)
        s.norm(f"{name}.norm2", c_out)
        s.conv(f"{name}.conv2", c_out, c_out, 3)
        if c_in != c_out:
            s.conv(f"{name}.nin_shortcut", c_in, c_out, 1)

    def mid(name: str, c: int) -> None:
        res(f"{name}.block_1", c, c)
        s.norm(f"{name}.attn_1.norm", c)
        for q in ("q", "k", "v", "proj_out"):
            s.conv(f"{name}.attn_1.{q}", c, c, 1)
        res(f"{name}.block_2", c, c)

    s.conv("encoder.conv_in", dd["in_channels"], ch, 3)
    c_in = ch
    for i, mult in enumerate(mults):
        for j in range(nrb):
            res(f"encoder.down.{i}.block.{j}", c_in, ch * mult)
            c_in = ch * mult
        if i != len(mults) - 1:
            s.conv(f"encoder.down.{i}.downsample.conv", c_in, c_in, 3)
    mid("encoder.mid", c_in)
    s.norm("encoder.norm_out", c_in)
    s.conv("encoder.conv_out", c_in, 2 * z, 3)
    c_in = ch * mults[-1]
    s.conv("decoder.conv_in", z, c_in, 3)
    mid("decoder.mid", c_in)
    for i in reversed(range(len(mults))):
        for j in range(nrb + 1):
            res(f"decoder.up.{i}.block.{j}", c_in, ch * mults[i])
            c_in = ch * mults[i]
        if i != 0:
            s.conv(f"decoder.up.{i}.upsample.conv", c_in, c_in, 3)
    s.norm("decoder.norm_out", c_in)
    s.conv("decoder.conv_out", c_in, dd["out_ch"], 3)
    s.conv("quant_conv", 2 * z, 2 * params["embed_dim"], 1)
    s.conv("post_quant_conv", params["embed_dim"], z, 1)
    return dict(s)


def openclip_text_shapes(t: dict) -> dict[str, tuple[int, ...]]:
    """Keys/shapes of OpenCLIP's text tower (``open_clip.CLIP`` minus ``visual``)."""
    s, w = _Shapes(), t["width"]
    s["token_embedding.weight"] = (t["vocab"], w)
    s["positional_embedding"] = (t["context"], w)
    for i in range(t["layers"]):
        b = f"transformer.resblocks.{i}"
        s.norm(f"{b}.ln_1", w)
        s[f"{b}.attn.in_proj_weight"] = (3 * w, w)
        s[f"{b}.attn.in_proj_bias"] = (3 * w,)
        s.linear(f"{b}.attn.out_proj", w, w)
        s.norm(f"{b}.ln_2", w)
        s.linear(f"{b}.mlp.c_fc", w, 4 * w)
        s.linear(f"{b}.mlp.c_proj", 4 * w, w)
    s.norm("ln_final", w)
    s["text_projection"] = (w, t["embed"])
    s["logit_scale"] = ()
    return dict(s)


EXTRA_IGNORED = ("betas", "alphas_cumprod", "model_ema.decay", "model_ema.num_updates")


def ldm_shapes(config: dict, text: dict) -> dict[str, tuple[int, ...]]:
    p = config["model"]["params"]
    out = {U + k: v for k, v in ldm_unet_shapes(p["unet_config"]["params"]).items()}
    out.update({V + k: v for k, v in ldm_vae_shapes(p["first_stage_config"]["params"]).items()})
    out.update({T + k: v for k, v in openclip_text_shapes(text).items()})
    out.update({"betas": (1000,), "alphas_cumprod": (1000,)})
    out.update({"model_ema.decay": (), "model_ema.num_updates": ()})
    return out


def tiny_state() -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {
        k: torch.randn(shape, generator=gen) * 0.2
        for k, shape in ldm_shapes(TINY_LDM_CONFIG, TINY_TEXT).items()
    }


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These models are tiny: intra-op threads only add overhead (badly so on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def state() -> dict[str, Tensor]:
    return tiny_state()


@pytest.fixture(scope="module")
def converted(state) -> ConvertedMVDream:
    return convert_mvdream_state_dict(state, TINY_LDM_CONFIG, image_size=LATENT)


def _strict(model: nn.Module, sd: dict[str, Tensor]) -> nn.Module:
    check_state_dict(model.state_dict(), sd, "test")
    model.load_state_dict(sd, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def models(converted):
    return (
        _strict(UNet2DConditionModel(**converted.unet_config), converted.unet),
        _strict(AutoencoderKL(**converted.vae_config), converted.vae),
        _strict(CLIPTextModel(CLIPTextConfig(**converted.text_config)), converted.text),
    )


# ------------------------------------------------------------------------------------ 1. mapping
def test_every_key_lands_and_values_are_placed(state, converted, models) -> None:
    unet, vae, text = models
    w = TINY_TEXT["width"]
    dropped = {k for k in state if k.startswith(f"{T}transformer.resblocks.2.")}
    assert set(converted.ignored) == dropped | {
        f"{T}text_projection",
        f"{T}logit_scale",
        *EXTRA_IGNORED,
    }
    n_converted = len(state) - len(converted.ignored)
    # in_proj_{weight,bias} each become three tensors; everything else maps one-to-one.
    n_in_proj = sum(1 for k in state if ".in_proj_" in k and k not in dropped)
    n_out = len(converted.unet) + len(converted.vae) + len(converted.text)
    assert n_out == n_converted + 2 * n_in_proj

    def same(ldm_key: str, tensor: Tensor) -> None:
        src = state[ldm_key]
        src = src[:, :, 0, 0] if src.ndim == 4 and tensor.ndim == 2 else src
        assert torch.equal(src, tensor.detach()), ldm_key

    same(U + "camera_embed.0.weight", unet.class_embedding.linear_1.weight)
    same(U + "camera_embed.0.bias", unet.class_embedding.linear_1.bias)
    same(U + "camera_embed.2.weight", unet.class_embedding.linear_2.weight)
    same(U + "time_embed.2.bias", unet.time_embedding.linear_2.bias)
    same(U + "input_blocks.0.0.weight", unet.conv_in.weight)
    same(U + "input_blocks.2.0.in_layers.2.weight", unet.down_blocks[0].resnets[1].conv1.weight)
    same(
        U + "input_blocks.4.0.skip_connection.weight",
        unet.down_blocks[1].resnets[0].conv_shortcut.weight,
    )
    same(U + "input_blocks.3.0.op.weight", unet.down_blocks[0].downsamplers[0].conv.weight)
    attn = unet.down_blocks[1].attentions[1]
    same(U + "input_blocks.5.1.proj_in.weight", attn.proj_in.weight)
    same(
        U + "input_blocks.5.1.transformer_blocks.0.attn1.to_q.weight",
        attn.transformer_blocks[0].attn1.to_q.weight,
    )
    same(
        U + "input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight",
        attn.transformer_blocks[0].attn2.to_k.weight,
    )
    same(
        U + "input_blocks.5.1.transformer_blocks.0.ff.net.0.proj.weight",
        attn.transformer_blocks[0].ff.net[0].proj.weight,
    )
    same(U + "middle_block.1.proj_out.weight", unet.mid_block.attentions[0].proj_out.weight)
    same(U + "middle_block.2.emb_layers.1.weight", unet.mid_block.resnets[1].time_emb_proj.weight)
    # Upsamplers: ``.1.conv`` on the attention-free level, ``.2.conv`` after a transformer.
    same(U + "output_blocks.2.1.conv.weight", unet.up_blocks[0].upsamplers[0].conv.weight)
    same(U + "output_blocks.5.2.conv.weight", unet.up_blocks[1].upsamplers[0].conv.weight)
    same(U + "output_blocks.8.1.norm.weight", unet.up_blocks[2].attentions[2].norm.weight)
    same(U + "out.2.weight", unet.conv_out.weight)

    same(V + "quant_conv.weight", vae.quant_conv.weight)
    same(V + "post_quant_conv.bias", vae.post_quant_conv.bias)
    same(
        V + "encoder.down.1.block.0.nin_shortcut.weight",
        vae.encoder.down_blocks[1].resnets[0].conv_shortcut.weight,
    )
    same(V + "encoder.mid.attn_1.q.weight", vae.encoder.mid_block.attentions[0].to_q.weight)
    same(
        V + "decoder.mid.attn_1.proj_out.weight",
        vae.decoder.mid_block.attentions[0].to_out[0].weight,
    )
    # LDM's decoder.up is indexed bottom-up, diffusers' up_blocks top-down.
    same(
        V + "decoder.up.1.upsample.conv.weight", vae.decoder.up_blocks[0].upsamplers[0].conv.weight
    )
    same(V + "decoder.up.0.block.1.conv2.weight", vae.decoder.up_blocks[1].resnets[1].conv2.weight)

    layer = getattr(text, "text_model", text).encoder.layers[1]  # transformers 4.x / 5.x
    in_w = state[f"{T}transformer.resblocks.1.attn.in_proj_weight"]
    in_b = state[f"{T}transformer.resblocks.1.attn.in_proj_bias"]
    assert torch.equal(layer.self_attn.q_proj.weight, in_w[:w])
    assert torch.equal(layer.self_attn.k_proj.weight, in_w[w : 2 * w])
    assert torch.equal(layer.self_attn.v_proj.weight, in_w[2 * w :])
    assert torch.equal(layer.self_attn.v_proj.bias, in_b[2 * w :])
    same(f"{T}transformer.resblocks.1.mlp.c_fc.weight", layer.mlp.fc1.weight)
    same(f"{T}token_embedding.weight", text.get_input_embeddings().weight)
    sd = {k.removeprefix("text_model."): v for k, v in text.state_dict().items()}
    same(f"{T}ln_final.weight", sd["final_layer_norm.weight"])
    same(f"{T}positional_embedding", sd["embeddings.position_embedding.weight"])
    assert converted.text_config["num_hidden_layers"] == TINY_TEXT["layers"] - 1


# ------------------------------------------------------------------------------------ 2. errors
@pytest.mark.parametrize(
    "extra", [U + "extra_layer.weight", V + "loss.logvar", T + "unknown", "stray_buffer"]
)
def test_leftover_key_is_an_error(state, extra) -> None:
    bad = dict(state, **{extra: torch.zeros(2)})
    with pytest.raises(CheckpointMismatchError, match=extra.replace(".", r"\.")) as err:
        convert_mvdream_state_dict(bad, TINY_LDM_CONFIG, image_size=LATENT)
    assert err.value.unexpected == (extra,)


def test_missing_and_misshaped_keys_are_errors(state) -> None:
    missing = dict(state)
    del missing[U + "input_blocks.1.0.in_layers.2.weight"]
    with pytest.raises(CheckpointMismatchError) as err:
        convert_mvdream_state_dict(missing, TINY_LDM_CONFIG, image_size=LATENT)
    assert err.value.missing == ("down_blocks.0.resnets.0.conv1.weight",)

    no_camera = {k: v for k, v in state.items() if "camera_embed.2" not in k}
    with pytest.raises(CheckpointMismatchError, match="class_embedding.linear_2.weight"):
        convert_mvdream_state_dict(no_camera, TINY_LDM_CONFIG, image_size=LATENT)

    key = U + "input_blocks.4.1.proj_in.weight"
    misshaped = dict(state, **{key: torch.zeros(64, 60)})
    with pytest.raises(CheckpointMismatchError, match=key.replace(".", r"\.")) as err:
        convert_mvdream_state_dict(misshaped, TINY_LDM_CONFIG, image_size=LATENT)
    assert err.value.mismatched[0].startswith("down_blocks.1.attentions.0.proj_in.weight")

    camera = dict(state, **{U + "camera_embed.0.weight": torch.zeros(128, 12)})
    with pytest.raises(CheckpointMismatchError, match="camera_embed.0.weight"):
        convert_mvdream_state_dict(camera, TINY_LDM_CONFIG, image_size=LATENT)

    with pytest.raises(CheckpointMismatchError, match="no model.diffusion_model"):
        convert_mvdream_state_dict({"betas": torch.zeros(3)}, TINY_LDM_CONFIG)
    with pytest.raises(CheckpointFormatError, match="not tensors"):
        convert_mvdream_state_dict(dict(state, step=3), TINY_LDM_CONFIG)


# ------------------------------------------------------------------------------------ 3. running
def test_unet_runs_on_views_and_cameras_matter(state, models) -> None:
    unet = models[0]
    bv = 8  # 2 prompts x 4 views
    # One forward: the second prompt repeats the first one's latents, timesteps and text with
    # other cameras, so (the stock UNet treating samples independently) any difference between
    # the halves is the cameras' doing.
    latents = torch.randn(bv // 2, 4, LATENT, LATENT).repeat(2, 1, 1, 1)
    t = torch.randint(0, 1000, (bv // 2,)).repeat(2)
    text = torch.randn(bv // 2, 5, 32).repeat(2, 1, 1)
    cams = torch.randn(bv, 16)
    with torch.no_grad():
        out = unet(latents, t, encoder_hidden_states=text, class_labels=cams).sample
        same_cams = unet(latents[:1], t[:1], encoder_hidden_states=text[:1], class_labels=cams[:1])
        mlp = unet.class_embedding(cams)
    assert out.shape == (bv, 4, LATENT, LATENT)
    assert torch.isfinite(out).all()
    assert (out[:4] - out[4:]).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    torch.testing.assert_close(same_cams.sample, out[:1], atol=1e-5, rtol=1e-4)
    # The projection class embedding is MVDream's camera MLP: Linear, SiLU, Linear.
    ref = nn.functional.linear(
        cams, state[U + "camera_embed.0.weight"], state[U + "camera_embed.0.bias"]
    )
    ref = nn.functional.linear(
        nn.functional.silu(ref),
        state[U + "camera_embed.2.weight"],
        state[U + "camera_embed.2.bias"],
    )
    torch.testing.assert_close(mlp, ref)


def test_text_encoder_is_openclip_penultimate(state, models) -> None:
    """CLIPTextModel's last_hidden_state == MVDream's FrozenOpenCLIPEmbedder(layer=penultimate)."""
    w, n = TINY_TEXT["width"], TINY_TEXT["context"]
    ids = torch.randint(0, TINY_TEXT["vocab"], (2, n))
    x = state[f"{T}token_embedding.weight"][ids] + state[f"{T}positional_embedding"]
    mask = torch.full((n, n), float("-inf")).triu(1)  # causal

    def heads(z: Tensor) -> Tensor:  # (B, N, W) -> (B, H, N, W/H)
        return z.unflatten(-1, (TEXT_HEADS, -1)).transpose(1, 2)

    for i in range(TINY_TEXT["layers"] - 1):  # penultimate: the last resblock never runs
        blk = {k.split(f"resblocks.{i}.")[1]: v for k, v in state.items() if f"resblocks.{i}." in k}
        g = blk.__getitem__
        h = nn.functional.layer_norm(x, (w,), g("ln_1.weight"), g("ln_1.bias"))
        qkv = nn.functional.linear(h, g("attn.in_proj_weight"), g("attn.in_proj_bias"))
        q, k, v = qkv.chunk(3, -1)
        a = (heads(q) @ heads(k).transpose(-1, -2)) / math.sqrt(w // TEXT_HEADS) + mask
        a = (a.softmax(-1) @ heads(v)).transpose(1, 2).flatten(2)
        x = x + nn.functional.linear(a, g("attn.out_proj.weight"), g("attn.out_proj.bias"))
        h = nn.functional.layer_norm(x, (w,), g("ln_2.weight"), g("ln_2.bias"))
        h = nn.functional.gelu(nn.functional.linear(h, g("mlp.c_fc.weight"), g("mlp.c_fc.bias")))
        x = x + nn.functional.linear(h, g("mlp.c_proj.weight"), g("mlp.c_proj.bias"))
    ref = nn.functional.layer_norm(
        x, (w,), state[f"{T}ln_final.weight"], state[f"{T}ln_final.bias"]
    )
    with torch.no_grad():
        got = models[2](input_ids=ids).last_hidden_state
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------ 4. files
def _assert_same_models(a, b) -> None:
    for ma, mb in zip(a, b, strict=True):
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


def test_file_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_mvdream_checkpoint(tmp_path / "nowhere.pt")
    with pytest.raises(FileNotFoundError, match="diffusers-format MVDream"):
        load_mvdream_diffusers(tmp_path / "no_port")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointFormatError, match="list.pt"):
        load_mvdream_checkpoint(tmp_path / "list.pt")
    torch.save({"a": {"b": torch.zeros(1)}}, tmp_path / "nested.pt")
    with pytest.raises(CheckpointFormatError, match="nested.pt"):
        load_mvdream_checkpoint(tmp_path / "nested.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointFormatError, match="junk.pt"):
        load_mvdream_checkpoint(tmp_path / "junk.pt")


def test_load_checkpoint_round_trip(tmp_path, state, models) -> None:
    path = tmp_path / "tiny-4view.pt"
    torch.save({"state_dict": state}, path)  # the LDM training wrapper is unwrapped
    loaded = load_mvdream_checkpoint(path, original_config=TINY_LDM_CONFIG, image_size=LATENT)
    assert isinstance(loaded[0], UNet2DConditionModel) and not loaded[0].training
    assert loaded[0].config.class_embed_type == "projection"
    _assert_same_models(loaded, models)

    half = load_mvdream_checkpoint(
        path, dtype=torch.bfloat16, original_config=TINY_LDM_CONFIG, image_size=LATENT
    )
    assert {p.dtype for m in half for p in m.parameters()} == {torch.bfloat16}
    assert torch.equal(half[0].conv_in.weight, models[0].conv_in.weight.to(torch.bfloat16))

    unet_only = {k: v for k, v in state.items() if k.startswith(U)}
    save_file(unet_only, tmp_path / "unet_only.safetensors")
    with pytest.raises(CheckpointMismatchError, match="first_stage_model"):
        load_mvdream_checkpoint(
            tmp_path / "unet_only.safetensors", original_config=TINY_LDM_CONFIG, image_size=LATENT
        )


def _write_port(root, state, converted, models) -> None:
    """A tiny ashawkey/mvdream-sd2.1-diffusers: MultiViewUNetModel folder + stock vae/text."""
    (root / "unet").mkdir(parents=True)
    unet_params = dict(TINY_LDM_CONFIG["model"]["params"]["unet_config"]["params"])
    for k in ("legacy", "use_linear_in_transformer", "use_spatial_transformer"):
        unet_params.pop(k)  # as convert_mvdream_to_diffusers.py does
    config = {"_class_name": "MultiViewUNetModel", "_diffusers_version": "0.25.0", **unet_params}
    (root / "unet" / "config.json").write_text(json.dumps(config))
    weights = {k.removeprefix(U): v.contiguous() for k, v in state.items() if k.startswith(U)}
    save_file(weights, root / "unet" / "diffusion_pytorch_model.safetensors")
    models[1].save_pretrained(root / "vae")
    models[2].save_pretrained(root / "text_encoder")


def test_load_diffusers_port(tmp_path, state, converted, models) -> None:
    root = tmp_path / "mvdream-sd2.1-diffusers"
    _write_port(root, state, converted, models)
    loaded = load_mvdream_diffusers(root)
    _assert_same_models(loaded, models)
    assert loaded[0].config.sample_size == LATENT

    # An older transformers' text_encoder file: ``text_model.`` prefix and saved position_ids.
    text = {f"text_model.{k.removeprefix('text_model.')}": v for k, v in converted.text.items()}
    text["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    for f in (root / "text_encoder").glob("*.safetensors"):
        f.unlink()
    save_file(
        {k: v.contiguous() for k, v in text.items()}, root / "text_encoder" / "model.safetensors"
    )
    _assert_same_models(load_mvdream_diffusers(root, dtype=torch.float32)[2:], models[2:])

    # The port's UNet keeps the strict accounting: a stray weight is refused.
    weights = {k.removeprefix(U): v for k, v in state.items() if k.startswith(U)}
    weights["stray.weight"] = torch.zeros(1)
    save_file(weights, root / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointMismatchError, match="stray.weight"):
        load_mvdream_diffusers(root)


# ------------------------------------------------------------------------------------ 5. full size
def test_full_size_sd21_layout_on_meta() -> None:
    before = copy.deepcopy(SD21_MVDREAM_LDM_CONFIG)
    config = mvdream_unet_config(SD21_MVDREAM_LDM_CONFIG)
    assert config["block_out_channels"] == [320, 640, 1280, 1280]
    assert config["attention_head_dim"] == [5, 10, 20, 20]  # 64-channel heads
    assert config["down_block_types"][-1] == "DownBlock2D"
    assert config["cross_attention_dim"] == 1024 and config["use_linear_projection"]
    assert config["class_embed_type"] == "projection"
    assert config["projection_class_embeddings_input_dim"] == 16
    assert config["sample_size"] == 32 and config["layers_per_block"] == 2

    shapes = ldm_shapes(SD21_MVDREAM_LDM_CONFIG, FULL_TEXT)
    full = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    conv = convert_mvdream_state_dict(full, SD21_MVDREAM_LDM_CONFIG)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
        vae = AutoencoderKL(**conv.vae_config)
        text = CLIPTextModel(CLIPTextConfig(**conv.text_config))
    for model, sd in ((unet, conv.unet), (vae, conv.vae), (text, conv.text)):
        ref = model.state_dict()
        assert sd.keys() == ref.keys()
        assert all(sd[k].shape == ref[k].shape for k in ref)
    unet_ldm = sum(math.prod(s) for k, s in shapes.items() if k.startswith(U))
    assert sum(p.numel() for p in unet.parameters()) == unet_ldm
    assert 865e6 < unet_ldm < 870e6  # SD-2.1's 865.9M + the 1.66M camera MLP
    assert conv.unet_config == config
    assert conv.vae_config["block_out_channels"] == [128, 256, 512, 512]
    assert conv.vae_config["sample_size"] == 256 and conv.vae_config["scaling_factor"] == 0.18215
    tc = conv.text_config
    assert (tc["num_hidden_layers"], tc["num_attention_heads"], tc["hidden_size"]) == (23, 16, 1024)
    assert tc["intermediate_size"] == 4096 and tc["vocab_size"] == 49408
    assert sum(k.startswith(f"{T}transformer.resblocks.23.") for k in conv.ignored) == 12
    assert before == SD21_MVDREAM_LDM_CONFIG  # never mutated


def test_scheduler_config_is_ldm_linear_schedule() -> None:
    sched = DDPMScheduler(**mvdream_scheduler_config())
    ldm = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(sched.betas.double(), ldm, atol=1e-7, rtol=1e-5)
    assert sched.config.prediction_type == "epsilon"
