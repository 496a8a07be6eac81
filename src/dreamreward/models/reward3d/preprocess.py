"""Differentiable CLIP preprocessing of renders and Reward3D's view-dependent prompts.

The official pipeline works on PIL images: ``Resize(224, bicubic)`` of the shorter side,
``CenterCrop(224)``, ``ToTensor``, CLIP ``Normalize``. Here the same steps run on tensors so the
reward's gradient reaches the renderer: the resize is ``F.interpolate(mode="bicubic",
antialias=True)`` (PIL's bicubic, a = -0.5, with its kernel widened when downsampling), with no
uint8 rounding or clamping (both would stop or distort the gradient).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dreamreward.models.reward3d.view_labels import VIEW_LABELS

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MAX_LENGTH = 100
"""Reward3D tokenizes every view prompt to 100 tokens (padding to max_length)."""


def to_channels_first(images: Tensor) -> Tensor:
    """(N, 3, H, W) or (N, H, W, 3) -> (N, 3, H, W) (a view, no copy).

    A tensor that could be read both ways (``shape[1] == shape[-1] == 3``) is taken as
    channels-first.
    """
    if images.ndim != 4:
        raise ValueError(
            f"expected a batch of RGB images (N, 3, H, W) or (N, H, W, 3), got rank {images.ndim} "
            f"shape {tuple(images.shape)}"
        )
    if images.shape[1] == 3:
        return images
    if images.shape[-1] == 3:
        return images.permute(0, 3, 1, 2)
    raise ValueError(
        f"expected 3 colour channels in dim 1 or -1, got shape {tuple(images.shape)} "
        "(drop alpha / composite onto a background first)"
    )


def check_unit_range(images: Tensor, tolerance: float = 0.05) -> None:
    """Raise ValueError when values lie far outside [0, 1] (e.g. [0, 255] or [-1, 1] images).

    A small ``tolerance`` lets differentiable renderers overshoot slightly. Costs one device sync.
    """
    if not images.is_floating_point():
        raise ValueError(
            f"expected float images in [0, 1], got dtype {images.dtype} (convert uint8 with /255)"
        )
    lo, hi = torch.aminmax(images.detach())
    lo, hi = float(lo), float(hi)
    if lo != lo or hi != hi:  # NaN
        raise ValueError("images contain NaN")
    if math.isinf(lo) or math.isinf(hi):  # no scaling fixes these: a renderer that diverged
        raise ValueError(f"images contain infinite values (range [{lo}, {hi}])")
    if lo < -tolerance or hi > 1.0 + tolerance:
        hint = " (looks like [0, 255]: divide by 255)" if hi > 2.0 else ""
        hint = hint or (" (looks like [-1, 1]: map with (x + 1) / 2)" if lo < -0.5 else "")
        raise ValueError(f"images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]{hint}")


def clip_preprocess(
    images: Tensor,
    image_size: int = 224,
    check_range: bool = True,
    range_tolerance: float = 0.05,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> Tensor:
    """Renders in [0, 1] -> CLIP-normalised model input, differentiably.

    Args:
        images: (N, 3, H, W) or (N, H, W, 3) floats in [0, 1].
        image_size: output side S (224 for the official model).
        check_range: validate the [0, 1] range (one device sync); disable in hot loops once the
            renderer is known to be correct.
        range_tolerance: how far outside [0, 1] values may stray before it is an error.
        mean, std: per-channel normalisation (CLIP's by default; the CPU backbone's image tower
            uses ImageNet's).

    Returns:
        (N, 3, S, S): shorter side resized to S (bicubic, antialiased), centre-cropped to S x S,
        then ``(x - mean) / std`` per channel. Same dtype/device as the input.
    """
    x = to_channels_first(images)
    if check_range:
        check_unit_range(x, range_tolerance)
    elif not x.is_floating_point():
        raise ValueError(f"expected float images in [0, 1], got dtype {x.dtype}")
    h, w = x.shape[-2:]
    if (h, w) != (image_size, image_size):
        # Shorter side -> image_size, aspect kept (torchvision's Resize(int) rule), then crop.
        short, long = (h, w) if h <= w else (w, h)
        long_new = int(image_size * long / short)
        size = (image_size, long_new) if h <= w else (long_new, image_size)
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        top = int(round((x.shape[-2] - image_size) / 2.0))
        left = int(round((x.shape[-1] - image_size) / 2.0))
        x = x[..., top : top + image_size, left : left + image_size]
    return (x - x.new_tensor(mean).view(1, 3, 1, 1)) / x.new_tensor(std).view(1, 3, 1, 1)


def view_prompts(prompt: str, labels: Sequence[str]) -> list[str]:
    """One prompt per view: ``"{prompt}, {label} view"``, e.g. ``"a red chair, front view"``.

    Args:
        prompt: the asset's text prompt (non-empty).
        labels: view labels from ``dreamreward.models.reward3d.view_labels``
            (front / side / back / overhead), one per view.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"Reward3D needs a non-empty prompt, got {prompt!r}")
    bad = [label for label in labels if label not in VIEW_LABELS]
    if bad:
        raise ValueError(f"unknown view labels {bad}; expected one of {VIEW_LABELS}")
    return [f"{prompt}, {label} view" for label in labels]


def tokenize_prompts(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int = DEFAULT_MAX_LENGTH,
    pad_to_max_length: bool = False,
) -> tuple[Tensor, Tensor]:
    """Tokenize view prompts: truncate to ``max_length`` with a warning, pad.

    The official code pads every prompt to ``max_length``; padding only to the longest prompt of
    the batch gives the same features (padded keys get exactly zero attention weight and the
    feature is the [CLS] row) at a fraction of the text-encoder cost. ``pad_to_max_length``
    restores the official shapes.

    Args:
        tokenizer: a Hugging Face tokenizer (BLIP's bert-base-uncased + ``[DEC]``/``[ENC]``).
        texts: M strings.
        max_length: 100 for Reward3D.
        pad_to_max_length: pad to ``max_length`` instead of the longest prompt.

    Returns:
        input_ids (M, L) int64, attention_mask (M, L) int64, L <= max_length.
    """
    texts = list(texts)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
    too_long = [t for t, n in zip(texts, lengths, strict=True) if n > max_length]
    if too_long:
        warnings.warn(
            f"{len(too_long)} prompt(s) exceed {max_length} tokens and are truncated, e.g. "
            f"{too_long[0][:80]!r}",
            stacklevel=2,
        )
    enc = tokenizer(
        texts,
        padding="max_length" if pad_to_max_length else "longest",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return enc["input_ids"].long(), enc["attention_mask"].long()
