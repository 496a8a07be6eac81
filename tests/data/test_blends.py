"""Generated samples blended towards the truth (``build-blends``)."""

from __future__ import annotations

import json

import datasets
import pytest
import torch

import dreamreward.models.mvdiffusion.prior as prior_module
from _tiny_prior import tiny_prior
from dreamreward.data.build_blends import blend_label, build_blends, row_cameras, row_views
from dreamreward.data.build_generated import build_generated
from dreamreward.data.pairs import build_pairs
from dreamreward.data.preference import PreferenceDataModule
from dreamreward.data.schema import PREFERENCE_FEATURES
from dreamreward.world.scene import Scene
from dreamreward.world.views import ground_truth_views


@pytest.fixture(scope="module")
def generated_train(world_set, tmp_path_factory) -> str:
    """Tiny-prior samples of the world set's training prompts (2 per prompt)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(prior_module, "load_prior", lambda path=None: tiny_prior())
    out = tmp_path_factory.mktemp("gen") / "generated_train"
    try:
        build_generated(
            str(out),
            preference_set=world_set,
            splits=["train"],
            seeds=1,
            guidance_scales=[1.0, 3.0],
            steps=2,
            val_fraction=0.1,
            test_fraction=0.2,
            progress=False,
        )
    finally:
        patch.undo()
    return str(out)


def test_blends_rank_by_how_far_towards_the_truth(generated_train, tmp_path):
    source = datasets.load_from_disk(generated_train)
    blends = build_blends(
        generated_train, str(tmp_path / "blends"), alphas=[0.0, 0.5], progress=False
    )
    assert blends.features == PREFERENCE_FEATURES
    prompts = set(source["prompt_id"])
    # Per prompt: the truth once (the samples share their cameras), each sample at 0 and 0.5.
    assert len(blends) == len(prompts) + 2 * len(source)
    assert set(blends["defect"]) == {"blend/truth", "blend/0.5", "blend/0"}
    # the truth is named after a source asset: blend sets of two sources never share an id
    truths = [
        a for a, d in zip(blends["asset_id"], blends["defect"], strict=True) if d == "blend/truth"
    ]
    assert all(t.removesuffix("-truth") in set(source["asset_id"]) for t in truths)
    rank = {"blend/truth": 1, "blend/0.5": 2, "blend/0": 3}
    assert all(r["rank"] == rank[r["defect"]] for r in blends.select_columns(["rank", "defect"]))

    first = source[0]
    views = row_views(first)
    truth = ground_truth_views(
        Scene.from_dict(json.loads(first["scene"])), row_cameras(first, *views.shape[1:3])
    )
    by_id = {a: i for i, a in enumerate(blends["asset_id"])}
    stored = blends[by_id[f"{first['asset_id']}-blend0"]]
    assert torch.equal(row_views(stored), views)
    half = row_views(blends[by_id[f"{first['asset_id']}-blend0.5"]])
    assert torch.allclose(half, 0.5 * views + 0.5 * truth.clamp(0, 1), atol=1 / 255)

    # Pairs: the truth beats every blend, 0.5 beats every 0; equal levels never pair.
    pairs = build_pairs(blends)
    per_prompt = 4 + 2 * 2  # the truth vs the 4 others, then 2 halves vs 2 samples
    assert len(pairs) == per_prompt * len(prompts)
    defects = blends["defect"]
    assert all(defects[p.better] != defects[p.worse] for p in pairs)


def test_blends_join_a_preference_set_as_an_extra_set(world_set, generated_train, tmp_path):
    blends = tmp_path / "blends"
    build_blends(generated_train, str(blends), progress=False)
    data = PreferenceDataModule(
        world_set, val_fraction=0.1, test_fraction=0.2, image_size=16, extra_sets=[str(blends)]
    )
    data.setup()
    train_ids = set(data.split_prompt_ids["train"])
    assert data.dataset is not None
    labels = [data.dataset[p.worse]["defect"] for p in data.pairs["train"][-3:]]
    assert all(label.startswith("blend/") for label in labels)
    assert all(p.prompt_id in train_ids for p in data.pairs["train"])
    assert not any(
        data.dataset[p.worse]["defect"].startswith("blend/")
        for split in ("val", "test", "novel")
        for p in data.pairs[split]
    )


def test_blends_refuse_bad_input(generated_train, tmp_path):
    with pytest.raises(ValueError, match=r"alphas must be"):
        build_blends(generated_train, str(tmp_path / "a"), alphas=[0.5, 1.0])
    with pytest.raises(FileNotFoundError, match="no generated set"):
        build_blends(str(tmp_path / "missing"), str(tmp_path / "b"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError):
        build_blends(generated_train, str(tmp_path / "full"))
    (tmp_path / "not_a_set").mkdir()
    with pytest.raises(ValueError, match=r"not_a_set: not a dataset saved with save_to_disk"):
        build_blends(str(tmp_path / "not_a_set"), str(tmp_path / "d"))
    source = datasets.load_from_disk(generated_train)
    no_scene = source.map(lambda row: {"scene": ""})
    no_scene.save_to_disk(str(tmp_path / "no_scene"))
    with pytest.raises(ValueError, match=r"no_scene: asset .*no ground-truth scene"):
        build_blends(str(tmp_path / "no_scene"), str(tmp_path / "c"), max_oracle=None)


def test_blends_leave_out_samples_the_oracle_already_likes(generated_train, tmp_path):
    import shutil

    copy = tmp_path / "generated"
    shutil.copytree(generated_train, copy)
    info = json.loads((copy / "build_info.json").read_text())
    scores = info["oracle_by_asset"]
    assert all(s < 0.5 for s in scores.values())  # the tiny prior's samples are all wrong
    liked = sorted(scores)[0]
    scores[liked] = 0.9
    (copy / "build_info.json").write_text(json.dumps(info))
    blends = build_blends(str(copy), str(tmp_path / "blends"), max_oracle=0.5, progress=False)
    ids = set(blends["asset_id"])
    assert f"{liked}-blend0" not in ids and f"{sorted(scores)[1]}-blend0" in ids
    everyone = build_blends(str(copy), str(tmp_path / "all"), max_oracle=None, progress=False)
    assert f"{liked}-blend0" in set(everyone["asset_id"])
    with pytest.raises(ValueError, match="every sample scores >= max_oracle"):
        build_blends(str(copy), str(tmp_path / "none"), max_oracle=0.0, progress=False)
    (copy / "build_info.json").unlink()
    with pytest.raises(FileNotFoundError, match="build_info.json: missing"):
        build_blends(str(copy), str(tmp_path / "d"), progress=False)


def test_blend_label():
    assert blend_label(1.0) == "blend/truth" and blend_label(0.25) == "blend/0.25"
