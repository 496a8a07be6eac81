"""Training-only preference sets of other prompts (``PreferenceDataModule(train_sets=...)``):
their pairs join the training split only, nothing of an evaluation leaks in, bad input is named."""

from __future__ import annotations

import json

import pytest

from dreamreward.data.build_primitives import build_primitives
from dreamreward.data.preference import PreferenceDataModule
from dreamreward.data.train_sets import prompt_keys, train_set_pairs, visual_scene_key

CONTENT = ["wrong_color", "swapped_attributes", "wrong_relation"]


def _build(path, num_prompts: int, seed: int) -> str:
    build_primitives(
        str(path),
        num_prompts=num_prompts,
        seed=seed,
        image_size=16,
        min_candidates=6,
        max_candidates=8,
        novel_fraction=0.2,
        progress=False,
    )
    return str(path)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("worlds")
    return _build(root / "main", 24, seed=0), _build(root / "second", 40, seed=1)


def _module(main: str, **kwargs) -> PreferenceDataModule:
    dm = PreferenceDataModule(
        main, val_fraction=0.2, test_fraction=0.2, seed=0, grouping="prompt", batch_size=4, **kwargs
    )
    dm.setup("fit")
    return dm


def _scene(relation, *objects) -> str:
    return json.dumps(
        {
            "objects": [{"shape": s, "color": c, "size": z} for s, c, z in objects],
            "relation": relation,
        }
    )


def test_visual_scene_key_ignores_what_the_cameras_cannot_see() -> None:
    red_cube, blue_ball = ("cube", "red", "small"), ("sphere", "blue", "large")
    side = visual_scene_key(_scene("to the left of", red_cube, blue_ball))
    assert side == visual_scene_key(_scene("to the right of", blue_ball, red_cube))
    stacked = visual_scene_key(_scene("on top of", red_cube, blue_ball))
    assert stacked != visual_scene_key(_scene("on top of", blue_ball, red_cube))  # which is on top
    assert stacked != side
    big = visual_scene_key(_scene(None, ("cube", "red", "large")))
    assert big == visual_scene_key(_scene(None, ("cube", "red", "small")))  # size is normalised
    assert big != visual_scene_key(_scene(None, ("cube", "blue", "small")))


def test_train_sets_join_the_training_split_only(worlds) -> None:
    main, second = worlds
    alone = _module(main)
    both = _module(main, train_sets=[second])
    assert both.split_prompt_ids == alone.split_prompt_ids
    for split in ("val", "test", "novel"):
        assert both.pairs[split] == alone.pairs[split]  # evaluations untouched
    n_main = len(alone.dataset)
    main_pairs = [p for p in both.pairs["train"] if p.better < n_main]
    assert main_pairs == alone.pairs["train"]
    added = [p for p in both.pairs["train"] if p.better >= n_main]
    assert added and all(p.worse >= n_main for p in added)  # no pair crosses the sets
    assert all(p.prompt_id.startswith("train_sets[0]/") for p in added)
    # No added prompt shows a held-out scene or a novel composition.
    held = [p for s in ("val", "test", "novel") for p in alone.split_prompt_ids[s]]
    held_keys = prompt_keys(alone.dataset, held)
    rows = both.dataset.select_columns(["scene", "composition", "prompt"])[:]
    for p in added:
        assert visual_scene_key(rows["scene"][p.better]) not in held_keys
        assert rows["composition"][p.better] == "seen"
        assert both._prompts[p.prompt_id] == rows["prompt"][p.better]
    # Batches group by the prefixed ids, so a second-build prompt never merges with a main one
    # of the same id ("p00003" exists in both builds).
    batch = next(iter(both.train_dataloader()))
    assert batch["views"].shape[0] == len(batch["asset_prompt"])
    for pid, prompt in zip(batch["prompt_id"], batch["prompt"], strict=True):
        assert both._prompts[pid] == prompt


def test_train_set_defects_keeps_correct_against_the_named_defects(worlds) -> None:
    main, second = worlds
    alone = _module(main)
    dm = _module(main, train_sets=[second], train_set_defects=CONTENT)
    added = [p for p in dm.pairs["train"] if p.better >= len(alone.dataset)]
    defects = dm.dataset["defect"]
    assert added
    assert all(defects[p.better] == "none" and defects[p.worse] in CONTENT for p in added)
    everything = _module(main, train_sets=[second])
    assert len(everything.pairs["train"]) > len(dm.pairs["train"])


def test_one_build_can_join_twice_with_its_own_defects_each(worlds) -> None:
    """Per-set ``train_set_defects``: the same build, all its pairs and its content pairs again,
    as two sets of prompts (their ids prefixed apart) whose pairs are exactly those of the two
    single-set modules, on the build's rows read once."""
    main, second = worlds
    n_main = len(_module(main).dataset)
    every = _module(main, train_sets=[second])
    content = _module(main, train_sets=[second], train_set_defects=CONTENT)
    both = _module(main, train_sets=[second, second], train_set_defects=[None, CONTENT])

    def added(dm, prefix):
        return sorted(
            (p.prompt_id.split("/", 1)[1], p.better, p.worse)
            for p in dm.pairs["train"]
            if p.prompt_id.startswith(prefix)
        )

    assert len(both.dataset) == len(every.dataset) > n_main  # the second build's rows once
    assert added(both, "train_sets[0]/") == added(every, "train_sets[0]/")
    again = added(both, "train_sets[1]/")
    assert again == added(content, "train_sets[0]/")
    assert len(both.pairs["train"]) == len(every.pairs["train"]) + len(again)
    # A flat list still applies to every set.
    flat = _module(main, train_sets=[second, second], train_set_defects=CONTENT)
    assert len(flat.pairs["train"]) == len(content.pairs["train"]) + len(again)
    # Batches of the second entry read the shared rows under its own prompt ids.
    for pid, prompt in both._prompts.items():
        if pid.startswith("train_sets[1]/"):
            assert prompt == both._prompts["train_sets[0]/" + pid.split("/", 1)[1]]


def test_a_set_holding_the_held_out_prompts_loses_exactly_them(worlds) -> None:
    """The main set given as its own training-only set: every validation, test and novel prompt
    is dropped, and its training prompts are kept."""
    main, _ = worlds
    dm = _module(main)
    held = [p for s in ("val", "test") for p in dm.split_prompt_ids[s]]
    kept = train_set_pairs(
        dm.dataset, "copy", prompt_keys(dm.dataset, held + dm.split_prompt_ids["novel"])
    )
    assert kept.dropped_novel == len(dm.split_prompt_ids["novel"])
    assert kept.dropped_held_out == len(held)
    assert {p.prompt_id for p in kept.pairs} == {f"copy/{p.prompt_id}" for p in dm.pairs["train"]}


def test_train_sets_bad_input_is_named(worlds, tmp_path) -> None:
    main, second = worlds
    with pytest.raises(TypeError, match="train_sets must be a list"):
        PreferenceDataModule(main, train_sets=second)
    with pytest.raises(FileNotFoundError, match=r"train_sets\[0\].*no preference set"):
        _module(main, train_sets=[str(tmp_path / "missing")])
    with pytest.raises(ValueError, match=r"train_sets\[0\].*wrong_colour"):
        _module(main, train_sets=[second], train_set_defects=["wrong_colour"])
    with pytest.raises(ValueError, match="2 per-set entries for 1 train_sets"):
        PreferenceDataModule(main, train_sets=[second], train_set_defects=[None, CONTENT])
    with pytest.raises(TypeError, match=r"train_set_defects\[1\].*string"):
        PreferenceDataModule(
            main, train_sets=[second, second], train_set_defects=[None, "wrong_color"]
        )


def test_data_without_scenes_is_kept_clear_by_prompt_text(tmp_path) -> None:
    """Sets without a scene column (3DRewardDB-style) are compared by prompt text: the second
    set's prompt texts equal the main set's, so only its texts of training prompts remain."""
    import datasets as hf

    from dreamreward.data.schema import PREFERENCE_FEATURES, synthetic_rows

    def save(seed: int, path) -> str:
        rows = synthetic_rows(
            num_prompts=12, assets_per_prompt=3, image_size=16, novel_prompts=0, seed=seed
        )
        columns = {name: [r[name] for r in rows] for name in PREFERENCE_FEATURES}
        hf.Dataset.from_dict(columns, features=PREFERENCE_FEATURES).save_to_disk(str(path))
        return str(path)

    main, other = save(0, tmp_path / "main"), save(5, tmp_path / "other")
    dm = _module(main, train_sets=[other])
    n_main = len(hf.load_from_disk(main))
    added = {p.prompt_id.split("/")[1] for p in dm.pairs["train"] if p.better >= n_main}
    held = {p for s in ("val", "test") for p in dm.split_prompt_ids[s]}
    assert added and not added & held  # same ids and texts in both sets
    assert added <= set(dm.split_prompt_ids["train"])  # (a prompt whose ranks all tie has no pair)
