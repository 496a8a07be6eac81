"""Tiny random-weight Reward3D instances shared by the Reward3D tests."""

from __future__ import annotations

import math

import torch
from torch import nn

from dreamreward.models.reward3d import BlipBackbone, Reward3D

TINY_BACKBONE = dict(
    image_size=32,
    patch_size=16,
    vision_width=48,  # differs from text_width so a swapped cross-attention shape would show
    vision_depth=2,
    vision_heads=2,
    text_width=32,
    text_depth=2,
    text_heads=2,
    text_intermediate_size=64,
    vocab_size=64,
    max_position_embeddings=40,
)
TINY_HEAD = dict(mlp_hidden=16, fusion_heads=4)


@torch.no_grad()
def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter a random, well-scaled value (LayerNorms near identity)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, nn.LayerNorm):
                base = 1.0 if name == "weight" else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.ndim >= 2 and isinstance(module, (nn.Linear, nn.Conv2d, nn.MultiheadAttention)):
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
            else:  # biases, embeddings, cls token, position table
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    return model


def tiny_model(head: str = "scorer") -> Reward3D:
    """A tiny official-architecture Reward3D at its default initialisation."""
    return Reward3D(BlipBackbone(**TINY_BACKBONE), head=head, **TINY_HEAD)


def tiny(head: str = "scorer", seed: int = 0) -> Reward3D:
    """A tiny Reward3D with re-randomised weights (the official init is nearly constant)."""
    return randomise(tiny_model(head), seed).eval()


def tiny_reward(vocab_dir: str, seed: int = 0) -> Reward3D:
    backbone = BlipBackbone(**TINY_BACKBONE, max_length=16, tokenizer_path=vocab_dir)
    return randomise(Reward3D(backbone, head="scorer", **TINY_HEAD), seed)
