"""dreamreward: DreamReward (Reward3D + DreamFL) as a Lightning framework in pure PyTorch.

Where things live:

- ``dreamreward.render``  the differentiable renderer (cameras, NeRF, DMTet, rasterizer, export)
- ``dreamreward.world``   the primitives world: scenes, prompts, candidates, the oracle
- ``dreamreward.data``    preference schema, datasets, LightningDataModules
- ``dreamreward.models``  Reward3D (official architecture, checkpoints)
- ``dreamreward.modules`` the LightningModules composed by the configs in ``configs/``
"""

__version__ = "0.1.0"
