"""Reward3D (DreamReward's 3D preference reward): model, heads, preprocessing, checkpoints.

- ``preprocess``  ``clip_preprocess`` (renders in [0, 1] -> CLIP-normalised 224 px, differentiable),
                  ``view_prompts`` ("{prompt}, front view", ...), ``tokenize_prompts``
- ``blip``        ``VisionTransformer``, ``BlipTextEncoder``, ``BlipBackbone`` (official names)
- ``heads``       ``ImageRewardMLP``, ``Reward3DScorer``, ``CrossViewFusion``, constants
- ``model``       ``Reward3D`` (official call, ``score``, ``as_frozen_guide``)
- ``checkpoint``  ``load_official_checkpoint``, ``to_official_state_dict``, ``official_keys``,
                  ``CheckpointMismatchError``, ``CheckpointFormatError``
"""

from dreamreward.models.reward3d.blip import BlipBackbone, BlipTextEncoder, VisionTransformer
from dreamreward.models.reward3d.checkpoint import (
    CheckpointFormatError,
    CheckpointMismatchError,
    LoadReport,
    detect_checkpoint_kind,
    load_official_checkpoint,
    official_key_map,
    official_keys,
    read_state_dict,
    to_official_state_dict,
)
from dreamreward.models.reward3d.heads import (
    CROSS_VIEW_FUSION_STD,
    IMAGEREWARD_MEAN,
    IMAGEREWARD_STD,
    NUM_VIEWS,
    CrossViewFusion,
    ImageRewardMLP,
    Reward3DScorer,
)
from dreamreward.models.reward3d.model import HeadKind, Reward3D
from dreamreward.models.reward3d.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    clip_preprocess,
    tokenize_prompts,
    view_prompts,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CROSS_VIEW_FUSION_STD",
    "IMAGEREWARD_MEAN",
    "IMAGEREWARD_STD",
    "NUM_VIEWS",
    "BlipBackbone",
    "BlipTextEncoder",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "CrossViewFusion",
    "HeadKind",
    "ImageRewardMLP",
    "LoadReport",
    "Reward3D",
    "Reward3DScorer",
    "VisionTransformer",
    "clip_preprocess",
    "detect_checkpoint_kind",
    "load_official_checkpoint",
    "official_key_map",
    "official_keys",
    "read_state_dict",
    "to_official_state_dict",
    "tokenize_prompts",
    "view_prompts",
]
