"""Neural models of dreamreward.

- ``reward3d``   the Reward3D preference reward (DreamReward, ECCV 2024):
    - ``reward3d.preprocess``  differentiable CLIP preprocessing of renders, view-dependent prompts
    - ``reward3d.blip``        ImageReward's BLIP backbone: ViT image tower + BERT text encoder with
                               cross-attention over the image tokens (official parameter names)
    - ``reward3d.heads``       the ImageReward MLP and both 3D heads (``Reward3DScorer``,
                               ``CrossViewFusion``) with their normalisation constants
    - ``reward3d.model``       ``Reward3D``: backbone + head, the official call and ``score``
    - ``reward3d.checkpoint``  strict loading of the official ``Reward3D_*.pt`` /
                               ``ImageReward.pt`` state dicts (``weights_only``), the reverse map
- ``mvdiffusion``  the multi-view diffusion prior (MVDream on a stock diffusers UNet)
- ``weight_errors``  ``check_state_dict`` and the errors of a weights file that does not fit its
                   model (shared by every model here)
- ``tokenizer``    bert-base-uncased from a local folder (Reward3D and the prior's text encoder)
"""
