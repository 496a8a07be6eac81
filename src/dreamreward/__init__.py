"""dreamreward: DreamReward (Reward3D + DreamFL) as a Lightning framework in pure PyTorch.

Where things live:

- ``dreamreward.render``    the differentiable renderer (cameras, NeRF, DMTet, rasterizer, export)
- ``dreamreward.world``     the primitives world: scenes, prompts, candidates, the oracle
- ``dreamreward.models``    Reward3D (official architecture, checkpoints), the multi-view prior
- ``dreamreward.data``      preference schema, datasets, LightningDataModules
- ``dreamreward.guidance``  score distillation, DreamFL's reward term, the ranker, the judges'
                            protocol
- ``dreamreward.modules``   the LightningModules composed by the configs in ``configs/``
- ``dreamreward.pipelines`` the Python API: ``score``, ``score_batch``, ``sample_views``
"""

__version__ = "0.1.0"
