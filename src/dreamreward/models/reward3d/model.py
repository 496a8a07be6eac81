"""``Reward3D``: the official DreamReward reward model (BLIP backbone + a 3D head).

The call is the official one: ``model(images, input_ids, attention_mask) -> (N/4, 1)`` with
N = 4 x objects and 4 consecutive rows per object, in view order. ``score`` wraps it for renders in
[0, 1], prompts and view labels.

As a guide (DreamFL) the reward must run in eval mode (no dropout / stochastic depth), frozen, and
still differentiable with respect to the images: ``as_frozen_guide()`` does that and keeps the
model in eval mode even when a parent module (e.g. a LightningModule at the start of each epoch)
calls ``.train()``. Gradients flow to the images whenever autograd is enabled; parameters get none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor, nn

from dreamreward.models.reward3d.blip import BlipBackbone, BlipTextEncoder, VisionTransformer
from dreamreward.models.reward3d.heads import NUM_VIEWS, CrossViewFusion, Reward3DScorer
from dreamreward.models.reward3d.preprocess import (
    DEFAULT_MAX_LENGTH,
    clip_preprocess,
    tokenize_prompts,
    view_prompts,
)

HeadKind = Literal["scorer", "cross_view_fusion"]


class Reward3D(nn.Module):
    """Reward3D with the ImageReward BLIP backbone. Defaults are the official full-size model.

    Args:
        head: ``"scorer"`` (the paper's, ``Reward3D_Scorer.pt``) or ``"cross_view_fusion"``
            (``Reward3D_CrossViewFusion.pt``).
        image_size: input side S (224).
        patch_size: ViT patch side (16).
        vision_width, vision_depth, vision_heads: ViT sizes (1024, 24, 16 = ViT-L).
        vision_drop_path: stochastic depth of the last ViT block (0.1 in BLIP's ViT-L).
        text_width, text_depth, text_heads, text_intermediate_size: BERT sizes (768, 12, 12, 3072).
        vocab_size: 30524 (bert-base-uncased + ``[DEC]``, ``[ENC]``).
        max_position_embeddings: 512.
        pad_token_id: 0.
        text_dropout: hidden and attention dropout of the text encoder (0.1).
        mlp_hidden: first width of the ImageReward MLP (1024).
        fusion_heads: attention heads of the fusion head (12; must divide ``text_width``).
        gradient_checkpointing: recompute tower activations in backward (memory for time).
    """

    def __init__(
        self,
        head: HeadKind = "scorer",
        image_size: int = 224,
        patch_size: int = 16,
        vision_width: int = 1024,
        vision_depth: int = 24,
        vision_heads: int = 16,
        vision_drop_path: float = 0.1,
        text_width: int = 768,
        text_depth: int = 12,
        text_heads: int = 12,
        text_intermediate_size: int = 3072,
        vocab_size: int = 30524,
        max_position_embeddings: int = 512,
        pad_token_id: int = 0,
        text_dropout: float = 0.1,
        mlp_hidden: int = 1024,
        fusion_heads: int = 12,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if head not in ("scorer", "cross_view_fusion"):
            raise ValueError(f"head must be 'scorer' or 'cross_view_fusion', got {head!r}")
        self.head_kind: HeadKind = head
        self.image_size = image_size
        self.backbone = BlipBackbone(
            VisionTransformer(
                image_size=image_size,
                patch_size=patch_size,
                width=vision_width,
                depth=vision_depth,
                heads=vision_heads,
                drop_path_rate=vision_drop_path,
            ),
            BlipTextEncoder(
                vocab_size=vocab_size,
                width=text_width,
                depth=text_depth,
                heads=text_heads,
                intermediate_size=text_intermediate_size,
                vision_width=vision_width,
                max_position_embeddings=max_position_embeddings,
                pad_token_id=pad_token_id,
                hidden_dropout=text_dropout,
                attention_dropout=text_dropout,
            ),
        )
        self.backbone.set_gradient_checkpointing(gradient_checkpointing)
        self.head: Reward3DScorer | CrossViewFusion
        if head == "scorer":
            self.head = Reward3DScorer(text_width, mlp_hidden)
        else:
            self.head = CrossViewFusion(text_width, mlp_hidden, fusion_heads)
        self._frozen_guide = False

    # ------------------------------------------------------------------------------ the call
    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The official call.

        Args:
            images: (N, 3, S, S) CLIP-normalised views (``clip_preprocess``), N = 4 x objects,
                4 consecutive rows per object in view order.
            input_ids: (N, L) token ids of the view prompts (L = 100 officially).
            attention_mask: (N, L) 1 for tokens, 0 for padding.

        Returns:
            (N/4, 1) normalised rewards, one per object.
        """
        n = images.shape[0] if images.ndim else 0
        if n == 0 or n % NUM_VIEWS:
            raise ValueError(
                f"Reward3D scores whole {NUM_VIEWS}-view assets; got N={n} images, which is not a "
                f"multiple of {NUM_VIEWS} (pass {NUM_VIEWS} consecutive views per object)"
            )
        if input_ids.shape[0] != n or attention_mask.shape[0] != n:
            raise ValueError(
                f"need one prompt per view: {n} images, {input_ids.shape[0]} input_ids rows, "
                f"{attention_mask.shape[0]} attention_mask rows"
            )
        return self.head(self.backbone(images, input_ids, attention_mask))

    # -------------------------------------------------------------------------- convenience
    def preprocess(self, renders: Tensor, check_range: bool = True) -> Tensor:
        """(M, 3, H, W) or (M, H, W, 3) in [0, 1] -> (M, 3, S, S) normalised (differentiable)."""
        return clip_preprocess(renders, self.image_size, check_range=check_range)

    def score(
        self,
        renders: Tensor,
        prompts: Sequence[str],
        view_labels: Sequence[str] | Sequence[Sequence[str]],
        tokenizer: Any,
        max_length: int = DEFAULT_MAX_LENGTH,
        check_range: bool = True,
    ) -> Tensor:
        """Score B assets from their 4 renders each.

        Args:
            renders: (B, 4, H, W, 3) or (B, 4, 3, H, W) in [0, 1]; view order as in ``view_labels``.
            prompts: B prompts.
            view_labels: 4 labels shared by all assets (e.g. ``("front", "side", "back", "side")``)
                or B lists of 4 (from ``dreamreward.render.cameras.view_labels``).
            tokenizer: BLIP's BERT tokenizer (Hugging Face call protocol).
            max_length: token length of every view prompt (100; longer prompts are truncated with
                a warning).

        Returns:
            (B,) rewards, differentiable w.r.t. ``renders`` when autograd is enabled.
        """
        if renders.ndim != 5 or renders.shape[1] != NUM_VIEWS:
            raise ValueError(
                f"expected renders of shape (B, {NUM_VIEWS}, H, W, 3) or (B, {NUM_VIEWS}, 3, H, "
                f"W), got {tuple(renders.shape)}: Reward3D needs exactly {NUM_VIEWS} views per "
                "asset"
            )
        b = renders.shape[0]
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if len(prompts) != b:
            raise ValueError(f"{len(prompts)} prompts for {b} assets")
        if len(view_labels) and isinstance(view_labels[0], str):
            per_object = [list(view_labels)] * b
        else:
            per_object = [list(labels) for labels in view_labels]
        if len(per_object) != b or any(len(labels) != NUM_VIEWS for labels in per_object):
            raise ValueError(
                f"view_labels must be {NUM_VIEWS} labels or {b} lists of {NUM_VIEWS}, "
                f"got {view_labels}"
            )
        texts = [
            text
            for prompt, labels in zip(prompts, per_object, strict=True)
            for text in view_prompts(prompt, labels)
        ]
        images = self.preprocess(renders.flatten(0, 1), check_range=check_range)
        input_ids, attention_mask = tokenize_prompts(tokenizer, texts, max_length)
        device = images.device
        return self(images, input_ids.to(device), attention_mask.to(device)).squeeze(-1)

    # ------------------------------------------------------------------------------ guiding
    def as_frozen_guide(self) -> Reward3D:
        """Eval mode, no parameter gradients, pinned: later ``.train()`` calls keep eval mode.

        Returns ``self``. Gradients still flow to the input images (DreamFL's reward term).
        """
        self._frozen_guide = True
        self.requires_grad_(False)
        return self.train(False)

    @property
    def is_frozen_guide(self) -> bool:
        return self._frozen_guide

    def train(self, mode: bool = True) -> Reward3D:
        # A frozen guide must never run dropout: the official DreamFL left it in train mode, and
        # Lightning re-enables train mode on every submodule at the start of each epoch.
        return super().train(mode and not self._frozen_guide)

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def extra_repr(self) -> str:
        return f"head={self.head_kind!r}, image_size={self.image_size}"
