"""Finished DreamFL / SDS runs of training prompts as a generated preference set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dreamreward.data.build_blends import build_blends
from dreamreward.data.build_from_runs import build_from_runs
from dreamreward.data.build_generated import _ranks, prompts_of_splits
from dreamreward.data.preference import PreferenceDataModule
from dreamreward.data.schema import PREFERENCE_FEATURES
from dreamreward.render.export import SCORED_VIEWS, save_image_grid
from dreamreward.world.prompts import describe
from dreamreward.world.scene import Scene

SPLIT = {"val_fraction": 0.1, "test_fraction": 0.2, "split_seed": 0}


def _canonical(prompt: dict[str, str]) -> str:
    return describe(Scene.from_dict(json.loads(prompt["scene"])))


def _fake_run(root: Path, method: str, prompt: str, oracle: float | None, seed: int = 0) -> None:
    folder = root / method / prompt.replace(" ", "_").replace(".", "-") / f"seed{seed}"
    folder.mkdir(parents=True)
    views = torch.rand(4, 16, 16, 3, generator=torch.Generator().manual_seed(len(prompt)))
    save_image_grid(views, folder / SCORED_VIEWS, ncols=4)
    result = {"prompt": prompt, "seed": seed, "method": method, "oracle": oracle}
    (folder / "result.json").write_text(json.dumps(result))
    args = ["--config", "a.yaml", "--config", f"{method}.yaml", "--model.init_args.prompt", prompt]
    (folder / "run_args.json").write_text(json.dumps(args))


def _splits(world_set: str) -> dict[str, list[dict[str, str]]]:
    return {
        s: prompts_of_splits(world_set, [s], SPLIT["val_fraction"], SPLIT["test_fraction"], 0)
        for s in ("train", "test")
    }


def test_runs_become_ranked_rows_of_their_training_prompts(world_set, tmp_path):
    train = _splits(world_set)["train"][:2]
    runs = tmp_path / "runs"
    scores = {"sds": 0.0, "dreamfl": 0.3}
    for prompt in train:
        for method, oracle in scores.items():
            _fake_run(runs, method, _canonical(prompt), oracle)
    out = tmp_path / "from_runs"
    ds = build_from_runs(str(runs), str(out), world_set, exclude=[], **SPLIT)
    assert ds.features == PREFERENCE_FEATURES and len(ds) == 4
    assert set(ds["prompt_id"]) == {p["prompt_id"] for p in train}
    # the set's own prompt text (its paraphrase), so it joins the set as an extra set
    texts = {p["prompt_id"]: p["prompt"] for p in train}
    assert all(
        texts[r["prompt_id"]] == r["prompt"] for r in ds.select_columns(["prompt_id", "prompt"])
    )
    assert set(ds["defect"]) == {"generated/sds", "generated/dreamfl"}
    ranks = {r["asset_id"]: r["rank"] for r in ds.select_columns(["asset_id", "rank"])}
    first = train[0]["prompt_id"]
    assert [ranks[f"{first}-dreamfl-s0"], ranks[f"{first}-sds-s0"]] == _ranks([0.3, 0.0])
    info = json.loads((out / "build_info.json").read_text())
    assert info["oracle_by_asset"][f"{first}-dreamfl-s0"] == 0.3
    assert info["configs_by_method"]["sds"] == ["a.yaml", "sds.yaml"]

    # it joins the preference set, and build-blends takes it as it takes build-generated's
    build_blends(str(out), str(tmp_path / "blends"), progress=False)
    data = PreferenceDataModule(
        world_set,
        val_fraction=0.1,
        test_fraction=0.2,
        image_size=16,
        extra_sets=[str(out), str(tmp_path / "blends")],
    )
    data.setup()
    assert any(p.defect == "generated/sds" for p in data.pairs["train"])
    assert any(p.defect == "blend/0" for p in data.pairs["train"])


def test_held_out_and_excluded_prompts_are_refused(world_set, tmp_path):
    splits = _splits(world_set)
    runs = tmp_path / "runs"
    _fake_run(runs, "sds", _canonical(splits["test"][0]), 0.0)
    with pytest.raises(ValueError, match=r"not in the \['train'\] split"):
        build_from_runs(str(runs), str(tmp_path / "a"), world_set, exclude=[], **SPLIT)

    runs2 = tmp_path / "runs2"
    prompt = _canonical(splits["train"][0])
    _fake_run(runs2, "sds", prompt, 0.0)
    excluded = tmp_path / "eval_prompts.txt"
    excluded.write_text(f"# DreamFL's test prompts\n{prompt}\n")
    with pytest.raises(ValueError, match="excluded: DreamFL's test prompts"):
        build_from_runs(
            str(runs2), str(tmp_path / "b"), world_set, exclude=[str(excluded)], **SPLIT
        )

    with pytest.raises(ValueError, match="no finished runs"):
        build_from_runs(str(tmp_path / "empty"), str(tmp_path / "c"), world_set, **SPLIT)
    runs4 = tmp_path / "runs4"
    _fake_run(runs4, "sds", prompt, 0.0)
    _fake_run(runs4, "sds", prompt + ".", 0.0)  # another wording of the same scene
    with pytest.raises(ValueError, match="a second run of prompt"):
        build_from_runs(str(runs4), str(tmp_path / "e"), world_set, exclude=[], **SPLIT)
    runs5 = tmp_path / "runs5"
    _fake_run(runs5, "sds", prompt, None)  # a free-text run keeps no oracle score
    with pytest.raises(ValueError, match="result.json: no oracle score"):
        build_from_runs(str(runs5), str(tmp_path / "f"), world_set, exclude=[], **SPLIT)
    runs3 = tmp_path / "runs3"
    _fake_run(runs3, "sds", "a photo of a dog", 0.0)
    with pytest.raises(ValueError, match="not a primitives prompt"):
        build_from_runs(str(runs3), str(tmp_path / "d"), world_set, exclude=[], **SPLIT)
