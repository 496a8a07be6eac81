"""dreamreward: DreamReward (Reward3D + DreamFL) as a Lightning framework in pure PyTorch.

Where things live:

- ``dreamreward.render``  the differentiable renderer (cameras, NeRF, DMTet, rasterizer, export)
- ``dreamreward.modules`` the LightningModules composed by the configs in ``configs/``
- ``dreamreward.data``    LightningDataModules
"""

__version__ = "0.1.0"
