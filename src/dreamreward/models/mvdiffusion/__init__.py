"""The multi-view diffusion prior (MVDream on a stock diffusers UNet, and the small CPU prior).

- ``attention``  ``MultiViewAttnProcessor``: attn1 sees the tokens of all V views of an object
- ``camera_embedding``  ``mvdream_camera_embedding``: a camera as the prior's 16 conditioning values
- ``unet``       ``MultiViewUNet``: camera (16-value c2w) as the projection class embedding
- ``text``       prompt encoders: all-MiniLM-L6-v2 tokens (CPU) and CLIPTextModel (SD-2/MVDream)
- ``prior``      ``MultiViewPrior``: UNet + text + schedule (+ VAE); CFG, x0, DDIM sampling, I/O
- ``convert``    the original ``sd-v2.1-base-4view.pt`` (LDM keys) and the diffusers port, strictly
"""

from dreamreward.models.mvdiffusion.prior import MultiViewPrior, load_prior
from dreamreward.models.mvdiffusion.unet import MultiViewUNet

__all__ = ["MultiViewPrior", "MultiViewUNet", "load_prior"]
