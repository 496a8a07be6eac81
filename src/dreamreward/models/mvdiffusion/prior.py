"""``MultiViewPrior``: the multi-view diffusion model that DreamFL distils, at either scale.

One object bundles the camera-conditioned multi-view UNet, the prompt encoder, the noise
schedule (a diffusers ``DDPMScheduler`` config; DDIM is built from it for sampling) and, for a
latent model, the VAE. Pixel-space (the small primitives prior) and latent-space (MVDream) models
go through the same calls: :meth:`encode_images` / :meth:`decode` are the identity map to
[-1, 1] without a VAE.

Saved layout (``save_pretrained``)::

    prior.json                     num_views, image_size, text encoder class + arguments
    unet/config.json, unet/diffusion_pytorch_model.safetensors   (diffusers format)
    scheduler/scheduler_config.json
"""

from __future__ import annotations

import copy
import importlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from torch import Tensor, nn
from tqdm.auto import tqdm

from dreamreward.models.mvdiffusion.text import PromptEncoder, PromptTokens
from dreamreward.models.mvdiffusion.unet import MultiViewUNet, flatten_cameras
from dreamreward.models.weight_errors import CheckpointMismatchError, check_state_dict

PRIOR_FILE = "prior.json"
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


def pixel_scheduler_config(num_train_timesteps: int = 1000) -> dict[str, Any]:
    """The small pixel-space prior's schedule: cosine noise levels (improved DDPM) and
    v-prediction.

    Why not SD's eps-prediction: at high noise an eps model's x0 estimate divides its error by
    ``sqrt(alpha_bar)`` (about 1/97 at t = 950 on DDPM's linear schedule), so a small model
    needs very long training before samples from pure noise show an object; a v model predicts
    the image's layout directly there. :meth:`MultiViewPrior.predict_noise` still returns eps, so
    guidance code does not care which parameterisation the UNet uses.
    """
    return dict(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        clip_sample=True,
    )


class MultiViewPrior(nn.Module):
    """A camera-conditioned multi-view diffusion model with its text encoder and noise schedule.

    Args:
        unet: the multi-view UNet (V views per object).
        text_encoder: the frozen prompt encoder whose width is the UNet's cross-attention width.
        scheduler_config: a ``DDPMScheduler`` config (training noise, score distillation).
        image_size: side of the renders the prior judges (pixel space: the UNet's size).
        vae: a diffusers ``AutoencoderKL`` for a latent model (None: pixel space).
        text_encoder_spec: how to rebuild the text encoder (``class_path`` + ``init_args``),
            written by :meth:`save_pretrained`.
    """

    def __init__(
        self,
        unet: MultiViewUNet,
        text_encoder: PromptEncoder,
        scheduler_config: dict[str, Any],
        image_size: int | None = None,
        vae: nn.Module | None = None,
        text_encoder_spec: dict[str, Any] | None = None,
        prompt_domain: str | None = None,
    ) -> None:
        super().__init__()
        cross = unet.unet.config.cross_attention_dim
        if text_encoder.width != cross:
            raise ValueError(
                f"the text encoder gives {text_encoder.width}-wide tokens but the UNet "
                f"cross-attends to {cross}"
            )
        self.unet = unet
        self.text_encoder = text_encoder
        self.vae = vae
        if vae is not None:
            vae.requires_grad_(False)
        self.scheduler = DDPMScheduler.from_config(scheduler_config)
        scale = 8 if vae is not None else 1
        self.image_size = image_size or unet.sample_size * scale
        self.text_encoder_spec = text_encoder_spec
        # what the prior was trained to draw: "primitives" for the CPU-scale prior (it knows the
        # primitives world's prompts and nothing else); None for open-domain priors (MVDream)
        self.prompt_domain = prompt_domain
        # float32 always, and not a buffer: .to(float16) would round alpha_bar to 1 near t = 0
        # and to 0 at t = T - 1 (no noise added, NaN x0); coefficients are cast per call
        self._alphas_cumprod = self.scheduler.alphas_cumprod.double().float()

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def alphas_cumprod(self) -> Tensor:
        """(T,) float32 alpha_bar on the UNet's device."""
        if self._alphas_cumprod.device != self.device:
            self._alphas_cumprod = self._alphas_cumprod.to(self.device)
        return self._alphas_cumprod

    @property
    def num_views(self) -> int:
        return self.unet.num_views

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def is_latent(self) -> bool:
        return self.vae is not None

    # ------------------------------------------------------------------ images <-> model space
    def encode_images(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) renders in [0, 1] -> (N, C, h, w) model inputs (pixels in [-1, 1] at the
        UNet's size, or scaled VAE latents). Differentiable."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        size = self.unet.sample_size * (8 if self.vae is not None else 1)
        if images.shape[-2:] != (size, size):
            images = F.interpolate(
                images, (size, size), mode="bilinear", align_corners=False, antialias=True
            )
        x = images * 2.0 - 1.0
        if self.vae is None:
            return x
        x = x.to(self.vae.dtype)
        latents = self.vae.encode(x).latent_dist.sample()
        return latents * self.vae.config.scaling_factor

    def decode(self, x: Tensor) -> Tensor:
        """(N, C, h, w) model space -> (N, 3, H, W) float32 images in [0, 1]."""
        if self.vae is not None:
            x = x.to(self.vae.dtype) / self.vae.config.scaling_factor
            x = self.vae.decode(x).sample
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    # ------------------------------------------------------------------ text
    def encode_prompts(self, prompts: list[str]) -> PromptTokens:
        """Prompts -> (N, L, D) tokens on the UNet's device and dtype."""
        return self.text_encoder(prompts).to(self.device, self.dtype)

    # ------------------------------------------------------------------ denoising
    @property
    def prediction_type(self) -> str:
        return str(self.scheduler.config.prediction_type)

    def _alpha(self, timesteps: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)), each (N, 1, 1, 1) on ``like``'s device,
        computed in float32 and cast to ``like``'s dtype; timesteps (N,) per image."""
        a = self.alphas_cumprod.to(like.device)[timesteps.to(like.device).long()].view(-1, 1, 1, 1)
        return a.sqrt().to(like.dtype), (1 - a).sqrt().to(like.dtype)

    def _per_image(self, timesteps: Tensor, rows: int) -> Tensor:
        timesteps = torch.as_tensor(timesteps).reshape(-1)
        if timesteps.numel() == 1:
            return timesteps.expand(rows)
        return timesteps.repeat_interleave(rows // timesteps.numel())

    def training_target(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """What the UNet regresses: the noise (eps) or ``v = sqrt(a) eps - sqrt(1 - a) x0``."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            sa, s1a = self._alpha(self._per_image(timesteps, x0.shape[0]), x0)
            return sa * noise - s1a * x0
        raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")

    def output_to_noise(self, output: Tensor, noisy: Tensor, timesteps: Tensor) -> Tensor:
        """The UNet's raw output (eps or v) as eps; timesteps per object or per image."""
        if self.prediction_type == "epsilon":
            return output
        if self.prediction_type == "v_prediction":
            sa, s1a = self._alpha(self._per_image(timesteps, noisy.shape[0]), noisy)
            return sa * output.to(noisy.dtype) + s1a * noisy
        raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")

    def predict_noise(
        self,
        noisy: Tensor,
        timesteps: Tensor,
        text: PromptTokens,
        cameras: Tensor,
        uncond: PromptTokens | None = None,
        guidance_scale: float = 1.0,
        raw: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """The noise prediction, with classifier-free guidance in one batched pass.

        Args:
            noisy: (B*V, C, h, w) noisy model inputs.
            timesteps: (B,) per object or (B*V,) per image.
            text: (B, L, D) prompt tokens (one per object; repeated over views here).
            cameras: (B*V, 16) camera embeddings.
            uncond: (B, L, D) negative/empty prompt tokens (needed when guidance_scale != 1).
            guidance_scale: w in ``eps_u + w (eps_c - eps_u)``.
            raw: return the UNet's own output (v for a v-prediction model) instead of eps.

        Returns:
            (guided eps, conditional eps or None without guidance), both (B*V, C, h, w).
        """
        v = self.num_views
        rows = noisy.shape[0]
        for name, tokens in (("text", text), ("uncond", uncond)):
            if tokens is not None and tokens.embeddings.shape[0] * v != rows:
                raise ValueError(
                    f"{name}: {tokens.embeddings.shape[0]} prompts for {rows} images: need one "
                    f"per group of {v}"
                )
        cameras = flatten_cameras(cameras, rows)
        cond = text.repeat_views(v)
        timesteps = torch.as_tensor(timesteps, device=noisy.device)

        def as_eps(output: Tensor) -> Tensor:
            return output if raw else self.output_to_noise(output, noisy, timesteps)

        if guidance_scale == 1.0 or uncond is None:
            if guidance_scale != 1.0:
                raise ValueError("guidance_scale != 1 needs the unconditional prompt tokens")
            out = self.unet(noisy, timesteps, cond.embeddings, cameras, cond.mask)
            return as_eps(out), None
        both = PromptTokens.cat([cond, uncond.repeat_views(v)])
        t2 = timesteps.repeat(2) if timesteps.ndim else timesteps
        out_c, out_u = self.unet(
            noisy.repeat(2, 1, 1, 1), t2, both.embeddings, cameras.repeat(2, 1), both.mask
        ).chunk(2)
        eps_c, eps_u = as_eps(out_c), as_eps(out_u)
        return eps_u + guidance_scale * (eps_c - eps_u), eps_c

    def predict_x0(self, noisy: Tensor, eps: Tensor, timesteps: Tensor) -> Tensor:
        """One-step estimate ``x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)``; timesteps (B*V,).

        Computed in float32 (1 / sqrt(a_t) reaches about 600 at t = T - 1 on the cosine schedule)
        and returned in ``noisy``'s dtype."""
        sa, s1a = self._alpha(self._per_image(timesteps, noisy.shape[0]), noisy.float())
        return ((noisy.float() - s1a * eps.float()) / sa).to(noisy.dtype)

    def add_noise(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise``; timesteps (N,) per image."""
        sa, s1a = self._alpha(self._per_image(timesteps, x0.shape[0]), x0.float())
        return (sa * x0.float() + s1a * noise.float()).to(x0.dtype)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        prompts: list[str],
        cameras: Tensor,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        negative_prompt: str = "",
        generator: torch.Generator | list[torch.Generator] | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Generate V views per prompt with DDIM (eta 0) and classifier-free guidance.

        Args:
            prompts: B prompts.
            cameras: (B*V, 16) camera embeddings (e.g.
                ``mvdream_camera_embedding(default_cameras())`` repeated per prompt).
            num_inference_steps: DDIM steps.
            guidance_scale: CFG weight (1 = no guidance).
            negative_prompt: the unconditional prompt.
            generator: seeds the initial noise (CPU generators: same images on any device); a
                list gives each prompt its own, so a prompt's sample does not depend on the
                other prompts of the batch.
            progress: show a progress bar.

        Returns:
            (B*V, 3, H, W) images in [0, 1].
        """
        if not prompts or any(not p.strip() for p in prompts):
            raise ValueError(f"sample needs non-empty prompts, got {prompts!r}")
        b, v = len(prompts), self.num_views
        device = self.device
        size, channels = self.unet.sample_size, self.unet.in_channels
        cameras = cameras.to(device)
        if cameras.shape != (b * v, 16):
            raise ValueError(f"cameras must be ({b * v}, 16) for {b} prompts, got {cameras.shape}")
        # predict_noise always gives eps, whatever the UNet predicts; "trailing" spacing starts
        # at t = T - 1 (pure noise), where the model was trained, rather than at T - T/steps
        ddim = DDIMScheduler.from_config(
            self.scheduler.config, prediction_type="epsilon", timestep_spacing="trailing"
        )
        ddim.set_timesteps(num_inference_steps, device=device)
        text = self.encode_prompts(prompts)
        uncond = self.encode_prompts([negative_prompt] * b) if guidance_scale != 1.0 else None
        if isinstance(generator, list):
            if len(generator) != b:
                raise ValueError(f"{len(generator)} generators for {b} prompts")
            x = torch.cat([torch.randn(v, channels, size, size, generator=g) for g in generator])
        else:
            x = torch.randn(b * v, channels, size, size, generator=generator).to(
                device, self.unet.dtype
            )
        for t in tqdm(ddim.timesteps, desc="DDIM", disable=not progress, leave=False):
            eps, _ = self.predict_noise(x, t.expand(b), text, cameras, uncond, guidance_scale)
            x = ddim.step(eps, t, x).prev_sample
        return self.decode(x)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(
        self, folder: str | os.PathLike[str], dtype: torch.dtype | None = None
    ) -> Path:
        """Write the UNet (diffusers format), the schedule and ``prior.json`` (pixel models;
        a latent model's VAE and CLIP text tower stay where they were loaded from).

        Args:
            folder: output folder.
            dtype: store the UNet weights in this dtype (e.g. float16 halves the shipped file;
                :func:`load_prior` casts them back to the dtype asked for).
        """
        if self.vae is not None:
            raise NotImplementedError("save_pretrained writes pixel-space priors only")
        if self.text_encoder_spec is None:
            raise ValueError("set text_encoder_spec (class_path + init_args) to save the prior")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        unet = self.unet.unet
        if dtype is not None and dtype != unet.dtype:
            # nn.Module.to: diffusers' own .to warns about fp32-pinned modules (there are none)
            unet = nn.Module.to(copy.deepcopy(unet), dtype)
        unet.save_pretrained(str(out / "unet"), safe_serialization=True)
        self.scheduler.save_pretrained(str(out / "scheduler"))
        meta = {
            "num_views": self.num_views,
            "image_size": self.image_size,
            "text_encoder": self.text_encoder_spec,
        }
        if self.prompt_domain is not None:
            meta["prompt_domain"] = self.prompt_domain
        (out / PRIOR_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return out


def _build_text_encoder(spec: dict[str, Any], where: str) -> PromptEncoder:
    path = spec.get("class_path", "")
    module_name, _, class_name = path.rpartition(".")
    # only this package's encoders: a prior folder must not name arbitrary code to run
    if not module_name.startswith("dreamreward.models.mvdiffusion"):
        raise ValueError(f"{where}: text_encoder.class_path {path!r} is not a dreamreward encoder")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, PromptEncoder)):
        raise ValueError(f"{where}: {path!r} is not a PromptEncoder")
    return cls(**spec.get("init_args", {}))


def shipped_prior_dir() -> Path:
    """The small primitives prior shipped inside the package."""
    return Path(__file__).resolve().parents[2] / "assets" / "mvdiffusion" / "primitives"


def load_prior(
    folder: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> MultiViewPrior:
    """Load a :meth:`MultiViewPrior.save_pretrained` folder strictly (default: the shipped one).

    Returns the prior frozen and in eval mode.

    Raises:
        FileNotFoundError: the folder or one of its files is missing.
        CheckpointMismatchError: the weights do not fit the UNet config.
    """
    from safetensors.torch import load_file

    root = Path(folder) if folder is not None else shipped_prior_dir()
    meta_path = root / PRIOR_FILE
    weights = root / "unet" / UNET_WEIGHTS
    for p in (meta_path, root / "unet" / "config.json", weights):
        if not p.is_file():
            raise FileNotFoundError(
                f"{root} is not a saved multi-view prior: {p.relative_to(root)} is missing "
                "(write one with MultiViewPrior.save_pretrained or `fit` an MVDiffusionModule)"
            )
    try:
        meta = json.loads(meta_path.read_text())
        num_views, image_size = int(meta["num_views"]), int(meta["image_size"])
        text_spec = meta["text_encoder"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointMismatchError(
            f"{meta_path}: not a prior description with num_views, image_size and text_encoder "
            f"({err!r})",
            path=meta_path,
        ) from err
    config = UNet2DConditionModel.load_config(str(root / "unet"))
    unet = UNet2DConditionModel.from_config(config)
    state = load_file(str(weights))
    check_state_dict(unet.state_dict(), state, f"{weights} does not fit unet/config.json", weights)
    unet.load_state_dict(state, strict=True)
    scheduler_dir = root / "scheduler"
    if not (scheduler_dir / "scheduler_config.json").is_file():
        raise FileNotFoundError(f"{scheduler_dir}/scheduler_config.json is missing")
    scheduler_config = dict(DDPMScheduler.load_config(str(scheduler_dir)))
    text = _build_text_encoder(text_spec, str(meta_path))
    try:
        prior = MultiViewPrior(
            MultiViewUNet(unet, num_views),
            text,
            scheduler_config,
            image_size=image_size,
            text_encoder_spec=text_spec,
            prompt_domain=meta.get("prompt_domain"),
        )
    except ValueError as err:
        raise CheckpointMismatchError(f"{root}: {err}", path=root) from err
    prior.requires_grad_(False)
    return prior.to(device=device, dtype=dtype).eval()


def load_mvdream_prior(
    path: str | os.PathLike[str],
    tokenizer_path: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    image_size: int = 256,
) -> MultiViewPrior:
    """MVDream (``sd-v2.1-base-4view``) as a frozen latent :class:`MultiViewPrior`.

    Args:
        path: the original ``sd-v2.1-base-4view.pt`` (LDM keys) or the folder of the diffusers
            port (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``). Local paths only.
        tokenizer_path: the CLIP tokenizer folder (``vocab.json`` + ``merges.txt``); default
            ``<path>/tokenizer`` for the port; required for a ``.pt`` file.
        device, dtype: e.g. ``"cuda"``, ``torch.float16`` (cast after strict loading).
        image_size: render side in pixels (256: latents of 32 x 32).
    """
    from dreamreward.models.mvdiffusion.convert import (
        load_mvdream_checkpoint,
        load_mvdream_diffusers,
        mvdream_scheduler_config,
    )
    from dreamreward.models.mvdiffusion.text import CLIPPromptEncoder

    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(
            f"no MVDream weights at {root}: give sd-v2.1-base-4view.pt or the diffusers port folder"
        )
    if root.is_dir():
        unet, vae, text_model = load_mvdream_diffusers(root, dtype=dtype, device=device)
        tokenizer_path = tokenizer_path or root / "tokenizer"
    else:
        if tokenizer_path is None:
            raise ValueError(
                f"{root} is a single checkpoint file: pass tokenizer_path, a folder with the "
                "CLIP tokenizer's vocab.json and merges.txt (e.g. the diffusers port's tokenizer/)"
            )
        unet, vae, text_model = load_mvdream_checkpoint(
            root, dtype=dtype, device=device, image_size=image_size // 8
        )
    prior = MultiViewPrior(
        MultiViewUNet(unet, num_views=4),
        CLIPPromptEncoder(text_model, tokenizer_path),
        mvdream_scheduler_config(),
        image_size=image_size,
        vae=vae,
    )
    prior.requires_grad_(False)
    return prior.to(device).eval()
