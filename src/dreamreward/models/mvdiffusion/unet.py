"""The multi-view denoiser: a stock ``diffusers.UNet2DConditionModel`` conditioned on cameras.

MVDream maps exactly onto the stock UNet (DESIGN §5): the camera MLP is the UNet's projection
class embedding (``class_embed_type="projection"``, 16 inputs: the flattened normalised 4x4
camera-to-world), fed as ``class_labels`` and added to the time embedding; the multi-view
self-attention is an attention processor on ``attn1`` (:mod:`.attention`). So the full-scale
MVDream weights and this project's small pixel-space prior run through the same code.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel
from torch import Tensor, nn

from dreamreward.models.mvdiffusion.attention import (
    install_multiview_attention,
    multiview_num_views,
)

CAMERA_DIM = 16


def small_unet_config(
    image_size: int = 32,
    in_channels: int = 3,
    block_out_channels: tuple[int, ...] = (64, 128, 128),
    layers_per_block: int = 1,
    attention_head_dim: int = 32,
    cross_attention_dim: int = 384,
    norm_num_groups: int = 16,
) -> dict[str, Any]:
    """Config of a small camera-conditioned UNet: the first level is convolutional only, every
    other level has a transformer block (self-, cross-attention, FFN), as in SD at 1/10 size.

    Args:
        image_size: side of the (pixel or latent) input.
        in_channels: 3 for pixel space, 4 for SD latents.
        block_out_channels: channels per level; the input is downsampled len-1 times.
        layers_per_block: ResNet (+ transformer) layers per level.
        attention_head_dim: channels per head.
        cross_attention_dim: width of the text tokens (MiniLM: 384).
        norm_num_groups: GroupNorm groups (must divide every level's channels).
    """
    if image_size % (2 ** (len(block_out_channels) - 1)):
        raise ValueError(
            f"image_size {image_size} is not divisible by 2^{len(block_out_channels) - 1} "
            f"(block_out_channels {block_out_channels})"
        )
    for c in block_out_channels:
        if c % norm_num_groups or c % attention_head_dim:
            raise ValueError(
                f"block_out_channels {block_out_channels}: {c} is not divisible by "
                f"norm_num_groups {norm_num_groups} and attention_head_dim {attention_head_dim}"
            )
    levels = len(block_out_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1)
    up = ("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",)
    return dict(
        sample_size=image_size,
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        # heads = channels / head_dim at every level (diffusers names the head count this way)
        attention_head_dim=tuple(c // attention_head_dim for c in block_out_channels),
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=norm_num_groups,
        use_linear_projection=True,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=CAMERA_DIM,
    )


def check_camera_unet(unet: UNet2DConditionModel) -> None:
    """Raise unless ``unet`` takes MVDream's 16-value camera as its projection class embedding."""
    cfg = unet.config
    if cfg.class_embed_type != "projection" or cfg.projection_class_embeddings_input_dim != 16:
        raise ValueError(
            "the UNet is not camera-conditioned: need class_embed_type='projection' and "
            f"projection_class_embeddings_input_dim=16, got {cfg.class_embed_type!r} / "
            f"{cfg.projection_class_embeddings_input_dim!r}"
        )


def flatten_cameras(cameras: Tensor, rows: int) -> Tensor:
    """Cameras as (rows, 16): accepts (rows, 16) embeddings or (rows, 4, 4) normalised c2w.

    Raises:
        ValueError: naming the expected and the given shape.
    """
    if cameras.ndim == 3 and cameras.shape[1:] == (4, 4):
        cameras = cameras.reshape(cameras.shape[0], CAMERA_DIM)
    if cameras.ndim != 2 or cameras.shape != (rows, CAMERA_DIM):
        raise ValueError(
            f"cameras must be ({rows}, 16) MVDream embeddings (mvdream_camera_embedding) or "
            f"({rows}, 4, 4) camera-to-world matrices, one per image; got {tuple(cameras.shape)}"
        )
    if not torch.isfinite(cameras).all():
        raise ValueError("cameras contain NaN or inf")
    return cameras


class MultiViewUNet(nn.Module):
    """A camera-conditioned UNet with multi-view self-attention over groups of ``num_views``.

    Args:
        unet: a stock ``UNet2DConditionModel`` with the projection class embedding of 16 inputs.
        num_views: views per object V; the multi-view processor is installed on ``attn1``.
    """

    def __init__(self, unet: UNet2DConditionModel, num_views: int = 4) -> None:
        super().__init__()
        check_camera_unet(unet)
        self.unet = unet
        self.num_views = num_views
        install_multiview_attention(unet, num_views)

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def sample_size(self) -> int:
        return int(self.unet.config.sample_size)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | int,
        encoder_hidden_states: Tensor,
        cameras: Tensor,
        encoder_attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Predict the noise (or v / x0, per the scheduler it was trained with).

        Args:
            sample: (B*V, C, H, W) noisy images or latents, object-major / view-minor.
            timestep: an int, (B,) one per object, or (B*V,) one per image.
            encoder_hidden_states: (B*V, L, D) text tokens (the prompt repeated per view).
            cameras: (B*V, 16) or (B*V, 4, 4) normalised camera-to-world per image.
            encoder_attention_mask: optional (B*V, L) 1 for real tokens, 0 for padding.

        Returns:
            (B*V, C, H, W).
        """
        if sample.ndim != 4:
            raise ValueError(f"sample must be (B*V, C, H, W), got {tuple(sample.shape)}")
        rows = sample.shape[0]
        v = self.num_views
        if rows % v:
            raise ValueError(
                f"a batch of {rows} images is not whole groups of {v} views "
                "(object-major: V consecutive images per object)"
            )
        if sample.shape[1] != self.in_channels:
            raise ValueError(
                f"sample has {sample.shape[1]} channels, the UNet takes {self.in_channels}"
            )
        if multiview_num_views(self.unet) != v:
            # a caller (e.g. diffusers' own set_attn_processor) replaced the processors
            install_multiview_attention(self.unet, v)
        timestep = torch.as_tensor(timestep, device=sample.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(rows)
        elif timestep.shape == (rows // v,) and rows != rows // v:
            timestep = timestep.repeat_interleave(v)
        elif timestep.shape != (rows,):
            raise ValueError(
                f"timestep must be a scalar, ({rows // v},) per object or ({rows},) per image; "
                f"got {tuple(timestep.shape)}"
            )
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != rows:
            raise ValueError(
                f"encoder_hidden_states must be ({rows}, L, D), "
                f"got {tuple(encoder_hidden_states.shape)}"
            )
        # inputs follow the UNet's dtype (an fp16 prior fed float32 renders or tokens)
        sample = sample.to(self.dtype)
        encoder_hidden_states = encoder_hidden_states.to(self.dtype)
        cams = flatten_cameras(cameras, rows).to(sample.device, self.dtype)
        return self.unet(
            sample,
            timestep,
            encoder_hidden_states=encoder_hidden_states,
            class_labels=cams,
            encoder_attention_mask=encoder_attention_mask,
            return_dict=False,
        )[0]
