"""The multi-view diffusion prior: attention processor, camera UNet, text encoder, prior I/O."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from _tiny_prior import FixedEncoder, saved_minilm_prior, tiny_prior, tiny_unet
from dreamreward.models.mvdiffusion.attention import MultiViewAttnProcessor, multiview_num_views
from dreamreward.models.mvdiffusion.prior import (
    MultiViewPrior,
    load_prior,
    pixel_scheduler_config,
    shipped_prior_dir,
)
from dreamreward.models.mvdiffusion.text import MiniLMPromptEncoder
from dreamreward.models.mvdiffusion.unet import MultiViewUNet, small_unet_config
from dreamreward.models.weight_errors import CheckpointMismatchError


def inputs(objects: int = 2, views: int = 4, cross: int = 32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = objects * views
    return {
        "sample": torch.randn(n, 3, 8, 8, generator=g),
        "timestep": torch.randint(0, 1000, (objects,), generator=g),
        "encoder_hidden_states": torch.randn(n, 5, cross, generator=g),
        "cameras": torch.randn(n, 16, generator=g),
    }


# ------------------------------------------------------------------ attention processor
def test_processor_matches_attention_over_all_views() -> None:
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    x = torch.randn(2 * 3, 5, 16)  # 2 objects x 3 views, 5 tokens
    out = MultiViewAttnProcessor(3)(attn, x)
    # reference: plain softmax attention over the 15 tokens of each object
    grouped = x.reshape(2, 15, 16)
    q, k, v = attn.to_q(grouped), attn.to_k(grouped), attn.to_v(grouped)
    q, k, v = (t.reshape(2, 15, 2, 8).transpose(1, 2) for t in (q, k, v))
    weights = (q @ k.transpose(-1, -2) / 8**0.5).softmax(-1)
    ref = attn.to_out[0]((weights @ v).transpose(1, 2).reshape(2, 15, 16)).reshape(6, 5, 16)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_processor_rejects_partial_groups_and_cross_attention() -> None:
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    with pytest.raises(ValueError, match="not whole groups of 4 views"):
        MultiViewAttnProcessor(4)(attn, torch.randn(6, 5, 16))
    with pytest.raises(ValueError, match="self-attention"):
        MultiViewAttnProcessor(4)(attn, torch.randn(4, 5, 16), torch.randn(4, 3, 16))


def test_processors_only_on_self_attention() -> None:
    unet = tiny_unet()
    processors = unet.unet.attn_processors
    assert multiview_num_views(unet.unet) == 4
    for name, proc in processors.items():
        assert isinstance(proc, MultiViewAttnProcessor) == name.endswith("attn1.processor")


# ------------------------------------------------------------------ the camera UNet
def test_views_of_one_object_interact_objects_do_not() -> None:
    unet = tiny_unet().eval()
    x = inputs()
    with torch.no_grad():
        base = unet(**x)
        changed = dict(x, sample=x["sample"].clone())
        changed["sample"][1] += 1.0  # object 0, view 1
        out = unet(**changed)
    assert (out[0] - base[0]).abs().max() > 1e-4  # view 0 of object 0 sees view 1
    torch.testing.assert_close(out[4:], base[4:])  # object 1 is untouched


def test_single_view_unet_is_per_image() -> None:
    unet = tiny_unet(num_views=1).eval()
    x = inputs(objects=4, views=1)
    with torch.no_grad():
        base = unet(**x)
        x["sample"][1] += 1.0
        out = unet(**x)
    torch.testing.assert_close(out[0], base[0])


def test_camera_and_timestep_conditioning() -> None:
    unet = tiny_unet().eval()
    x = inputs()
    with torch.no_grad():
        base = unet(**x)
        assert (unet(**dict(x, cameras=x["cameras"] + 0.5)) - base).abs().max() > 1e-4
        # (B,) per object, (B*V,) per image and (B*V, 4, 4) cameras are the same call
        per_image = unet(**dict(x, timestep=x["timestep"].repeat_interleave(4)))
        as_matrix = unet(**dict(x, cameras=x["cameras"].reshape(8, 4, 4)))
    torch.testing.assert_close(per_image, base)
    torch.testing.assert_close(as_matrix, base)
    assert base.shape == (8, 3, 8, 8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sample": torch.randn(6, 3, 8, 8)}, "not whole groups of 4"),
        ({"cameras": torch.randn(8, 12)}, r"cameras must be \(8, 16\)"),
        ({"cameras": torch.full((8, 16), float("nan"))}, "NaN"),
        ({"timestep": torch.zeros(3, dtype=torch.long)}, "timestep must be"),
        ({"sample": torch.randn(8, 4, 8, 8)}, "4 channels"),
        ({"encoder_hidden_states": torch.randn(4, 5, 32)}, "encoder_hidden_states"),
    ],
)
def test_bad_unet_inputs(change: dict, message: str) -> None:
    unet = tiny_unet()
    with pytest.raises(ValueError, match=message):
        unet(**dict(inputs(), **change))


def test_unet_needs_camera_embedding() -> None:
    config = small_unet_config(image_size=8, block_out_channels=(16, 32), attention_head_dim=8)
    config.pop("class_embed_type")
    with pytest.raises(ValueError, match="not camera-conditioned"):
        MultiViewUNet(UNet2DConditionModel(**config))


def test_small_unet_config_errors() -> None:
    with pytest.raises(ValueError, match="not divisible by 2"):
        small_unet_config(image_size=30, block_out_channels=(16, 32, 64))
    with pytest.raises(ValueError, match="norm_num_groups"):
        small_unet_config(block_out_channels=(24, 48), norm_num_groups=16)


# ------------------------------------------------------------------ text encoders
def test_prompt_cache_and_views() -> None:
    enc = FixedEncoder()
    a = enc(["abc", "xyz", "abc"])
    assert a.embeddings.shape == (3, 5, 32) and enc.calls == 2  # once per distinct prompt
    enc(["xyz"])
    assert enc.calls == 2  # cached
    torch.testing.assert_close(a.embeddings[0], a.embeddings[2])
    assert a.repeat_views(4).embeddings.shape == (12, 5, 32)
    with pytest.raises(TypeError, match="list of prompts"):
        enc("abc")


def test_minilm_prompt_encoder_is_real_and_masked() -> None:
    enc = MiniLMPromptEncoder(max_length=12)
    out = enc(["a red cube", "a blue sphere next to a green cone", ""])
    assert out.embeddings.shape == (3, 12, 384) and out.mask is not None
    assert out.mask[0].sum() == 5  # [CLS] a red cube [SEP]
    assert out.embeddings[0, 5:].abs().max() == 0  # padding is inert
    red, blue = enc(["a red cube"]).embeddings, enc(["a blue cube"]).embeddings
    assert (red - blue).abs().max() > 0.1
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.model.training  # frozen towers stay in eval mode


def test_minilm_missing_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no MiniLM model"):
        MiniLMPromptEncoder(path=str(tmp_path))


# ------------------------------------------------------------------ the prior
def test_prior_pixel_roundtrip_and_noise() -> None:
    prior = tiny_prior()
    images = torch.rand(8, 3, 8, 8)
    x0 = prior.encode_images(images)
    assert x0.min() >= -1 and x0.max() <= 1
    torch.testing.assert_close(prior.decode(x0), images)
    noise, t = torch.randn_like(x0), torch.full((8,), 500)
    noisy = prior.add_noise(x0, noise, t)
    torch.testing.assert_close(prior.predict_x0(noisy, noise, t), x0, atol=1e-5, rtol=1e-5)
    # a v-prediction UNet output is turned into eps exactly
    v = prior.training_target(x0, noise, t)
    torch.testing.assert_close(prior.output_to_noise(v, noisy, t), noise, atol=1e-5, rtol=1e-5)
    # a 16-px render is resized to the UNet's 8 px
    assert prior.encode_images(torch.rand(4, 3, 16, 16)).shape == (4, 3, 8, 8)


def test_prior_guidance_is_the_cfg_combination() -> None:
    prior = tiny_prior().eval()
    x = inputs(objects=2)
    text, uncond = prior.encode_prompts(["ab", "cd"]), prior.encode_prompts(["", ""])
    with torch.no_grad():
        guided, cond = prior.predict_noise(
            x["sample"], x["timestep"], text, x["cameras"], uncond, guidance_scale=5.0
        )
        c, _ = prior.predict_noise(x["sample"], x["timestep"], text, x["cameras"])
        u, _ = prior.predict_noise(x["sample"], x["timestep"], uncond, x["cameras"])
    torch.testing.assert_close(cond, c, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(guided, u + 5.0 * (c - u), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="one per group of 4"):
        prior.predict_noise(x["sample"], x["timestep"], prior.encode_prompts(["ab"]), x["cameras"])
    with pytest.raises(ValueError, match="unconditional"):
        prior.predict_noise(x["sample"], x["timestep"], text, x["cameras"], guidance_scale=3.0)
    with pytest.raises(ValueError, match="uncond: 1 prompts for 8 images"):
        prior.predict_noise(
            x["sample"], x["timestep"], text, x["cameras"], prior.encode_prompts([""]), 3.0
        )


def test_fp16_prior_keeps_a_float32_schedule() -> None:
    prior = tiny_prior().to(torch.float16)
    assert prior.alphas_cumprod.dtype == torch.float32
    x0 = torch.rand(8, 3, 8, 8) * 2 - 1
    noise = torch.randn(8, 3, 8, 8)
    t = torch.tensor([0, 999]).repeat_interleave(4)
    noisy = prior.add_noise(x0.half(), noise.half(), t)
    # t = 0 still adds its (tiny) noise and t = T - 1 still gives a finite x0
    assert not torch.equal(noisy[:4].float(), x0[:4].half().float())
    assert torch.isfinite(prior.predict_x0(noisy, noise.half(), t)).all()
    # an fp16 UNet takes float32 renders and tokens
    with torch.no_grad():
        eps, _ = prior.predict_noise(
            prior.encode_images(torch.rand(8, 3, 8, 8)),
            torch.tensor([5, 7]),
            prior.encode_prompts(["ab", "cd"]),
            torch.randn(8, 4, 4),
            prior.encode_prompts(["", ""]),
            guidance_scale=2.0,
        )
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()  # follows the input


def test_prompt_features_do_not_depend_on_the_batch() -> None:
    enc = MiniLMPromptEncoder(max_length=12)
    alone = enc(["a small green ring"]).embeddings
    enc.clear_cache()
    batched = enc(["a large red cube on top of a blue sphere", "a small green ring"]).embeddings
    assert torch.equal(alone[0], batched[1])


def test_prior_sampling_is_seeded() -> None:
    prior = tiny_prior().eval()
    cams = torch.randn(8, 16)
    a = prior.sample(["ab", "cd"], cams, 3, generator=torch.Generator().manual_seed(0))
    b = prior.sample(["ab", "cd"], cams, 3, generator=torch.Generator().manual_seed(0))
    assert a.shape == (8, 3, 8, 8) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="non-empty prompts"):
        prior.sample([" "], cams[:4], 2)
    with pytest.raises(ValueError, match=r"cameras must be \(4, 16\)"):
        prior.sample(["ab"], cams, 2)
    # per-prompt generators: a prompt's sample does not depend on its batch-mates
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    pair = prior.sample(["ab", "cd"], cams, 3, generator=gens)
    single = prior.sample(["cd"], cams[4:], 3, generator=[torch.Generator().manual_seed(6)])
    # equal up to float rounding, which depends on the batch size in some BLAS kernels (one
    # thread on AMD EPYC: 1e-3 after 3 steps); a batch-mate's noise would differ by O(1)
    torch.testing.assert_close(pair[4:], single, atol=1e-2, rtol=0)


def test_prior_text_width_must_match() -> None:
    with pytest.raises(ValueError, match="cross-attends to 64"):
        MultiViewPrior(tiny_unet(cross=64), FixedEncoder(), pixel_scheduler_config())


def test_prior_save_load_roundtrip(tmp_path) -> None:
    prior, folder = saved_minilm_prior(tmp_path)
    loaded = load_prior(folder)
    assert loaded.num_views == 4 and loaded.image_size == 8
    assert not any(p.requires_grad for p in loaded.parameters())
    for (k, a), (_, b) in zip(
        prior.unet.state_dict().items(), loaded.unet.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=k)
    cams = torch.randn(4, 16)
    a = prior.eval().sample(["a cube"], cams, 2, generator=torch.Generator().manual_seed(1))
    b = loaded.sample(["a cube"], cams, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    # what the prior knows travels with it (None: open domain); the shipped one knows primitives
    assert loaded.prompt_domain is None
    prior.prompt_domain = "primitives"
    assert load_prior(prior.save_pretrained(tmp_path / "again")).prompt_domain == "primitives"
    assert json.loads((shipped_prior_dir() / "prior.json").read_text())["prompt_domain"] == (
        "primitives"
    )


def test_prior_load_errors(tmp_path) -> None:
    _, folder = saved_minilm_prior(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a saved multi-view prior"):
        load_prior(tmp_path / "nowhere")
    # weights that do not fit the config
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["block_out_channels"] = [16, 48]
    config["attention_head_dim"] = [2, 6]
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        load_prior(folder)
    # a text encoder class outside this package is refused
    _, folder = saved_minilm_prior(tmp_path / "b")
    meta = json.loads((folder / "prior.json").read_text())
    meta["text_encoder"]["class_path"] = "os.system"
    (folder / "prior.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not a dreamreward encoder"):
        load_prior(folder)
    (folder / "prior.json").write_text("{broken")
    with pytest.raises(CheckpointMismatchError, match="prior.json: not a prior description"):
        load_prior(folder)


def test_latent_prior_goes_through_the_vae() -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(  # 3 downsamplings: the SD factor of 8
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    config = small_unet_config(
        image_size=8,
        in_channels=4,
        block_out_channels=(16, 32),
        attention_head_dim=8,
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    unet = MultiViewUNet(UNet2DConditionModel(**config))
    prior = MultiViewPrior(unet, FixedEncoder(), pixel_scheduler_config(), vae=vae).eval()
    assert prior.is_latent and prior.image_size == 64
    assert not any(p.requires_grad for p in vae.parameters())
    images = torch.rand(4, 3, 32, 32, requires_grad=True)  # resized to 64 px for the VAE
    latents = prior.encode_images(images)
    assert latents.shape == (4, 4, 8, 8)
    latents.sum().backward()  # score distillation needs gradients through the encoder
    assert images.grad is not None and images.grad.abs().sum() > 0
    views = prior.sample(["ab"], torch.randn(4, 16), 2, generator=torch.Generator().manual_seed(0))
    assert views.shape == (4, 3, 64, 64) and views.min() >= 0 and views.max() <= 1


def test_mvdream_prior_needs_a_tokenizer_for_a_single_file(tmp_path) -> None:
    from dreamreward.models.mvdiffusion.prior import load_mvdream_prior

    with pytest.raises(FileNotFoundError, match="no MVDream weights"):
        load_mvdream_prior(tmp_path / "typo")
    ckpt = tmp_path / "sd-v2.1-base-4view.pt"
    ckpt.write_bytes(b"")
    with pytest.raises(ValueError, match="tokenizer_path"):
        load_mvdream_prior(ckpt)
