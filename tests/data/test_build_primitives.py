"""The primitives preference set builder and its CLI subcommand."""

import json

import datasets
import pytest

from dreamreward.cli import main
from dreamreward.data.build_primitives import build_primitives, generate_rows
from dreamreward.data.pairs import build_pairs
from dreamreward.data.schema import validate_dataset
from dreamreward.world.prompts import is_novel, parse_prompt
from dreamreward.world.scene import Scene


def test_build_is_valid_deterministic_and_ranked(tmp_path):
    ds = build_primitives(
        str(tmp_path / "a"),
        num_prompts=4,
        seed=3,
        image_size=32,
        min_candidates=4,
        max_candidates=5,
        novel_fraction=0.5,
        progress=False,
    )
    summary = validate_dataset(ds, image_size=32)
    assert summary.num_prompts == 4
    again = build_primitives(
        str(tmp_path / "b"),
        num_prompts=4,
        seed=3,
        image_size=32,
        min_candidates=4,
        max_candidates=5,
        novel_fraction=0.5,
        progress=False,
    )
    assert ds["asset_id"] == again["asset_id"] and ds["prompt"] == again["prompt"]
    assert ds[0]["views"][0].tobytes() == again[0]["views"][0].tobytes()
    info = json.loads((tmp_path / "a" / "build_info.json").read_text())
    assert info["assets"] == len(ds) and info["assets_per_second"] > 0
    for row in ds:
        scene = Scene.from_dict(json.loads(row["scene"]))
        assert parse_prompt(row["prompt"]) == scene  # the prompt says what the scene is
        assert (row["composition"] == "novel") == is_novel(scene)
        if row["defect"] == "none":
            assert row["rank"] == 1
    assert build_pairs(ds)  # pairs exist


def test_build_refuses_to_overwrite(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        build_primitives(str(tmp_path / "x"), num_prompts=1, progress=False)


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="num_prompts"):
        next(generate_rows(0))
    with pytest.raises(ValueError, match="min_candidates"):
        next(generate_rows(1, min_candidates=6, max_candidates=5))
    # before any work, not as a generic DatasetGenerationError from inside the generator
    for kw, message in (
        ({"num_prompts": 0}, "--num_prompts must be >= 1"),
        ({"image_size": 0}, "--image_size must be >= 16"),
        ({"two_object_fraction": 1.5}, "--two_object_fraction must be in"),
    ):
        with pytest.raises(ValueError, match=message):
            build_primitives(str(tmp_path / "never"), **{"num_prompts": 1, **kw})
    assert not (tmp_path / "never").exists()


def test_cli_subcommand(tmp_path):
    out = tmp_path / "cli"
    main(
        [
            "build-primitives",
            "--out",
            str(out),
            "--num_prompts",
            "2",
            "--image_size",
            "24",
            "--min_candidates",
            "4",
            "--max_candidates",
            "4",
            "--progress",
            "false",
        ]
    )
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 8


def test_splits_share_no_scene_and_training_never_sees_novel_compositions(tmp_path):
    from dreamreward.data.build_primitives import scene_key
    from dreamreward.data.preference import PreferenceDataModule

    out = tmp_path / "split"
    ds = build_primitives(
        str(out),
        num_prompts=40,
        seed=5,
        image_size=16,
        min_candidates=4,
        max_candidates=6,
        novel_fraction=0.2,
        progress=False,
    )
    keys = {}
    for row in ds:
        prompt_scene = Scene.from_dict(json.loads(row["scene"]))
        keys.setdefault(row["prompt_id"], scene_key(prompt_scene))
    assert len(set(keys.values())) == len(keys)  # one prompt per scene: no paraphrase leaks

    dm = PreferenceDataModule(str(out), val_fraction=0.2, test_fraction=0.2, seed=0)
    dm.setup("fit")
    by_split = {s: {keys[p] for p in ids} for s, ids in dm.split_prompt_ids.items()}
    names = list(by_split)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not by_split[a] & by_split[b], (a, b)

    # no training-side asset (correct or failure) depicts a held-out composition
    import random

    from dreamreward.world.candidates import make_candidates

    for row in ds:
        if row["composition"] == "seen":
            scene = Scene.from_dict(json.loads(row["scene"]))
            assert not is_novel(scene)
    rng = random.Random(0)
    from dreamreward.world.prompts import sample_scene

    for _ in range(50):
        scene = sample_scene(rng, split="train")
        for cand in make_candidates(scene, "p", 10, rng, allow_novel=False):
            assert not is_novel(cand.scene)
            assert cand.janus_scene is None or not is_novel(cand.janus_scene)


def test_a_row_holds_enough_to_re_render_and_re_judge_its_views(tmp_path):
    import numpy as np
    import torch

    from dreamreward.data.schema import validate_row
    from dreamreward.render.cameras import Cameras
    from dreamreward.world.layout import scene_mesh
    from dreamreward.world.oracle import oracle_score
    from dreamreward.world.views import render_views

    ds = build_primitives(
        str(tmp_path / "r"),
        num_prompts=1,
        seed=2,
        image_size=32,
        min_candidates=4,
        max_candidates=4,
        progress=False,
    )
    row = ds[0]  # the correct asset of prompt 0
    assert row["defect"] == "none"
    c2w = torch.tensor(row["cameras"]).view(4, 4, 4)
    fovy = torch.deg2rad(torch.tensor(row["fovy_deg"]))
    cameras = Cameras(c2w, fovy, 32, 32)
    scene = Scene.from_dict(json.loads(row["scene"]))
    rendered = render_views(scene_mesh(scene)[0], cameras)["rgb"]
    stored = torch.tensor(np.stack([np.asarray(v) for v in row["views"]])).float() / 255
    assert float((rendered - stored).abs().max()) < 2 / 255
    assert oracle_score(stored, scene, cameras).total > 0.9

    bad = dict(row, fovy_deg=[40.0, 40.0, 200.0, 40.0])
    with pytest.raises(ValueError, match="fovy_deg"):
        validate_row(bad, 0)
