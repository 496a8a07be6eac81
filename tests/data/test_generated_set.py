"""The generated set (prior samples ranked by the oracle) and the evaluation on it."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

import dreamreward.models.mvdiffusion.prior as prior_module
from _reward3d_tiny import tiny_reward
from _tiny_prior import tiny_prior
from dreamreward.data.build_generated import (
    RANK_STEP,
    _ranks,
    build_generated,
    prompts_of_splits,
    source_name,
)
from dreamreward.data.preference import PreferenceDataModule
from dreamreward.data.schema import PREFERENCE_FEATURES, validate_dataset
from dreamreward.evaluate_reward3d import evaluate_reward3d, format_results
from dreamreward.models.reward3d.export import save_reward3d


def test_ranks_bucket_close_scores_into_ties():
    scores = [0.91, 0.94, 0.50, 0.0, 0.01, 1.0]
    ranks = _ranks(scores)
    assert ranks[0] == ranks[1]  # 0.91 and 0.94: the same step of RANK_STEP
    assert ranks[3] == ranks[4]  # two failures
    assert ranks[5] == 1 and ranks[0] == 2 and ranks[2] == 3 and ranks[3] == 4
    assert RANK_STEP == 0.05


def test_prompts_of_splits_follow_the_preference_split(world_set):
    data = PreferenceDataModule(world_set, val_fraction=0.1, test_fraction=0.2, seed=0)
    data.setup()
    prompts = prompts_of_splits(world_set, ["test"], 0.1, 0.2, 0)
    assert [p["prompt_id"] for p in prompts] == sorted(data.split_prompt_ids["test"])
    assert all(p["scene"] for p in prompts)
    with pytest.raises(ValueError, match="unknown split"):
        prompts_of_splits(world_set, ["tset"], 0.1, 0.2, 0)


def test_build_generated_is_resumable_and_in_the_schema(world_set, tmp_path, monkeypatch):
    monkeypatch.setattr(prior_module, "load_prior", lambda path=None: tiny_prior())
    out = tmp_path / "generated"
    kwargs = dict(
        preference_set=world_set,
        splits=["test", "novel"],
        seeds=2,
        guidance_scales=[1.0, 3.0],
        steps=2,
        val_fraction=0.1,
        test_fraction=0.2,
        progress=False,
    )
    ds = build_generated(str(out), **kwargs)
    validate_dataset(ds)
    assert ds.features == PREFERENCE_FEATURES
    prompts = prompts_of_splits(world_set, ["test", "novel"], 0.1, 0.2, 0)
    assert len(ds) == len(prompts) * 2 * 2
    assert set(ds["prompt_id"]) == {p["prompt_id"] for p in prompts}  # held-out prompts only
    assert set(ds["defect"]) == {f"generated/{source_name(g)}" for g in (1.0, 3.0)}
    info = json.loads((out / "build_info.json").read_text())
    scores = info["oracle_by_asset"]
    for prompt_id in set(ds["prompt_id"]):
        columns = ds.select_columns(["prompt_id", "asset_id", "rank"])
        rows = [r for r in columns if r["prompt_id"] == prompt_id]
        assert [r["rank"] for r in rows] == _ranks([scores[r["asset_id"]] for r in rows])

    # Resume: a finished prompt is not redone; a lost one is; the result is the same.
    parts = out.with_name(out.name + ".parts")
    first_part = sorted(parts.glob("p*.json"))[0]
    kept = sorted(parts.glob("p*.json"))[1].stat().st_mtime_ns
    first_part.unlink()
    again = tmp_path / "again"
    parts.rename(again.with_name(again.name + ".parts"))
    resumed = build_generated(str(again), **kwargs)
    assert sorted(again.with_name("again.parts").glob("p*.json"))[1].stat().st_mtime_ns == kept
    assert resumed["asset_id"] == ds["asset_id"] and resumed["rank"] == ds["rank"]
    assert [v.tobytes() for v in resumed[0]["views"]] == [v.tobytes() for v in ds[0]["views"]]

    (tmp_path / "x.parts").mkdir()
    (tmp_path / "x.parts" / "settings.json").write_text(json.dumps({"seeds": 9}))
    with pytest.raises(ValueError, match="other settings"):
        build_generated(str(tmp_path / "x"), **kwargs)
    with pytest.raises(FileExistsError):
        build_generated(str(out), **kwargs)


@pytest.fixture()
def ranked_set(tmp_path, world_set) -> Path:
    """Three assets per prompt with known oracle scores and ranks."""
    source = datasets.load_from_disk(world_set)
    rows = [source[i] for i in range(len(source))]
    scores = {}
    for i, row in enumerate(rows):
        scores[row["asset_id"]] = 1.0 - 0.1 * row["rank"] + 0.001 * i
    path = tmp_path / "ranked"
    source.save_to_disk(str(path))
    (path / "build_info.json").write_text(json.dumps({"oracle_by_asset": scores}))
    return path


@pytest.mark.filterwarnings("ignore:.*are truncated")
def test_evaluate_reward3d_counts_agreement_per_pair(ranked_set, vocab_dir, tmp_path):
    export = tmp_path / "export"
    save_reward3d(tiny_reward(vocab_dir), str(export), {"note": "test"})
    results = evaluate_reward3d(
        str(ranked_set), str(export), out=str(tmp_path / "eval"), progress=False
    )
    trained = results["models"]["reward3d"]
    assert set(results["models"]) == {"reward3d", "zero_shot"}
    assert 0.0 <= trained["agreement"]["mean"] <= 1.0
    assert trained["pairs"] == sum(v["n"] for v in trained["by_source"].values())
    assert -1.0 <= trained["spearman_pooled"] <= 1.0
    table = (tmp_path / "eval" / "reward3d_generated_eval.md").read_text()
    assert "pairwise agreement with the oracle" in table
    assert table == format_results(results)

    # Agreement is the share of pairs the reward orders as the ranks do: check it by hand.
    from dreamreward.data.pairs import build_pairs
    from dreamreward.evaluate_reward3d import score_dataset
    from dreamreward.models.reward3d.export import load_reward3d

    ds = datasets.load_from_disk(str(ranked_set))
    rewards = score_dataset(ds, {"m": load_reward3d(str(export))}, progress=False)["m"]
    pairs = build_pairs(ds)
    by_hand = sum(rewards[p.better] > rewards[p.worse] for p in pairs) / len(pairs)
    assert trained["agreement"]["mean"] == pytest.approx(by_hand)
