"""Load MVDream's weights onto stock ``diffusers`` / ``transformers`` models, strictly.

Two sources are supported:

- the original checkpoint ``sd-v2.1-base-4view.pt`` (:func:`load_mvdream_checkpoint`): a plain
  LDM state dict whose prefixes are ``model.diffusion_model.`` (the multi-view UNet),
  ``first_stage_model.`` (the KL autoencoder) and ``cond_stage_model.model.`` (OpenCLIP ViT-H-14's
  text tower);
- the diffusers-format port ``ashawkey/mvdream-sd2.1-diffusers`` (:func:`load_mvdream_diffusers`):
  its ``vae/`` and ``text_encoder/`` are stock ``AutoencoderKL`` / ``CLIPTextModel`` folders, but
  its ``unet/`` belongs to the custom ``MultiViewUNetModel`` of ashawkey's ``mvdream_diffusers``,
  whose parameter names are MVDream's LDM UNet names without the ``model.diffusion_model.``
  prefix and whose ``config.json`` holds the LDM ``unet_config.params`` (``model_channels``,
  ``channel_mult``, ``camera_dim``, ...); so that UNet goes through the same LDM conversion.

The UNet becomes a stock ``UNet2DConditionModel``: MVDream's camera MLP ``camera_embed`` (Linear
16->1280, SiLU, Linear 1280->1280, added to the time embedding) is exactly diffusers' projection
class embedding, so ``camera_embed.{0,2}`` become ``class_embedding.linear_{1,2}`` and the cameras
go in as ``class_labels`` of shape (B*V, 16). The multi-view attention is not a weight change
(MVDream's ``attn1`` simply attends over all views' tokens), so no processor is installed here.

The renaming itself is diffusers' own LDM converters (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_open_clip_checkpoint``). They drop keys they do not know
without a word (``camera_embed.*`` among them), so this module accounts for every key itself:
each checkpoint key is converted, or listed in :data:`IGNORED_KEYS` / matched by
:data:`IGNORED_PREFIXES` / is an OpenCLIP block the penultimate-layer conditioning never runs, or
the conversion raises :class:`CheckpointMismatchError` listing the leftovers. Every converted
state dict is then checked key-for-key and shape-for-shape against the model it is for.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as _sfu
from torch import Tensor, nn
from transformers import CLIPTextConfig, CLIPTextModel

from dreamreward.models.weight_errors import (
    CheckpointFormatError,
    CheckpointMismatchError,
    check_state_dict,
)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."

CAMERA_KEY_MAP: dict[str, str] = {
    "camera_embed.0.weight": "class_embedding.linear_1.weight",
    "camera_embed.0.bias": "class_embedding.linear_1.bias",
    "camera_embed.2.weight": "class_embedding.linear_2.weight",
    "camera_embed.2.bias": "class_embedding.linear_2.bias",
}
"""MVDream's camera MLP (UNet-relative LDM names) -> diffusers' projection class embedding."""

IGNORED_KEYS: frozenset[str] = frozenset(
    {
        # LDM's diffusion-schedule buffers: all derived from (linear_start, linear_end,
        # timesteps), which diffusers keeps in the scheduler config (mvdream_scheduler_config).
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        # LDM training bookkeeping, not used at inference.
        "logvar",
        "lvlb_weights",
        "scale_factor",
        # OpenCLIP parts outside the text tower's hidden states, which are all MVDream uses:
        # the contrastive temperature / bias, the pooled-output projection, and the causal mask
        # (a derived buffer; CLIPTextModel builds its own).
        TEXT_PREFIX + "logit_scale",
        TEXT_PREFIX + "logit_bias",
        TEXT_PREFIX + "text_projection",
        TEXT_PREFIX + "attn_mask",
    }
)
"""Checkpoint keys that are deliberately not loaded (reported in ``ConvertedMVDream.ignored``)."""

IGNORED_PREFIXES: tuple[str, ...] = (
    # The EMA copy of the UNet: MVDream's released file is the weights to use; not extracted.
    "model_ema.",
    # OpenCLIP's image tower, if the file still has it (MVDream deletes it; nothing uses it).
    TEXT_PREFIX + "visual.",
)
"""Key prefixes that are deliberately not loaded."""

TEXT_LEGACY_KEYS: frozenset[str] = frozenset(
    {"text_model.embeddings.position_ids", "embeddings.position_ids"}
)
"""``CLIPTextModel``'s ``arange`` position ids, saved by older transformers; ignored on load."""

OPENCLIP_HEAD_WIDTH = 64
"""OpenCLIP text towers use 64-channel heads (ViT-H-14: width 1024 -> 16 heads)."""

_MAX_LISTED = 25

SD21_MVDREAM_LDM_CONFIG: dict[str, Any] = {
    "model": {
        "target": "mvdream.ldm.interface.LatentDiffusionInterface",
        "params": {
            "linear_start": 0.00085,
            "linear_end": 0.0120,
            "timesteps": 1000,
            "scale_factor": 0.18215,
            "parameterization": "eps",
            "unet_config": {
                "target": "mvdream.ldm.modules.diffusionmodules.openaimodel.MultiViewUNetModel",
                "params": {
                    "image_size": 32,
                    "in_channels": 4,
                    "out_channels": 4,
                    "model_channels": 320,
                    "attention_resolutions": [4, 2, 1],
                    "num_res_blocks": 2,
                    "channel_mult": [1, 2, 4, 4],
                    "num_head_channels": 64,
                    "use_spatial_transformer": True,
                    "use_linear_in_transformer": True,
                    "transformer_depth": 1,
                    "context_dim": 1024,
                    "use_checkpoint": False,
                    "legacy": False,
                    "camera_dim": 16,
                },
            },
            "first_stage_config": {
                "target": "mvdream.ldm.models.autoencoder.AutoencoderKL",
                "params": {
                    "embed_dim": 4,
                    "ddconfig": {
                        "double_z": True,
                        "z_channels": 4,
                        "resolution": 256,
                        "in_channels": 3,
                        "out_ch": 3,
                        "ch": 128,
                        "ch_mult": [1, 2, 4, 4],
                        "num_res_blocks": 2,
                        "attn_resolutions": [],
                        "dropout": 0.0,
                    },
                },
            },
            "cond_stage_config": {
                "target": "mvdream.ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
                # ``layer: penultimate``: the text condition is the output of the second-to-last
                # resblock, then ``ln_final``. Optional extension (not in MVDream's yaml):
                # ``heads`` for text towers whose heads are not 64 channels wide.
                "params": {"freeze": True, "layer": "penultimate"},
            },
        },
    }
}
"""MVDream's ``configs/sd-v2-base.yaml`` as a nested dict (SD-2.1-base + ``camera_dim: 16``), the
``original_config`` that diffusers' ``create_*_diffusers_config_from_ldm`` read. Never mutated."""


# ------------------------------------------------------------------------------------ configs
def _model_params(original_config: Mapping[str, Any]) -> Mapping[str, Any]:
    return original_config["model"]["params"]


def _vae_scale_factor(original_config: Mapping[str, Any]) -> int:
    ddconfig = _model_params(original_config)["first_stage_config"]["params"]["ddconfig"]
    return 2 ** (len(ddconfig["ch_mult"]) - 1)


def _normalised_unet_params(original_config: Mapping[str, Any]) -> dict[str, Any]:
    """The LDM UNet params, validated for what a stock ``UNet2DConditionModel`` can express."""
    params = dict(_model_params(original_config)["unet_config"]["params"])
    # LDM's "unset" is -1; diffusers' config builder would take a -1 literally.
    for name in ("num_heads", "num_head_channels"):
        if params.get(name) in (-1, None):
            params.pop(name, None)
    if params.get("camera_dim") is None:
        raise ValueError("unet_config.params has no camera_dim: not an MVDream UNet")
    if params.get("num_classes") is not None:
        raise ValueError(
            "unet_config.params.num_classes is set: a label embedding and MVDream's camera MLP "
            "cannot both be diffusers' single class_embedding"
        )
    unsupported = {
        "use_scale_shift_norm": False,
        "resblock_updown": False,
        "num_attention_blocks": None,
        "ip_dim": 0,  # ImageDream's image-prompt adaptor
        "n_embed": None,
        "dims": 2,
    }
    for name, stock in unsupported.items():
        if params.get(name) not in (None, stock):
            raise ValueError(
                f"unet_config.params.{name}={params[name]!r} has no stock UNet2DConditionModel "
                "equivalent"
            )
    return params


def mvdream_unet_config(
    original_config: Mapping[str, Any] = SD21_MVDREAM_LDM_CONFIG, image_size: int = 32
) -> dict[str, Any]:
    """The ``UNet2DConditionModel`` config of an MVDream LDM config.

    Args:
        original_config: the LDM yaml as a nested dict (:data:`SD21_MVDREAM_LDM_CONFIG`).
        image_size: the latent side (``sample_size``): 32 for MVDream's 256x256 views.

    Returns:
        diffusers' SD config for it plus ``class_embed_type="projection"`` and
        ``projection_class_embeddings_input_dim=camera_dim`` (16): the camera MLP, whose input
        is ``class_labels`` of shape (B*V, 16).
    """
    params = _normalised_unet_params(original_config)
    ldm = copy.deepcopy(dict(original_config))
    ldm["model"]["params"]["unet_config"]["params"] = params
    # image_size=None with an empty checkpoint makes diffusers guess SD-1's 512 without the
    # deprecated image_size argument; sample_size is overwritten right after.
    config = _sfu.create_unet_diffusers_config_from_ldm(ldm, {}, image_size=None)
    if config["attention_head_dim"] is None and "num_head_channels" in params:
        # diffusers only derives per-level head counts from num_head_channels for linear
        # projections; the LDM rule (heads = channels // num_head_channels) is the same for both.
        per = params["model_channels"] // params["num_head_channels"]
        config["attention_head_dim"] = [per * m for m in params["channel_mult"]]
    config["sample_size"] = int(image_size)
    config["class_embed_type"] = "projection"
    config["projection_class_embeddings_input_dim"] = int(params["camera_dim"])
    return config


def mvdream_vae_config(
    original_config: Mapping[str, Any] = SD21_MVDREAM_LDM_CONFIG, image_size: int = 32
) -> dict[str, Any]:
    """The ``AutoencoderKL`` config (``sample_size`` = ``image_size`` * 8 pixels: 256)."""
    config = _sfu.create_vae_diffusers_config_from_ldm(copy.deepcopy(original_config), {}, None)
    config["sample_size"] = int(image_size) * _vae_scale_factor(original_config)
    return config


def mvdream_scheduler_config(
    original_config: Mapping[str, Any] = SD21_MVDREAM_LDM_CONFIG,
) -> dict[str, Any]:
    """The training noise schedule as ``DDPMScheduler`` / ``DDIMScheduler`` kwargs.

    LDM's ``linear`` schedule is linear in sqrt(beta), i.e. diffusers' ``scaled_linear``.
    """
    p = _model_params(original_config)
    param = p.get("parameterization", "eps")
    return {
        "num_train_timesteps": int(p.get("timesteps", 1000)),
        "beta_start": float(p.get("linear_start", 0.00085)),
        "beta_end": float(p.get("linear_end", 0.012)),
        "beta_schedule": "scaled_linear",
        "prediction_type": {"eps": "epsilon", "v": "v_prediction"}[param],
        "clip_sample": False,
    }


# ------------------------------------------------------------------------------------ converting
@dataclass
class ConvertedMVDream:
    """The three diffusers/transformers state dicts (and configs) of one MVDream checkpoint.

    Attributes:
        unet_config: ``UNet2DConditionModel`` kwargs (camera = projection class embedding).
        unet: its state dict.
        vae_config: ``AutoencoderKL`` kwargs, or None without ``first_stage_model.*`` keys.
        vae: its state dict, or None.
        text_config: ``CLIPTextConfig`` kwargs, or None without ``cond_stage_model.*`` keys.
        text: its state dict (key names of the installed transformers), or None.
        ignored: checkpoint keys deliberately not converted (see :data:`IGNORED_KEYS`).
    """

    unet_config: dict[str, Any]
    unet: dict[str, Tensor]
    vae_config: dict[str, Any] | None
    vae: dict[str, Tensor] | None
    text_config: dict[str, Any] | None
    text: dict[str, Tensor] | None
    ignored: list[str] = field(default_factory=list)


def _listed(keys: Iterable[str]) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return f"{keys[:_MAX_LISTED]}{more}"


def _used_ids(values: Iterable[Tensor]) -> set[int]:
    """Identities of the source tensors behind converted values.

    diffusers' UNet/VAE converters hand the source tensor objects through, or a view of them
    (the VAE's 1x1-conv attention weights become ``w[:, :, 0, 0]``), so identity (or the view's
    ``_base``) pins every converted tensor to exactly one source key.
    """
    ids: set[int] = set()
    for value in values:
        ids.add(id(value))
        if value._base is not None:
            ids.add(id(value._base))
    return ids


def _conversion_failed(what: str, err: Exception, path: str | os.PathLike[str] | None):
    return CheckpointMismatchError(
        f"{what}: diffusers' converter failed on an incomplete layout ({type(err).__name__}: "
        f"{err}); the checkpoint lacks a tensor its neighbours imply",
        path=path,
        missing=[str(err)],
    )


def _convert_unet(
    src: Mapping[str, Tensor], config: Mapping[str, Any], path: str | os.PathLike[str] | None
) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    """UNet keys (with :data:`UNET_PREFIX`) -> (diffusers state dict, target->source, unused)."""
    camera = {UNET_PREFIX + k: v for k, v in CAMERA_KEY_MAP.items()}
    body = {k: v for k, v in src.items() if k not in camera}
    # With class_embed_type set, diffusers looks for LDM's label_emb.*; MVDream has camera_embed.*
    # instead, so convert without it and place the camera MLP below.
    plain = dict(config, class_embed_type=None, projection_class_embeddings_input_dim=None)
    try:
        out = _sfu.convert_ldm_unet_checkpoint(body, plain)
    except (KeyError, IndexError) as err:
        raise _conversion_failed("MVDream UNet", err, path) from err
    # ``.get`` of an absent partner key (e.g. a bias) yields None: report it as missing instead.
    out = {k: v for k, v in out.items() if v is not None}
    for ldm_key, new_key in camera.items():
        if ldm_key in src:
            out[new_key] = src[ldm_key]
    return _account(src, out)


def _account(
    src: Mapping[str, Tensor], out: dict[str, Tensor]
) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    by_id = {id(v): k for k, v in src.items()}
    origin = {}
    for key, value in out.items():
        source = by_id.get(id(value))
        if source is None and value._base is not None:
            source = by_id.get(id(value._base))
        if source is not None:
            origin[key] = source
    used = _used_ids(out.values())
    unused = [k for k, v in src.items() if id(v) not in used]
    return out, origin, unused


def _convert_vae(
    src: Mapping[str, Tensor], config: Mapping[str, Any], path: str | os.PathLike[str] | None
) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    try:
        out = _sfu.convert_ldm_vae_checkpoint(dict(src), dict(config))
    except (KeyError, IndexError) as err:
        raise _conversion_failed("MVDream VAE", err, path) from err
    out = {k: v for k, v in out.items() if v is not None}
    return _account(src, out)


_RESBLOCK = re.compile(re.escape(TEXT_PREFIX) + r"transformer\.resblocks\.(\d+)\.")
_OPENCLIP_PREFIX = "openclip_text."
_TEXT_TOP_LEVEL = (
    "token_embedding.weight",
    "positional_embedding",
    "ln_final.weight",
    "ln_final.bias",
)


def _text_config(
    src: Mapping[str, Tensor],
    original_config: Mapping[str, Any],
    path: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    """``CLIPTextConfig`` kwargs from the OpenCLIP shapes and ``cond_stage_config.params``."""
    needed = [TEXT_PREFIX + k for k in ("token_embedding.weight", "positional_embedding")]
    needed.append(TEXT_PREFIX + "transformer.resblocks.0.mlp.c_fc.weight")
    absent = [k for k in needed if k not in src]
    if absent:
        raise CheckpointMismatchError(
            f"OpenCLIP text tower: missing {absent}", path=path, missing=absent
        )
    vocab, width = src[needed[0]].shape
    blocks = sorted({int(m.group(1)) for k in src if (m := _RESBLOCK.match(k))})
    if blocks != list(range(len(blocks))):
        raise CheckpointMismatchError(
            f"OpenCLIP text tower: resblock indices {blocks} are not 0..{len(blocks) - 1}",
            path=path,
        )
    cond = _model_params(original_config).get("cond_stage_config", {}).get("params", {}) or {}
    layer = cond.get("layer", "last")  # FrozenOpenCLIPEmbedder's default
    skip = {"last": 0, "penultimate": 1}.get(layer)
    if skip is None:
        raise ValueError(f"cond_stage_config.params.layer={layer!r}: expected last/penultimate")
    heads = int(cond.get("heads", width // OPENCLIP_HEAD_WIDTH))
    if heads < 1 or width % heads:
        raise ValueError(
            f"text width {width} is not split into {heads} heads: set "
            "cond_stage_config.params.heads"
        )
    config = {
        "vocab_size": int(vocab),
        "hidden_size": int(width),
        "intermediate_size": int(src[needed[2]].shape[0]),
        "num_hidden_layers": len(blocks) - skip,
        "num_attention_heads": heads,
        "max_position_embeddings": int(src[needed[1]].shape[0]),
        "hidden_act": "gelu",  # OpenCLIP ViT-H-14 text MLP: nn.GELU (exact)
        "layer_norm_eps": 1e-5,  # nn.LayerNorm default, as OpenCLIP
        # As stable-diffusion-2-1/text_encoder/config.json; projection_dim is unused by
        # CLIPTextModel, and eos_token_id=2 selects the legacy argmax pooling SD-2 relies on.
        "projection_dim": 512,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }
    return config


def _fit_text_prefix(state: Mapping[str, Tensor], expected: Iterable[str]) -> dict[str, Tensor]:
    """Add/strip ``text_model.`` to match the installed transformers' ``CLIPTextModel``.

    transformers < 5 names its parameters ``text_model.*``; 5.x dropped that level.
    """
    prefix = "text_model."
    expects_prefix = any(k.startswith(prefix) for k in expected)
    out = {}
    for key, value in state.items():
        has = key.startswith(prefix)
        if has and not expects_prefix:
            key = key[len(prefix) :]
        elif expects_prefix and not has:
            key = prefix + key
        out[key] = value
    return out


def _convert_text(
    src: Mapping[str, Tensor],
    config: Mapping[str, Any],
    expected: Iterable[str],
    path: str | os.PathLike[str] | None,
) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """OpenCLIP text keys -> (CLIPTextModel state dict, ignored, unused)."""
    kept_blocks = config["num_hidden_layers"]
    ignored, unused, body = [], [], {}
    for key, value in src.items():
        name = key[len(TEXT_PREFIX) :]
        m = _RESBLOCK.match(key)
        if m and int(m.group(1)) >= kept_blocks:
            ignored.append(key)  # penultimate-layer conditioning never runs the last block
        elif name.startswith("transformer.") or name in _TEXT_TOP_LEVEL:
            body[_OPENCLIP_PREFIX + name] = value
        else:
            unused.append(key)
    # diffusers' converter renames every ``<prefix>transformer.*`` key (unknown ones then surface
    # as unexpected keys in the strict check) and splits in_proj_* at hidden_size (read from the
    # config as text_projection is not passed). A private prefix keeps its hard-coded skip list
    # (``cond_stage_model.model.transformer.resblocks.23.*``) from dropping anything: which
    # blocks are used is decided above, from cond_stage_config.params.layer.
    proxy = SimpleNamespace(config=SimpleNamespace(hidden_size=config["hidden_size"]))
    try:
        out = _sfu.convert_open_clip_checkpoint(proxy, body, prefix=_OPENCLIP_PREFIX)
    except (KeyError, IndexError) as err:
        raise _conversion_failed("OpenCLIP text tower", err, path) from err
    out = {k: v for k, v in out.items() if v is not None}
    return _fit_text_prefix(out, expected), ignored, unused


def _empty_weights():
    """Parameters on the meta device, buffers real (accelerate), else a plain init."""
    try:
        from accelerate import init_empty_weights
    except ImportError:  # pragma: no cover - accelerate ships with diffusers' usual installs
        return nullcontext(), False
    return init_empty_weights(include_buffers=False), True


def _meta_state(build: Callable[[], nn.Module]) -> dict[str, Tensor]:
    with torch.device("meta"):
        return build().state_dict()


def _build_unet(config: Mapping[str, Any]) -> UNet2DConditionModel:
    return UNet2DConditionModel.from_config(dict(config))


def _build_vae(config: Mapping[str, Any]) -> AutoencoderKL:
    return AutoencoderKL.from_config(dict(config))


def _build_text(config: Mapping[str, Any] | CLIPTextConfig) -> CLIPTextModel:
    cfg = config if isinstance(config, CLIPTextConfig) else CLIPTextConfig(**config)
    return CLIPTextModel(cfg)


def _check(
    expected: Mapping[str, Tensor],
    state: Mapping[str, Tensor],
    what: str,
    path: str | os.PathLike[str] | None,
    origin: Mapping[str, str] | None = None,
) -> None:
    """``check_state_dict``, with mis-shaped entries also naming their checkpoint key."""
    try:
        check_state_dict(expected, state, what, path)
    except CheckpointMismatchError as err:
        if not origin:
            raise
        mismatched = [
            f"{line} (checkpoint key {origin[line.split(':')[0]]})"
            if line.split(":")[0] in origin
            else line
            for line in err.mismatched
        ]
        raise CheckpointMismatchError(
            f"{what}: missing {_listed(err.missing)}, unexpected {_listed(err.unexpected)}, "
            f"mis-shaped {_listed(mismatched)}",
            path=path,
            missing=err.missing,
            unexpected=err.unexpected,
            mismatched=mismatched,
        ) from None


def convert_mvdream_state_dict(
    state: Mapping[str, Tensor],
    original_config: Mapping[str, Any] = SD21_MVDREAM_LDM_CONFIG,
    image_size: int = 32,
    *,
    path: str | os.PathLike[str] | None = None,
) -> ConvertedMVDream:
    """Convert an MVDream LDM state dict to diffusers/transformers state dicts.

    Args:
        state: the checkpoint, LDM key names (tensors may be on any device, ``meta`` included).
            The converted dicts share storage with it (no copies, except the text tower's
            split q/k/v projections).
        original_config: the LDM config (:data:`SD21_MVDREAM_LDM_CONFIG`).
        image_size: latent side of the UNet (32 for 256x256 views).
        path: the file, for error messages.

    Returns:
        the converted dicts. The VAE / text parts are None when the checkpoint has no
        ``first_stage_model.*`` / ``cond_stage_model.*`` keys.

    Raises:
        CheckpointFormatError: a value is not a tensor.
        CheckpointMismatchError: a key is neither converted nor deliberately ignored, or a
            converted dict does not match its model exactly (missing, unexpected, mis-shaped).
    """
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointFormatError(f"entries {bad[:5]} of the state dict are not tensors")
    # Fresh tensor objects over the same storage: identity then names the source of every
    # converted tensor even if the caller's dict holds views or the same tensor twice.
    src = {k: v.detach() for k, v in state.items()}
    groups: dict[str, dict[str, Tensor]] = {UNET_PREFIX: {}, VAE_PREFIX: {}, TEXT_PREFIX: {}}
    ignored: list[str] = []
    leftover: list[str] = []
    for key, value in src.items():
        if key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES):
            ignored.append(key)
            continue
        prefix = next((p for p in groups if key.startswith(p)), None)
        if prefix is None:
            leftover.append(key)
        else:
            groups[prefix][key] = value
    if not groups[UNET_PREFIX]:
        raise CheckpointMismatchError(
            f"no {UNET_PREFIX}* keys: not an MVDream LDM checkpoint (first keys {list(state)[:5]})",
            path=path,
        )

    unet_config = mvdream_unet_config(original_config, image_size)
    unet, unet_origin, unused = _convert_unet(groups[UNET_PREFIX], unet_config, path)
    leftover += unused

    vae_config = vae = vae_origin = None
    if groups[VAE_PREFIX]:
        vae_config = mvdream_vae_config(original_config, image_size)
        vae, vae_origin, unused = _convert_vae(groups[VAE_PREFIX], vae_config, path)
        leftover += unused

    text_config = text = None
    if groups[TEXT_PREFIX]:
        text_config = _text_config(groups[TEXT_PREFIX], original_config, path)
        text_expected = _meta_state(lambda: _build_text(text_config))
        text, dropped, unused = _convert_text(groups[TEXT_PREFIX], text_config, text_expected, path)
        ignored += dropped
        leftover += unused

    where = f" in {path}" if path is not None else ""
    if leftover:
        leftover = sorted(leftover)
        raise CheckpointMismatchError(
            f"MVDream checkpoint{where}: {len(leftover)} key(s) neither converted nor known to "
            f"be unused: {_listed(leftover)}",
            path=path,
            unexpected=leftover,
        )
    _check(
        _meta_state(lambda: _build_unet(unet_config)),
        unet,
        f"converted MVDream UNet{where}",
        path,
        unet_origin,
    )
    if vae is not None:
        _check(
            _meta_state(lambda: _build_vae(vae_config)),
            vae,
            f"converted MVDream VAE{where}",
            path,
            vae_origin,
        )
    if text is not None:
        _check(text_expected, text, f"converted OpenCLIP text tower{where}", path)
    return ConvertedMVDream(
        unet_config=unet_config,
        unet=unet,
        vae_config=vae_config,
        vae=vae,
        text_config=text_config,
        text=text,
        ignored=sorted(ignored),
    )


# ------------------------------------------------------------------------------------ reading
def read_mvdream_state_dict(
    path: str | os.PathLike[str], what: str = "MVDream's sd-v2.1-base-4view.pt"
) -> dict[str, Tensor]:
    """Read a flat ``{name: tensor}`` file: ``.safetensors``, else ``torch.load(weights_only)``.

    A top-level ``{"state_dict": {...}}`` wrapper (Lightning/LDM training files) is unwrapped.

    Raises:
        FileNotFoundError: no such file (the message says what it should be).
        CheckpointFormatError: unreadable, refused by ``weights_only``, or not flat tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: expected {what}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointFormatError(
                f"{path} is not a readable safetensors file: {err}"
            ) from err
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise CheckpointFormatError(
                f"{path} holds objects other than tensors and plain containers, which "
                f"torch.load(weights_only=True) refuses ({first}); re-save its tensors only"
            ) from err
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            raise CheckpointFormatError(f"{path} could not be read as a torch file: {err}") from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{path} holds a {type(obj).__name__}, expected a state dict {{name: tensor}} ({what})"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointFormatError(
            f"{path} is not a flat state dict of tensors: entries {bad[:5]} are not tensors"
        )
    return dict(obj)


# ------------------------------------------------------------------------------------ loading
def _load_strict(
    build: Callable[[], nn.Module],
    state: Mapping[str, Tensor],
    what: str,
    path: str | os.PathLike[str] | None,
    dtype: torch.dtype,
    device: str | torch.device,
) -> Any:
    """Build (parameters on meta: no throw-away random init), check, load strictly, cast."""
    context, on_meta = _empty_weights()
    with context:
        model = build()
    check_state_dict(model.state_dict(), state, what, path)
    # assign=True adopts the checkpoint tensors in place of the meta parameters; strict=True
    # would still catch anything check_state_dict let through.
    model.load_state_dict(dict(state), strict=True, assign=on_meta)
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:  # pragma: no cover - strict loading covers every parameter/persistent buffer
        raise RuntimeError(f"{what}: left uninitialised: {_listed(still_meta)}")
    # nn.Module.to: diffusers' ModelMixin.to warns on every dtype cast, even with nothing to keep
    # in float32; what a model does declare to keep in float32 is honoured here.
    nn.Module.to(model, device=device, dtype=dtype)
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, module in model.named_modules():
        if keep and any(k in name.split(".") for k in keep):
            module.float()
    return model.eval()


def load_mvdream_checkpoint(
    path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    original_config: Mapping[str, Any] = SD21_MVDREAM_LDM_CONFIG,
    image_size: int = 32,
) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    """Load MVDream's LDM checkpoint (``sd-v2.1-base-4view.pt``) onto stock models.

    Args:
        path: the ``.pt`` / ``.ckpt`` / ``.safetensors`` file.
        dtype: cast after strict loading (e.g. ``torch.float16``/``bfloat16`` for inference).
        device: where the models go.
        original_config: the LDM config (:data:`SD21_MVDREAM_LDM_CONFIG`).
        image_size: latent side (32).

    Returns:
        ``(unet, vae, text_encoder)`` in eval mode: ``unet(latents (B*V, 4, 32, 32), t (B*V,),
        encoder_hidden_states (B*V, 77, 1024), class_labels=cameras (B*V, 16))``;
        ``text_encoder(ids (B, 77)).last_hidden_state`` (B, 77, 1024) is MVDream's condition
        (OpenCLIP's penultimate block, then ``ln_final``).

    Raises:
        FileNotFoundError, CheckpointFormatError: see :func:`read_mvdream_state_dict`.
        CheckpointMismatchError: see :func:`convert_mvdream_state_dict`; also when the file
            lacks the VAE or the text tower.
    """
    state = read_mvdream_state_dict(path)
    conv = convert_mvdream_state_dict(state, original_config, image_size, path=path)
    del state
    absent = [
        prefix
        for prefix, part in ((VAE_PREFIX, conv.vae), (TEXT_PREFIX, conv.text))
        if part is None
    ]
    if absent:
        raise CheckpointMismatchError(
            f"{path} has no {' / '.join(p + '*' for p in absent)} weights: not a full MVDream "
            "checkpoint",
            path=path,
            missing=absent,
        )
    unet = _load_strict(
        lambda: _build_unet(conv.unet_config), conv.unet, f"{path}: UNet", path, dtype, device
    )
    vae = _load_strict(
        lambda: _build_vae(conv.vae_config), conv.vae, f"{path}: VAE", path, dtype, device
    )
    text = _load_strict(
        lambda: _build_text(conv.text_config),
        conv.text,
        f"{path}: text encoder",
        path,
        dtype,
        device,
    )
    return unet, vae, text


def _weights_in(folder: Path, stems: Iterable[str], variant: str | None) -> dict[str, Tensor]:
    """Read a model folder's weights: ``<stem>[.variant].safetensors`` / ``.bin``, or shards
    listed in ``<stem>[.variant].<ext>.index.json``."""
    tried = []
    for stem in stems:
        name = stem if variant is None else f"{stem}.{variant}"
        for ext in ("safetensors", "bin"):
            single = folder / f"{name}.{ext}"
            index = folder / f"{name}.{ext}.index.json"
            tried += [single.name, index.name]
            if single.is_file():
                return read_mvdream_state_dict(single, what=f"weights of {folder}")
            if index.is_file():
                weight_map = json.loads(index.read_text())["weight_map"]
                state: dict[str, Tensor] = {}
                for shard in sorted(set(weight_map.values())):
                    state.update(read_mvdream_state_dict(folder / shard, what=f"shard of {index}"))
                absent = sorted(set(weight_map) - set(state))
                if absent:
                    raise CheckpointMismatchError(
                        f"{index}: keys missing from their shards: {_listed(absent)}",
                        path=index,
                        missing=absent,
                    )
                return state
    raise FileNotFoundError(f"{folder} has none of {tried}: expected the model's weights file")


def _port_original_config(unet_config: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The LDM config of a ``MultiViewUNetModel`` folder: its config.json *is* the LDM
    ``unet_config.params`` (minus ``use_linear_in_transformer`` etc., which SD-2.1 fixes)."""
    if unet_config.get("_class_name") == "UNet2DConditionModel":
        raise CheckpointFormatError(
            f"{path} is already a stock UNet2DConditionModel (diffusers names); this loader "
            "expects the MVDream port's MultiViewUNetModel (LDM names)"
        )
    if "model_channels" not in unet_config:
        raise CheckpointFormatError(
            f"{path} is not an MVDream MultiViewUNetModel config (no model_channels)"
        )
    config = copy.deepcopy(SD21_MVDREAM_LDM_CONFIG)
    params = config["model"]["params"]["unet_config"]["params"]
    params.update({k: v for k, v in unet_config.items() if not k.startswith("_")})
    return config


def load_mvdream_diffusers(
    path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    variant: str | None = None,
) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    """Load the diffusers-format port (``ashawkey/mvdream-sd2.1-diffusers``, a local folder).

    ``unet/`` holds ``config.json`` (LDM UNet params, ``_class_name: MultiViewUNetModel``) and
    ``diffusion_pytorch_model.safetensors`` (or ``.bin``) with LDM UNet names, with or without
    the ``model.diffusion_model.`` prefix; it is converted like the LDM checkpoint. ``vae/`` and
    ``text_encoder/`` are stock folders, built from their ``config.json`` and loaded strictly
    (a legacy ``text_model.`` prefix and the saved ``position_ids`` buffer are tolerated).
    Nothing is downloaded.

    Args:
        path: the port's root folder.
        dtype: cast after strict loading.
        device: where the models go.
        variant: weights variant (``"fp16"`` reads ``*.fp16.safetensors``), or None.

    Returns:
        ``(unet, vae, text_encoder)`` as :func:`load_mvdream_checkpoint`.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} does not exist: expected the local folder of the diffusers-format MVDream "
            "port (unet/, vae/, text_encoder/; e.g. ashawkey/mvdream-sd2.1-diffusers)"
        )
    for sub in ("unet", "vae", "text_encoder"):
        if not (root / sub / "config.json").is_file():
            raise FileNotFoundError(f"{root / sub / 'config.json'} does not exist")

    unet_dir = root / "unet"
    port_config = json.loads((unet_dir / "config.json").read_text())
    original_config = _port_original_config(port_config, unet_dir / "config.json")
    raw = _weights_in(unet_dir, ("diffusion_pytorch_model",), variant)
    state = {k if k.startswith(UNET_PREFIX) else UNET_PREFIX + k: v for k, v in raw.items()}
    image_size = int(port_config.get("image_size") or 32)
    conv = convert_mvdream_state_dict(state, original_config, image_size, path=unet_dir)
    unet = _load_strict(
        lambda: _build_unet(conv.unet_config),
        conv.unet,
        f"{unet_dir}: UNet",
        unet_dir,
        dtype,
        device,
    )

    vae_dir = root / "vae"
    vae_config = AutoencoderKL.load_config(str(vae_dir), local_files_only=True)
    vae_state = _weights_in(vae_dir, ("diffusion_pytorch_model",), variant)
    vae = _load_strict(
        lambda: _build_vae(vae_config), vae_state, f"{vae_dir}: VAE", vae_dir, dtype, device
    )

    text_dir = root / "text_encoder"
    text_config = CLIPTextConfig.from_pretrained(str(text_dir), local_files_only=True)
    text_expected = _meta_state(lambda: _build_text(text_config))
    text_raw = _weights_in(text_dir, ("model", "pytorch_model"), variant)
    text_state = _fit_text_prefix(
        {k: v for k, v in text_raw.items() if k not in TEXT_LEGACY_KEYS}, text_expected
    )
    text = _load_strict(
        lambda: _build_text(text_config),
        text_state,
        f"{text_dir}: text encoder",
        text_dir,
        dtype,
        device,
    )
    return unet, vae, text


__all__ = [
    "CAMERA_KEY_MAP",
    "IGNORED_KEYS",
    "IGNORED_PREFIXES",
    "SD21_MVDREAM_LDM_CONFIG",
    "ConvertedMVDream",
    "convert_mvdream_state_dict",
    "load_mvdream_checkpoint",
    "load_mvdream_diffusers",
    "mvdream_scheduler_config",
    "mvdream_unet_config",
    "mvdream_vae_config",
    "read_mvdream_state_dict",
]
