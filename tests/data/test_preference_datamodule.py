"""PreferenceDataModule: prompt-disjoint splits, the novel split, batch shapes, bad rows."""

from __future__ import annotations

import datasets
import pytest
import torch

from dreamreward.data.preference import PreferenceDataModule, split_prompts
from dreamreward.data.schema import PREFERENCE_FEATURES, synthetic_rows


def _save(rows: list[dict], path) -> str:
    columns = {name: [r[name] for r in rows] for name in PREFERENCE_FEATURES}
    datasets.Dataset.from_dict(columns, features=PREFERENCE_FEATURES).save_to_disk(str(path))
    return str(path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> str:
    rows = synthetic_rows(num_prompts=12, assets_per_prompt=4, image_size=16, novel_prompts=2)
    return _save(rows, tmp_path_factory.mktemp("pref") / "ds")


def _prompts(dm: PreferenceDataModule, split: str) -> set[str]:
    assert dm.dataset is not None
    ids = dm.dataset["prompt_id"]
    return {ids[i] for p in dm.pairs[split] for i in (p.better, p.worse)}


def test_splits_are_prompt_disjoint_with_separate_novel_split(saved) -> None:
    dm = PreferenceDataModule(saved, val_fraction=0.2, test_fraction=0.2, seed=3, batch_size=4)
    dm.setup("fit")
    splits = dm.split_prompt_ids
    assert [len(splits[s]) for s in ("train", "val", "test", "novel")] == [6, 2, 2, 2]
    assert splits["novel"] == ["p010", "p011"]
    all_ids = [p for s in splits.values() for p in s]
    assert len(all_ids) == len(set(all_ids)) == 12
    for split in ("train", "val", "test", "novel"):
        assert dm.pairs[split], split
        assert _prompts(dm, split) <= set(splits[split])  # pairs never leave their split
    # Deterministic from the seed; another seed gives another split.
    again = PreferenceDataModule(saved, val_fraction=0.2, test_fraction=0.2, seed=3)
    again.setup("fit")
    assert again.split_prompt_ids == splits and again.pairs == dm.pairs
    other = PreferenceDataModule(saved, val_fraction=0.2, test_fraction=0.2, seed=4)
    other.setup("fit")
    assert other.split_prompt_ids["train"] != splits["train"]
    assert other.split_prompt_ids["novel"] == splits["novel"]


def test_batches(saved) -> None:
    dm = PreferenceDataModule(saved, batch_size=3, image_size=8)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["better_views"].shape == (3, 4, 3, 8, 8)
    assert batch["worse_views"].shape == (3, 4, 3, 8, 8)
    assert batch["better_views"].dtype == torch.float32
    assert batch["better_cameras"].shape == batch["worse_cameras"].shape == (3, 4, 4, 4)
    for key in ("prompt", "prompt_id", "defect", "axis"):
        assert isinstance(batch[key], list) and len(batch[key]) == 3, key
    assert all(p.startswith("prompt number ") for p in batch["prompt"])
    assert set(batch["defect"]) <= {"none", "wrong_color"}
    assert set(batch["axis"]) <= {"alignment", "fidelity", "consistency", "none"}
    val = next(iter(dm.val_dataloader()))
    assert val["better_views"].shape[1:] == (4, 3, 8, 8)
    test, novel = dm.test_dataloader()
    assert len(test.dataset) == len(dm.pairs["test"])
    assert len(novel.dataset) == len(dm.pairs["novel"]) > 0
    assert set(next(iter(novel))["prompt_id"]) <= set(dm.split_prompt_ids["novel"])
    # Same seed, same shuffled order.
    again = PreferenceDataModule(saved, batch_size=3, image_size=8)
    again.setup("fit")
    first = next(iter(again.train_dataloader()))
    assert first["prompt_id"] == batch["prompt_id"]
    assert torch.equal(first["better_views"], batch["better_views"])


def test_bad_row_fails_setup_naming_it(tmp_path) -> None:
    rows = synthetic_rows(num_prompts=4, assets_per_prompt=2, image_size=16)
    rows[5]["ratings"]["alignment"] = 7
    dm = PreferenceDataModule(_save(rows, tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"row 5 \(asset_id='p002/1'\): field 'ratings.alignment'"):
        dm.setup("fit")


def test_parquet_and_mixed_sizes(tmp_path) -> None:
    rows = synthetic_rows(num_prompts=4, assets_per_prompt=2, image_size=16)
    rows += synthetic_rows(num_prompts=5, assets_per_prompt=2, image_size=8, seed=1)[8:]
    columns = {name: [r[name] for r in rows] for name in PREFERENCE_FEATURES}
    ds = datasets.Dataset.from_dict(columns, features=PREFERENCE_FEATURES)
    ds.to_parquet(str(tmp_path / "pref.parquet"))
    cache = str(tmp_path / "cache")
    parquet = str(tmp_path / "pref.parquet")
    dm = PreferenceDataModule(parquet, val_fraction=0.2, test_fraction=0, cache_dir=cache)
    with pytest.raises(ValueError, match=r"several sizes \[\(8, 8\), \(16, 16\)\]; set image_size"):
        dm.setup("fit")
    dm = PreferenceDataModule(
        str(tmp_path), image_size=12, val_fraction=0.2, test_fraction=0, cache_dir=cache
    )
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["worse_views"].shape[-2:] == (12, 12)
    test, novel = dm.test_dataloader()  # no test prompts, no novel rows: empty loaders
    assert len(test) == len(novel) == 0


def test_split_prompts_rules() -> None:
    ids = [f"p{i}" for i in range(10)] * 3  # repeated ids count once
    splits = split_prompts(ids, 0.1, 0.2, seed=0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [7, 1, 2]
    assert split_prompts(list(reversed(ids)), 0.1, 0.2, seed=0) == splits  # row order irrelevant
    everything = split_prompts(ids, 0.0, 0.0, seed=0)
    assert sorted(everything["train"]) == sorted(set(ids)) and not everything["val"]
    with pytest.raises(ValueError, match="cannot give 1 val \\+ 1 test"):
        split_prompts(["a", "b"], 0.1, 0.1, seed=0)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        PreferenceDataModule("x", val_fraction=1.0)
    with pytest.raises(ValueError, match="not a dataset saved with save_to_disk"):
        PreferenceDataModule("/nonexistent/dataset").setup()


def _extra_rows(image_size: int = 16, prompts: int = 12, seed: int = 7) -> list[dict]:
    """Another ranking of the same prompts (like ``build-generated``): new asset ids, the
    same prompt ids, texts and compositions."""
    rows = synthetic_rows(
        num_prompts=prompts, assets_per_prompt=3, image_size=image_size, novel_prompts=2,
        seed=seed,
    )  # fmt: skip
    for row in rows:
        row["asset_id"] = "gen-" + row["asset_id"]
        row["defect"] = "generated/prior_cfg1"
    return rows


def test_extra_sets_join_the_main_split_and_never_pair_across_sets(saved, tmp_path) -> None:
    extra = _save(_extra_rows(), tmp_path / "generated")
    alone = PreferenceDataModule(saved, val_fraction=0.2, test_fraction=0.2, seed=3)
    alone.setup("fit")
    both = PreferenceDataModule(
        saved, val_fraction=0.2, test_fraction=0.2, seed=3, extra_sets=[extra], grouping="prompt"
    )
    both.setup("fit")
    assert both.split_prompt_ids == alone.split_prompt_ids  # the split is the main set's
    assert both.dataset is not None and alone.dataset is not None
    n_main = len(alone.dataset)
    assert len(both.dataset) == n_main + 36
    for split in ("train", "val", "test", "novel"):
        main_pairs = [p for p in both.pairs[split] if p.better < n_main]
        assert main_pairs == alone.pairs[split]  # the main set's pairs are unchanged
        extra_pairs = [p for p in both.pairs[split] if p.better >= n_main]
        assert extra_pairs, split
        assert all(p.worse >= n_main for p in extra_pairs)  # no pair crosses the sets
        assert all(p.defect == "generated/prior_cfg1" for p in extra_pairs)
        assert _prompts(both, split) <= set(both.split_prompt_ids[split])
    batch = next(iter(both.train_dataloader()))
    assert any(d.startswith("gen") or d == "generated/prior_cfg1" for d in batch["asset_defect"])


def test_extra_sets_bad_input_is_named(saved, tmp_path) -> None:
    def setup(rows_or_path, **kwargs):
        path = rows_or_path
        if not isinstance(rows_or_path, str):
            path = _save(rows_or_path, tmp_path / f"set{len(list(tmp_path.iterdir()))}")
        PreferenceDataModule(saved, extra_sets=[path], **kwargs).setup("fit")

    with pytest.raises(FileNotFoundError, match=r"extra_sets\[0\] .*no preference set"):
        setup(str(tmp_path / "missing"))
    unknown = _extra_rows(prompts=13)[-3:]  # p012 exists only here
    unknown = [{**r, "composition": "seen"} for r in unknown]
    with pytest.raises(ValueError, match=r"prompt_id 'p012', which .* does not have"):
        setup(unknown)
    renamed = [{**r, "prompt": "another text"} for r in _extra_rows()]
    with pytest.raises(ValueError, match="the prompt 'another text'"):
        setup(renamed)
    reused = [{**r, "asset_id": r["asset_id"].removeprefix("gen-")} for r in _extra_rows()]
    with pytest.raises(ValueError, match="is already used"):
        setup(reused)
    with pytest.raises(ValueError, match=r"extra_sets\[0\] .*views of size \[\(8, 8\)\]"):
        setup(_extra_rows(image_size=8))
    setup(_extra_rows(image_size=8), image_size=16)  # resized: accepted
    with pytest.raises(TypeError, match="list of paths"):
        PreferenceDataModule(saved, extra_sets="data/generated_train")


def test_train_prompts_keeps_nested_training_subsets_and_the_held_out_splits(saved, tmp_path):
    extra = _save(_extra_rows(), tmp_path / "generated")

    def setup(train_prompts):
        dm = PreferenceDataModule(
            saved, val_fraction=0.2, test_fraction=0.2, seed=3, extra_sets=[extra],
            train_prompts=train_prompts,
        )  # fmt: skip
        dm.setup("fit")
        return dm

    full, two, four = setup(None), setup(2), setup(4)
    assert len(full.split_prompt_ids["train"]) == 6
    assert two.split_prompt_ids["train"] == full.split_prompt_ids["train"][:2]
    assert set(two.split_prompt_ids["train"]) < set(four.split_prompt_ids["train"])  # nested
    for split in ("val", "test", "novel"):
        assert two.split_prompt_ids[split] == full.split_prompt_ids[split]
        assert two.pairs[split] == full.pairs[split]
    kept = set(two.split_prompt_ids["train"])
    assert two.pairs["train"] == [p for p in full.pairs["train"] if p.prompt_id in kept]
    assert any(p.defect.startswith("generated") for p in two.pairs["train"])  # extra set too
    with pytest.raises(ValueError, match="train_prompts=7, but .* has only 6 training prompts"):
        setup(7)
    with pytest.raises(ValueError, match="train_prompts must be >= 1"):
        PreferenceDataModule(saved, train_prompts=0)
