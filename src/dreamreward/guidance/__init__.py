"""Guidance for text-to-3D: what turns a frozen prior and a frozen reward into a loss on renders.

- ``timesteps``           the annealed range of distillation timesteps (one t per object)
- ``score_distillation``  ``ScoreDistillation``: MVDream's x0-reconstruction loss and plain SDS
- ``reward_term``         ``RewardGuidance``: DreamFL's Reward3D term (paper form, released
                          presets, and a gradient-norm weighting)
- ``ranked_distillation`` ``RankedDistillation``: the reward as a ranker of two noise draws
                          (DreamDPO), in place of ``ScoreDistillation``
"""

from dreamreward.guidance.ranked_distillation import RankedDistillation
from dreamreward.guidance.reward_term import RewardGuidance
from dreamreward.guidance.score_distillation import ScoreDistillation
from dreamreward.guidance.timesteps import TimestepSchedule

__all__ = ["RankedDistillation", "RewardGuidance", "ScoreDistillation", "TimestepSchedule"]
