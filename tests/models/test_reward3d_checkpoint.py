"""Strict loading of official Reward3D / ImageReward checkpoints, tested on tiny random weights.

The official-format state dicts are built here (``to_official_state_dict`` of a randomised model,
saved with ``torch.save``): the real files are 1.8 GB and not available offline. The full-size key
count is checked on the meta device (no weights allocated).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from _reward3d_tiny import tiny, tiny_model
from dreamreward.models.reward3d import (
    CheckpointFormatError,
    CheckpointMismatchError,
    Reward3D,
    detect_checkpoint_kind,
    load_official_checkpoint,
    official_key_map,
    official_keys,
    to_official_state_dict,
)
from dreamreward.models.reward3d.checkpoint import POSITION_IDS_KEY

HEADS = ["scorer", "cross_view_fusion"]
UNUSED = [
    "blip.text_proj.bias",
    "blip.text_proj.weight",
    "blip.vision_proj.bias",
    "blip.vision_proj.weight",
]


def batch():
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(8, 3, 32, 32, generator=gen)
    ids = torch.randint(5, 64, (8, 7), generator=gen)
    mask = torch.ones(8, 7, dtype=torch.long)
    mask[:, 5:] = 0
    return images, ids, mask


def save(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def official_file(tmp_path: Path, head: str, seed: int = 0, name: str | None = None) -> Path:
    state = to_official_state_dict(tiny(head, seed), include_unused=True)
    return save(state, tmp_path / (name or f"Reward3D_{head}.pt"))


# ------------------------------------------------------------------------------- key counts
@pytest.mark.parametrize("head", HEADS)
def test_full_size_key_count_is_631(head):
    with torch.device("meta"):
        model = Reward3D(head=head)
    keys = official_keys(model)
    assert len(keys) == len(set(keys)) == 631
    assert POSITION_IDS_KEY in keys and set(UNUSED) <= set(keys)
    head_prefix = "Scorer." if head == "scorer" else "cross_view_adapter."
    head_keys = [k for k in keys if k.startswith(head_prefix)]
    assert len(head_keys) == 6
    assert len(keys) - len(head_keys) == 625  # what ImageReward.pt holds
    assert sum(k.startswith("blip.visual_encoder.") for k in keys) == 294
    assert sum(k.startswith("blip.text_encoder.") for k in keys) == 317
    assert sorted(k for k in keys if k.startswith("mlp.")) == sorted(
        f"mlp.layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")
    )
    state = model.state_dict()
    key_map = official_key_map(model)
    cross_k = state[key_map["blip.text_encoder.encoder.layer.11.crossattention.self.key.weight"]]
    assert cross_k.shape == (768, 1024)
    pos = state[key_map[POSITION_IDS_KEY]]
    assert pos.shape == (1, 512) and pos.dtype == torch.int64
    assert state[key_map["blip.visual_encoder.pos_embed"]].shape == (1, 197, 1024)


def test_key_map_examples():
    model = tiny_model("cross_view_fusion")
    key_map = official_key_map(model)
    assert key_map["cross_view_adapter.self_attn.in_proj_weight"] == "head.self_attn.in_proj_weight"
    assert key_map["cross_view_adapter.fusion_gate.0.weight"] == "head.fusion_gate.0.weight"
    assert key_map["mlp.layers.7.bias"] == "head.mlp.layers.7.bias"
    assert (
        key_map["blip.visual_encoder.blocks.1.attn.qkv.weight"]
        == "backbone.visual_encoder.blocks.1.attn.qkv.weight"
    )
    scorer_map = official_key_map(tiny_model("scorer"))
    assert scorer_map["Scorer.fc3.weight"] == "head.fc3.weight"


# ------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("head", HEADS)
def test_round_trip_gives_identical_outputs(tmp_path, head):
    source = tiny(head, seed=0)
    path = save(to_official_state_dict(source, include_unused=True), tmp_path / "ckpt.pt")
    target = tiny(head, seed=1)
    with torch.no_grad():
        before = target(*batch())
        report = load_official_checkpoint(target, path)
        after, expected = target(*batch()), source(*batch())
    assert not torch.allclose(before, expected)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    assert report.kind == head and report.loaded == len(source.state_dict())
    assert sorted(report.unused_keys) == UNUSED
    assert report.defaulted_keys == () and report.initialised_keys == ()
    assert detect_checkpoint_kind(torch.load(path, weights_only=True)) == head


def test_absent_position_ids_is_defaulted_and_reported(tmp_path):
    state = to_official_state_dict(tiny("scorer", 0))
    del state[POSITION_IDS_KEY]
    report = load_official_checkpoint(tiny("scorer", 1), save(state, tmp_path / "noids.pt"))
    assert report.defaulted_keys == (POSITION_IDS_KEY,) and report.unused_keys == ()


# -------------------------------------------------------------------------------- mismatches
def _mismatch(tmp_path, mutate, head="scorer", **kwargs) -> CheckpointMismatchError:
    state = to_official_state_dict(tiny(head, 0), include_unused=True)
    mutate(state)
    path = save(state, tmp_path / "bad_ckpt.pt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_official_checkpoint(tiny("scorer", 1), path, **kwargs)
    assert "bad_ckpt.pt" in str(info.value) and info.value.path == str(path)
    return info.value


def test_missing_key_is_named(tmp_path):
    key = "blip.visual_encoder.blocks.0.attn.qkv.weight"
    err = _mismatch(tmp_path, lambda s: s.pop(key))
    assert key in str(err) and err.missing == (key,) and "missing keys" in str(err)


def test_unexpected_key_is_named(tmp_path):
    key = "blip.text_encoder.pooler.dense.weight"
    err = _mismatch(tmp_path, lambda s: s.__setitem__(key, torch.zeros(32, 32)))
    assert key in str(err) and err.unexpected == (key,)


def test_wrong_shape_is_named(tmp_path):
    key = "mlp.layers.0.weight"
    err = _mismatch(tmp_path, lambda s: s.__setitem__(key, torch.zeros(17, 32)))
    assert key in str(err) and "(17, 32)" in str(err) and "(16, 32)" in str(err)
    assert len(err.mismatched) == 1


def test_wrong_unused_projection_shape_is_named(tmp_path):
    key = "blip.vision_proj.weight"
    err = _mismatch(tmp_path, lambda s: s.__setitem__(key, torch.zeros(256, 99)))
    assert key in str(err)


def test_wrong_kind_is_refused(tmp_path):
    err = _mismatch(tmp_path, lambda s: None, head="cross_view_fusion")
    message = str(err)
    assert "'cross_view_fusion'" in message and "head is 'scorer'" in message
    assert "cross_view_adapter.fusion_gate.0.bias" in message


def test_not_a_reward_checkpoint(tmp_path):
    path = save({"model.diffusion_model.x": torch.zeros(1)}, tmp_path / "unet.pt")
    with pytest.raises(CheckpointMismatchError, match="neither a Reward3D nor an ImageReward"):
        load_official_checkpoint(tiny("scorer", 0), path)


def test_imagereward_checkpoint_needs_opt_in_and_reports_untrained_head(tmp_path):
    source = tiny("scorer", 0)
    state = to_official_state_dict(source, include_unused=True)
    state = {k: v for k, v in state.items() if not k.startswith("Scorer.")}  # = ImageReward.pt
    path = save(state, tmp_path / "ImageReward.pt")
    target = tiny("scorer", 1)
    with pytest.raises(CheckpointMismatchError, match="ImageReward.pt.*allow_imagereward_init"):
        load_official_checkpoint(target, path)
    report = load_official_checkpoint(target, path, allow_imagereward_init=True)
    assert report.kind == "imagereward"
    assert report.initialised_keys == tuple(
        sorted(f"head.fc{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias"))
    )
    for key, value in source.state_dict().items():
        if not key.startswith("head.fc"):
            assert torch.equal(target.state_dict()[key], value), key
    fusion = tiny("cross_view_fusion", 2)  # ImageReward.pt initialises either head's backbone
    report = load_official_checkpoint(fusion, path, allow_imagereward_init=True)
    assert all(
        k.startswith(("head.self_attn", "head.fusion_gate")) for k in report.initialised_keys
    )


# --------------------------------------------------------------------------------- file format
class NotATensor:
    """A custom class: weights_only unpickling must refuse it."""

    def __init__(self) -> None:
        self.payload = 1


def test_custom_class_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"mlp.layers.0.weight": torch.zeros(2), "extra": NotATensor()}, path)
    with pytest.raises(CheckpointFormatError, match="evil.pt.*weights_only.*NotATensor") as info:
        load_official_checkpoint(tiny("scorer", 0), path)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)


def test_nested_training_checkpoint_is_refused_with_hint(tmp_path):
    state = to_official_state_dict(tiny("scorer", 0))
    path = save({"state_dict": state, "epoch": torch.tensor(3)}, tmp_path / "lightning.ckpt")
    with pytest.raises(CheckpointFormatError, match="'state_dict' is itself a dict"):
        load_official_checkpoint(tiny("scorer", 1), path)
    with pytest.raises(CheckpointFormatError, match="holds a Tensor"):
        load_official_checkpoint(tiny("scorer", 1), save(torch.zeros(3), tmp_path / "t.pt"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_official_checkpoint(tiny("scorer", 1), tmp_path / "absent.pt")
