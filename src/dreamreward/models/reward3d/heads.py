"""Reward heads on top of per-view features: the ImageReward MLP and Reward3D's two 3D heads.

Input to every 3D head: (N, D) per-view features (the text [CLS] state of the BLIP backbone, D = 768
at full scale), N = 4 x objects, **4 consecutive rows per object in view order**. Output: (N/4, 1)
normalised rewards. Parameter names match the official checkpoints below a prefix that
``reward3d.checkpoint`` maps: ``mlp.layers.{0,2,4,6,7}``, ``Scorer.fc{1,2,3}``,
``cross_view_adapter.{self_attn, fusion_gate.0}``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NUM_VIEWS = 4
"""Reward3D scores whole assets seen from exactly 4 views (the scorer concatenates 4 x 128)."""

IMAGEREWARD_MEAN = 0.16717362830052426
IMAGEREWARD_STD = 1.0333394966054072
CROSS_VIEW_FUSION_STD = 5.0
"""The released fusion model divides by 5 instead of ImageReward's std (official constant)."""

_FEATURE_WIDTH = 128  # width of the MLP's second linear: the per-view feature of the scorer


def _check_views(features: Tensor) -> int:
    if features.ndim != 2:
        raise ValueError(f"expected per-view features of shape (N, D), got {tuple(features.shape)}")
    n = features.shape[0]
    if n % NUM_VIEWS:
        raise ValueError(
            f"Reward3D scores whole {NUM_VIEWS}-view assets; got N={n} rows, which is not a "
            f"multiple of {NUM_VIEWS} (pass {NUM_VIEWS} consecutive views per object)"
        )
    return n // NUM_VIEWS


class ImageRewardMLP(nn.Module):
    """ImageReward's head ``MLP(768)``: five linears, dropout between the first four, **no
    nonlinearity** (so it is one affine map in eval mode; the structure matters for the names, the
    128-d intermediate the scorer reads, and train-mode dropout).

    Linear D->hidden, Dropout .2, Linear ->128, Dropout .2, Linear ->64, Dropout .1, Linear ->16,
    Linear ->1, held in ``layers`` so parameters are ``layers.{0,2,4,6,7}`` as in the checkpoints.

    Args:
        input_size: feature width D (768 at full scale).
        hidden_size: width of the first linear (1024 at full scale; small in tiny test models).
    """

    def __init__(self, input_size: int = 768, hidden_size: int = 1024) -> None:
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, hidden_size),
            nn.Dropout(0.2),
            nn.Linear(hidden_size, _FEATURE_WIDTH),
            nn.Dropout(0.2),
            nn.Linear(_FEATURE_WIDTH, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # ImageReward's init: N(0, 1/(D+1)) weights, zero biases (tiny outputs: a checkpoint or
        # training is expected to replace it).
        for name, param in self.layers.named_parameters():
            if name.endswith("weight"):
                nn.init.normal_(param, std=1.0 / (self.input_size + 1))
            else:
                nn.init.zeros_(param)

    def features(self, x: Tensor) -> Tensor:
        """(M, D) -> (M, 128): the first two linears (with their dropout), read by the scorer."""
        return self.layers[:3](x)

    def forward(self, x: Tensor) -> Tensor:
        """(M, D) -> (M, 1) raw (unnormalised) ImageReward score."""
        return self.layers(x)


class Reward3DScorer(nn.Module):
    """The paper's head (``Reward3D_Scorer.pt``): per-view 128-d MLP features, concatenated in view
    order (4 x 128 = 512), then fc1 512->256, Dropout .2, fc2 256->64, Dropout .2, fc3 64->1.

    View order matters: the concatenation gives each view its own slice of ``fc1``.
    ``mlp.layers.{4,6,7}`` are unused here but kept, because the checkpoint holds them (and
    ``mlp(features)`` still gives the per-view ImageReward score).

    Args:
        feature_dim: per-view feature width D.
        mlp_hidden: ImageReward MLP first width (1024 at full scale).
    """

    mean: float = IMAGEREWARD_MEAN
    std: float = IMAGEREWARD_STD

    def __init__(self, feature_dim: int = 768, mlp_hidden: int = 1024) -> None:
        super().__init__()
        self.mlp = ImageRewardMLP(feature_dim, mlp_hidden)
        self.fc1 = nn.Linear(NUM_VIEWS * _FEATURE_WIDTH, 256)
        self.dropout1 = nn.Dropout(0.2)
        self.fc2 = nn.Linear(256, 64)
        self.dropout2 = nn.Dropout(0.2)
        self.fc3 = nn.Linear(64, 1)

    def forward(self, features: Tensor) -> Tensor:
        """features (N, D), 4 consecutive views per object -> (N/4, 1) normalised reward."""
        objects = _check_views(features)
        # Row-major reshape == the official torch.cat of views 0..3 along the feature axis.
        x = self.mlp.features(features).reshape(objects, NUM_VIEWS * _FEATURE_WIDTH)
        x = self.dropout1(self.fc1(x))
        x = self.dropout2(self.fc2(x))
        return (self.fc3(x) - self.mean) / self.std


class CrossViewFusion(nn.Module):
    """The fusion head (``Reward3D_CrossViewFusion.pt``): self-attention across the 4 views, a
    sigmoid gate between each view's feature and its attended feature, the mean over views, then
    the full ImageReward MLP.

    ``gate = sigmoid(W [x, attn(x)])``, ``fused = gate * attn + (1 - gate) * x``. There is no view
    embedding, so (unlike the scorer) the result does not depend on the order of the views.

    Args:
        feature_dim: per-view feature width D (768 at full scale).
        mlp_hidden: ImageReward MLP first width.
        num_heads: attention heads (12 at full scale; must divide D).
        attention_dropout: dropout on the attention weights (0.1 officially; train mode only).
    """

    mean: float = IMAGEREWARD_MEAN
    std: float = CROSS_VIEW_FUSION_STD

    def __init__(
        self,
        feature_dim: int = 768,
        mlp_hidden: int = 1024,
        num_heads: int = 12,
        attention_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if feature_dim % num_heads:
            raise ValueError(f"feature_dim {feature_dim} is not divisible by num_heads {num_heads}")
        # Sequence-first (views, objects, D) as in the official module; names self_attn.in_proj_*,
        # self_attn.out_proj.* and fusion_gate.0.* match the checkpoint.
        self.self_attn = nn.MultiheadAttention(feature_dim, num_heads, dropout=attention_dropout)
        self.fusion_gate = nn.Sequential(nn.Linear(2 * feature_dim, feature_dim), nn.Sigmoid())
        self.mlp = ImageRewardMLP(feature_dim, mlp_hidden)

    def fuse(self, features: Tensor) -> Tensor:
        """(N, D) per-view features -> (N/4, D) fused object features."""
        objects = _check_views(features)
        seq = features.reshape(objects, NUM_VIEWS, -1).transpose(0, 1)  # (4, B, D)
        attended, _ = self.self_attn(seq, seq, seq, need_weights=False)
        gate = self.fusion_gate(torch.cat([seq, attended], dim=-1))
        return (gate * attended + (1 - gate) * seq).mean(dim=0)

    def forward(self, features: Tensor) -> Tensor:
        """features (N, D), 4 consecutive views per object -> (N/4, 1) normalised reward."""
        return (self.mlp(self.fuse(features)) - self.mean) / self.std
