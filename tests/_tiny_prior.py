"""A tiny multi-view prior for the guidance, DreamFL and prior tests (random weights, 8 px)."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from dreamreward.models.mvdiffusion.prior import MultiViewPrior, pixel_scheduler_config
from dreamreward.models.mvdiffusion.text import MiniLMPromptEncoder, PromptEncoder, PromptTokens
from dreamreward.models.mvdiffusion.unet import MultiViewUNet, small_unet_config


def tiny_unet(num_views: int = 4, cross: int = 32, seed: int = 0) -> MultiViewUNet:
    config = small_unet_config(
        image_size=8,
        block_out_channels=(16, 32),
        attention_head_dim=8,
        cross_attention_dim=cross,
        norm_num_groups=8,
    )
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**config)
    # diffusers zero-initialises conv_out: re-randomise every tensor or the tests prove nothing
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.2)
    return MultiViewUNet(unet, num_views)


class FixedEncoder(PromptEncoder):
    """A deterministic hash-free toy encoder: token features from the characters."""

    def __init__(self, width: int = 32, max_length: int = 5) -> None:
        super().__init__()
        self.width, self.max_length = width, max_length
        g = torch.Generator().manual_seed(0)
        self.table = torch.nn.Parameter(torch.randn(128, width, generator=g))
        self.calls = 0

    def _encode(self, prompts: list[str]) -> PromptTokens:
        self.calls += 1
        ids = torch.zeros(len(prompts), self.max_length, dtype=torch.long)
        for i, p in enumerate(prompts):
            codes = [ord(c) % 128 for c in p[: self.max_length]]
            ids[i, : len(codes)] = torch.tensor(codes, dtype=torch.long)
        return PromptTokens(self.table[ids], None)


def tiny_prior(num_views: int = 4) -> MultiViewPrior:
    return MultiViewPrior(
        tiny_unet(num_views), FixedEncoder(), pixel_scheduler_config(), image_size=8
    )


def saved_minilm_prior(tmp_path):
    enc = MiniLMPromptEncoder(max_length=8)
    spec = {
        "class_path": "dreamreward.models.mvdiffusion.text.MiniLMPromptEncoder",
        "init_args": {"max_length": 8},
    }
    prior = MultiViewPrior(
        tiny_unet(cross=384), enc, pixel_scheduler_config(), image_size=8, text_encoder_spec=spec
    )
    return prior, prior.save_pretrained(tmp_path / "prior")
