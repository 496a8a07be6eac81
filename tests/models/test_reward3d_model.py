"""Reward3D model: preprocessing, BLIP towers (parity with transformers' BLIP), heads, the call.

Tiny random models only. Every tensor is re-randomised first: the official init gives nearly
constant rewards, so tests on it would prove nothing.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _reward3d_tiny import tiny, tiny_model
from dreamreward.models.reward3d import (
    CLIP_MEAN,
    CLIP_STD,
    CrossViewFusion,
    Reward3DScorer,
    clip_preprocess,
    tokenize_prompts,
    view_prompts,
)

HEADS = ["scorer", "cross_view_fusion"]


def inputs(objects: int = 2, length: int = 8, real: int = 5, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    n = 4 * objects
    images = torch.randn(n, 3, 32, 32, generator=gen)
    ids = torch.randint(5, 64, (n, length), generator=gen)
    ids[:, 0] = 2  # [CLS]
    mask = torch.zeros(n, length, dtype=torch.long)
    mask[:, :real] = 1
    ids[:, real:] = 0
    return images, ids, mask


# ------------------------------------------------------------------------------ preprocessing
def test_clip_preprocess_values_layouts_and_gradient():
    x = torch.full((2, 3, 16, 16), 0.5, requires_grad=True)
    out = clip_preprocess(x, image_size=32)
    assert out.shape == (2, 3, 32, 32)
    expected = (0.5 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out[0, :, 7, 9], expected)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    img = torch.rand(2, 3, 20, 20)
    torch.testing.assert_close(
        clip_preprocess(img.permute(0, 2, 3, 1), 16), clip_preprocess(img, 16)
    )
    wide = torch.rand(1, 3, 16, 32)  # shorter side resized to 8, centre crop of the long side
    assert clip_preprocess(wide, 8).shape == (1, 3, 8, 8)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.rand(3, 16, 16), "rank 3"),
        (torch.rand(1, 4, 16, 16), "3 colour channels"),
        (torch.rand(1, 3, 16, 16) * 255, r"\[0, 255\]"),
        (torch.rand(1, 3, 16, 16) * 2 - 1, r"\[-1, 1\]"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "float"),
    ],
)
def test_clip_preprocess_rejects_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        clip_preprocess(images, 16)


def test_view_prompts():
    labels = ["front", "side", "back", "overhead"]
    assert view_prompts("a red chair", labels) == [
        "a red chair, front view",
        "a red chair, side view",
        "a red chair, back view",
        "a red chair, overhead view",
    ]
    with pytest.raises(ValueError, match="non-empty prompt"):
        view_prompts("  ", labels)
    with pytest.raises(ValueError, match="unknown view labels"):
        view_prompts("a chair", ["top"])


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += ["a", "red", "chair", "blue", "car", ",", "front", "side", "back", "overhead", "view"]
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    # transformers 5: the direct constructor ignores vocab_file; from_pretrained(dir) reads it.
    return transformers.BertTokenizer.from_pretrained(str(folder))


def test_tokenize_prompts_pads_and_warns_on_truncation(tokenizer):
    ids, mask = tokenize_prompts(
        tokenizer, ["a red chair, front view"], max_length=12, pad_to_max_length=True
    )
    assert ids.shape == mask.shape == (1, 12) and ids.dtype == torch.long
    assert mask.sum() == 8 and ids[0, 0] == 2  # [CLS] a red chair , front view [SEP]
    with pytest.warns(UserWarning, match="truncated"):
        ids, _ = tokenize_prompts(tokenizer, ["a red chair " * 10], max_length=12)
    assert ids.shape == (1, 12)


# ---------------------------------------------------------------- towers vs transformers' BLIP
def test_towers_match_transformers_blip():
    """Independent reference: transformers' BLIP vision/text models with our weights."""
    pytest.importorskip("transformers")
    from transformers import BlipTextConfig, BlipVisionConfig
    from transformers.models.blip.modeling_blip import BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    model = tiny().double()
    vit, text = model.backbone.visual_encoder, model.backbone.text_encoder

    hf_vit = BlipVisionModel(
        BlipVisionConfig(
            hidden_size=48,
            intermediate_size=192,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
            layer_norm_eps=1e-6,
            hidden_act="gelu",
        )
    ).double()
    renames = [
        ("cls_token", "embeddings.class_embedding"),
        ("pos_embed", "embeddings.position_embedding"),
        ("patch_embed.proj", "embeddings.patch_embedding"),
        ("blocks.", "encoder.layers."),
        (".norm1", ".layer_norm1"),
        (".norm2", ".layer_norm2"),
        (".attn.qkv", ".self_attn.qkv"),
        (".attn.proj", ".self_attn.projection"),
        ("norm.", "post_layernorm."),
    ]
    converted = {}
    for key, value in vit.state_dict().items():
        for ours, theirs in renames:
            if key.startswith(ours) or (ours.startswith(".") and ours in key):
                key = key.replace(ours, theirs, 1)
        converted[key] = value
    hf_vit.load_state_dict(converted, strict=True)

    images, ids, mask = inputs()
    images = images.double()
    tokens = vit(images)
    torch.testing.assert_close(
        tokens, hf_vit(pixel_values=images).last_hidden_state, rtol=1e-10, atol=1e-10
    )

    hf_text = BlipTextModel(
        BlipTextConfig(
            vocab_size=64,
            hidden_size=32,
            encoder_hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=40,
            is_decoder=True,  # transformers builds cross-attention layers only for decoders
            layer_norm_eps=1e-12,
            hidden_act="gelu",
            pad_token_id=0,
            bos_token_id=2,
            sep_token_id=3,
            eos_token_id=3,
        ),
        add_pooling_layer=False,
    ).double()
    state = {k: v for k, v in text.state_dict().items() if k != "embeddings.position_ids"}
    missing, unexpected = hf_text.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"embeddings.position_ids"}
    hf_text.eval()
    ours = text(ids, mask, tokens)
    theirs = hf_text(
        input_ids=ids,
        attention_mask=mask,
        encoder_hidden_states=tokens,
        encoder_attention_mask=torch.ones(tokens.shape[:2], dtype=torch.long),
        is_decoder=False,  # bidirectional self-attention, as ImageReward calls it
    ).last_hidden_state
    # transformers masks with finfo.min, BLIP with -10000: both give masked keys exactly 0 weight.
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------- the model
def test_cross_attention_reads_vision_width():
    text = tiny_model().backbone.text_encoder
    layer = text.encoder.layer[0].crossattention.self
    assert layer.key.weight.shape == layer.value.weight.shape == (32, 48)
    assert layer.query.weight.shape == (32, 32)


@pytest.mark.parametrize("head", HEADS)
def test_output_shape_and_head_type(head):
    model = tiny(head)
    assert isinstance(model.head, Reward3DScorer if head == "scorer" else CrossViewFusion)
    with torch.no_grad():
        out = model(*inputs(objects=3))
    assert out.shape == (3, 1) and torch.isfinite(out).all()
    assert out.std() > 1e-3  # the randomised model does not give constant rewards


def test_view_order_matters_for_scorer_not_for_fusion():
    images, ids, mask = inputs(objects=2)
    order = torch.tensor([1, 0, 3, 2, 4, 5, 6, 7])  # swap views of object 0 only
    for head in HEADS:
        model = tiny(head)
        with torch.no_grad():
            a = model(images, ids, mask)
            b = model(images[order], ids[order], mask[order])
        torch.testing.assert_close(a[1], b[1])  # object 1 untouched
        if head == "scorer":  # each view has its own slice of fc1
            assert (a[0] - b[0]).abs().item() > 1e-4
        else:  # attention without view embedding + mean: permutation invariant
            torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", HEADS)
def test_padding_mask(head):
    model = tiny(head)
    images, ids, mask = inputs(real=5)
    with torch.no_grad():
        ref = model(images, ids, mask)
        other_pad = ids.clone()
        other_pad[:, 5:] = torch.randint(5, 64, other_pad[:, 5:].shape)
        torch.testing.assert_close(model(images, other_pad, mask), ref, rtol=0, atol=1e-6)
        other_real = ids.clone()
        other_real[:, 2] = (other_real[:, 2] + 7) % 64
        assert (model(images, other_real, mask) - ref).abs().max() > 1e-4
        unmasked = torch.ones_like(mask)
        assert (model(images, other_pad, unmasked) - ref).abs().max() > 1e-4


@pytest.mark.parametrize("head", HEADS)
def test_eval_deterministic_train_stochastic(head):
    model = tiny(head)
    batch = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(*batch), model(*batch), rtol=0, atol=0)
        model.train()
        assert (model(*batch) - model(*batch)).abs().max() > 1e-6


@pytest.mark.parametrize("head", HEADS)
def test_gradient_reaches_images(head):
    model = tiny(head)
    images, ids, mask = inputs()
    images.requires_grad_(True)
    model(images, ids, mask).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert images.grad.abs().sum() > 0


def test_n_not_multiple_of_four_raises():
    model = tiny()
    images, ids, mask = inputs()
    with pytest.raises(ValueError, match="whole 4-view assets; got N=7"):
        model(images[:7], ids[:7], mask[:7])
    with pytest.raises(ValueError, match="one prompt per view"):
        model(images, ids[:4], mask[:4])
    with pytest.raises(ValueError, match="built for 32x32"):
        model(torch.randn(4, 3, 48, 48), ids[:4], mask[:4])


def test_frozen_guide_score_differentiable_and_pinned_to_eval(tokenizer):
    model = tiny("scorer").as_frozen_guide()
    assert model.is_frozen_guide and not any(p.requires_grad for p in model.parameters())
    nn.Sequential(model).train()  # what a parent LightningModule does every epoch
    assert not any(m.training for m in model.modules())
    renders = torch.rand(2, 4, 24, 24, 3, requires_grad=True)
    labels = ["front", "side", "back", "side"]
    prompts = ["a red chair", "a blue car"]
    scores = model.score(renders, prompts, labels, tokenizer, max_length=12)
    assert scores.shape == (2,)
    scores.sum().backward()
    assert renders.grad is not None and renders.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    channels_first = renders.detach().permute(0, 1, 4, 2, 3)
    with torch.no_grad():
        again = model.score(channels_first, prompts, [labels, labels], tokenizer, max_length=12)
    torch.testing.assert_close(again, scores.detach())


def test_score_rejects_bad_input(tokenizer):
    model = tiny()
    labels = ["front", "side", "back", "side"]
    with pytest.raises(ValueError, match="exactly 4 views"):
        model.score(torch.rand(1, 3, 24, 24, 3), ["a chair"], labels, tokenizer)
    with pytest.raises(ValueError, match="non-empty prompt"):
        model.score(torch.rand(1, 4, 24, 24, 3), [""], labels, tokenizer)
    with pytest.raises(ValueError, match="1 prompts for 2 assets"):
        model.score(torch.rand(2, 4, 24, 24, 3), ["a chair"], labels, tokenizer)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.score(torch.rand(1, 4, 24, 24, 3) * 255, ["a chair"], labels, tokenizer)


def test_infinite_pixels_are_not_called_a_0_255_image() -> None:
    from dreamreward.models.reward3d.preprocess import check_unit_range

    views = torch.rand(4, 3, 8, 8)
    views[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="infinite values") as info:
        check_unit_range(views)
    assert "255" not in str(info.value)


def test_head_dropout_replaces_every_train_mode_rate_of_the_head() -> None:
    from _reward3d_tiny import TINY_BACKBONE, TINY_HEAD
    from dreamreward.models.reward3d import BlipBackbone, Reward3D

    for head in ("scorer", "cross_view_fusion"):
        official = Reward3D(BlipBackbone(**TINY_BACKBONE), head=head, **TINY_HEAD)
        rates = [m.p for m in official.head.modules() if isinstance(m, torch.nn.Dropout)]
        assert rates and max(rates) == pytest.approx(0.2)  # the official head
        quiet = Reward3D(BlipBackbone(**TINY_BACKBONE), head=head, head_dropout=0.0, **TINY_HEAD)
        assert all(
            m.p == 0.0 for m in quiet.head.modules() if isinstance(m, torch.nn.Dropout)
        ) and all(
            m.dropout == 0.0
            for m in quiet.head.modules()
            if isinstance(m, torch.nn.MultiheadAttention)
        )
        assert quiet.build_spec()["init_args"]["head_dropout"] == 0.0
        quiet.train()
        features = torch.randn(8, quiet.backbone.feature_dim)
        assert torch.equal(quiet.head(features), quiet.head(features))  # deterministic in training
    with pytest.raises(ValueError, match="head_dropout"):
        Reward3D(BlipBackbone(**TINY_BACKBONE), head_dropout=1.0, **TINY_HEAD)
