"""Where the frozen guides come from, as small typed config objects (LightningCLI class_path).

A config names a source, not a path string with a magic prefix::

    prior:
      class_path: dreamreward.guidance.sources.SavedPrior      # the shipped primitives prior
    reward:
      class_path: dreamreward.guidance.sources.OfficialReward3D
      init_args: {checkpoint: /models/Reward3D_Scorer.pt}

Each source's ``load()`` returns the model frozen and in eval mode. Nothing is downloaded.
"""

from __future__ import annotations

from typing import Literal

import torch

from dreamreward.models.mvdiffusion.prior import MultiViewPrior, load_mvdream_prior, load_prior
from dreamreward.models.reward3d.model import Reward3D


class PriorSource:
    """A multi-view diffusion prior to load."""

    def load(self) -> MultiViewPrior:
        raise NotImplementedError


class SavedPrior(PriorSource):
    """A :meth:`MultiViewPrior.save_pretrained` folder (default: the shipped primitives prior).

    Args:
        path: the folder, or None for the prior inside the package.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path

    def load(self) -> MultiViewPrior:
        return load_prior(self.path)


class MVDreamPrior(PriorSource):
    """MVDream ``sd-v2.1-base-4view`` from local files (full scale, GPU).

    Args:
        path: ``sd-v2.1-base-4view.pt`` or the diffusers port folder.
        tokenizer_path: the CLIP tokenizer folder (default: the port's ``tokenizer/``).
        dtype: ``float16`` / ``bfloat16`` / ``float32`` (cast after strict loading).
        image_size: render side the prior sees (256: 32 x 32 latents).
    """

    def __init__(
        self,
        path: str,
        tokenizer_path: str | None = None,
        dtype: Literal["float16", "bfloat16", "float32"] = "float16",
        image_size: int = 256,
    ) -> None:
        self.path, self.tokenizer_path = path, tokenizer_path
        self.dtype, self.image_size = dtype, image_size

    def load(self) -> MultiViewPrior:
        return load_mvdream_prior(
            self.path,
            self.tokenizer_path,
            dtype=getattr(torch, self.dtype),
            image_size=self.image_size,
        )


class RewardSource:
    """A Reward3D model to load."""

    def load(self) -> Reward3D:
        raise NotImplementedError


class ShippedReward3D(RewardSource):
    """A :func:`~dreamreward.models.reward3d.export.save_reward3d` folder (default: the shipped
    primitives Reward3D).

    Args:
        path: the export folder, or None for the model inside the package.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path

    def load(self) -> Reward3D:
        from dreamreward.models.reward3d.export import load_reward3d

        return load_reward3d(self.path)


class OfficialReward3D(RewardSource):
    """The released ``Reward3D_Scorer.pt`` / ``Reward3D_CrossViewFusion.pt`` (BLIP ViT-L + BERT).

    Args:
        checkpoint: the ``.pt`` file, loaded strictly.
        head: ``scorer`` (Reward3D_Scorer.pt) or ``cross_view_fusion``.
    """

    def __init__(
        self, checkpoint: str, head: Literal["scorer", "cross_view_fusion"] = "scorer"
    ) -> None:
        self.checkpoint, self.head = checkpoint, head

    def load(self) -> Reward3D:
        from dreamreward.models.reward3d import BlipBackbone
        from dreamreward.models.reward3d.checkpoint import load_official_checkpoint

        model = Reward3D(BlipBackbone(), head=self.head)
        load_official_checkpoint(model, self.checkpoint)
        return model.as_frozen_guide()
