"""Relation-balanced pair weights: a prompt-blind rule earns a coin; loss and batches use them."""

from __future__ import annotations

import json

import datasets
import pytest
import torch

from _reward3d_tiny import tiny_reward
from dreamreward.data.pair_balance import (
    balance_relation_classes,
    relation_class,
    weigh_defects,
)
from dreamreward.data.pairs import PreferencePair
from dreamreward.data.preference import PreferenceDataModule, pairs_as_asset_batch
from dreamreward.data.schema import PREFERENCE_FEATURES, synthetic_rows
from dreamreward.modules.preference_metrics import pairwise_logistic_loss
from dreamreward.modules.reward3d import Reward3DModule

STACKED = json.dumps(
    {
        "objects": [
            {"shape": "cube", "color": "red", "size": "medium"},
            {"shape": "sphere", "color": "blue", "size": "medium"},
        ],
        "relation": "on top of",
    }
)
SIDE_BY_SIDE = STACKED.replace("on top of", "next to")
ONE_OBJECT = json.dumps(
    {"objects": [{"shape": "cube", "color": "red", "size": "medium"}], "relation": None}
)


def test_relation_class() -> None:
    assert relation_class(STACKED) == "vertical"
    assert relation_class(SIDE_BY_SIDE) == "horizontal"
    assert relation_class(ONE_OBJECT) is None
    assert relation_class("") is None and relation_class(None) is None


def _pairs(vertical: int, horizontal: int) -> tuple[list[PreferencePair], list[str]]:
    """Wrong-relation pairs of ``vertical`` stacked and ``horizontal`` side-by-side prompts,
    plus one wrong-colour pair; row 2k is the correct asset of pair k, row 2k+1 the worse."""
    pairs, scenes = [], []
    for k, scene in enumerate([STACKED] * vertical + [SIDE_BY_SIDE] * horizontal + [STACKED]):
        defect = "wrong_relation" if k < vertical + horizontal else "wrong_color"
        pairs.append(PreferencePair(2 * k, 2 * k + 1, f"p{k}", defect, "alignment"))
        scenes += [scene, scene]
    return pairs, scenes


def test_classes_weigh_alike_and_the_total_is_kept() -> None:
    pairs, scenes = _pairs(vertical=1, horizontal=3)
    weighted = balance_relation_classes(pairs, scenes)
    weights = [p.weight for p in weighted]
    assert weights == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3, 1.0])
    assert sum(weights[:4]) == pytest.approx(4.0)  # the wrong-relation pairs' total
    # Everything but the weight is unchanged.
    assert [(p.better, p.worse, p.defect) for p in weighted] == [
        (p.better, p.worse, p.defect) for p in pairs
    ]
    # A judge that always prefers the side-by-side asset, whatever the prompt says, is right on
    # 3 of 4 pairs unweighted and on exactly half the weight once balanced.
    right = [scenes[p.better] == SIDE_BY_SIDE for p in weighted[:4]]
    assert sum(right) / 4 == 0.75
    assert sum(w for w, ok in zip(weights[:4], right, strict=True) if ok) / 4 == 0.5


def test_one_class_alone_changes_nothing() -> None:
    pairs, scenes = _pairs(vertical=0, horizontal=3)
    assert balance_relation_classes(pairs, scenes) == pairs


def test_defect_weights_multiply_and_bad_ones_are_named() -> None:
    pairs, scenes = _pairs(vertical=1, horizontal=3)
    weighted = weigh_defects(balance_relation_classes(pairs, scenes), {"wrong_relation": 4.0})
    assert [p.weight for p in weighted] == pytest.approx([8.0, 8 / 3, 8 / 3, 8 / 3, 1.0])
    assert [p.weight for p in weigh_defects(pairs, {"wrong_color": 0.5})] == [1, 1, 1, 1, 0.5]
    with pytest.raises(ValueError, match="'wrong_colour', which no training pair has"):
        weigh_defects(pairs, {"wrong_colour": 2.0})
    with pytest.raises(ValueError, match=r"defect_weights\['wrong_color'\] must be positive"):
        weigh_defects(pairs, {"wrong_color": 0.0})


def test_weighted_loss() -> None:
    better, worse = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    plain = pairwise_logistic_loss(better, worse)
    torch.testing.assert_close(pairwise_logistic_loss(better, worse, torch.ones(3)), plain)
    # A zero weight drops the pair; weights scale as a weighted mean.
    torch.testing.assert_close(
        pairwise_logistic_loss(better, worse, torch.tensor([1.0, 0.0, 1.0])),
        pairwise_logistic_loss(better[[0, 2]], worse[[0, 2]]),
    )
    torch.testing.assert_close(
        pairwise_logistic_loss(better, worse, torch.tensor([2.0, 2.0, 2.0])), plain
    )


@pytest.fixture(scope="module")
def relation_set(tmp_path_factory) -> str:
    """12 prompts of 4 assets: the best correct, the others wrong relations; prompts 0-3
    stacked, the rest side by side."""
    rows = synthetic_rows(num_prompts=12, assets_per_prompt=4, image_size=16)
    for row in rows:
        k = int(row["prompt_id"][1:])
        row["scene"] = STACKED if k < 4 else SIDE_BY_SIDE
        row["defect"] = "none" if row["rank"] == 1 else "wrong_relation"
    columns = {name: [r[name] for r in rows] for name in PREFERENCE_FEATURES}
    path = tmp_path_factory.mktemp("relation_pref") / "ds"
    datasets.Dataset.from_dict(columns, features=PREFERENCE_FEATURES).save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize("grouping", ["pair", "prompt"])
def test_training_batches_carry_the_weights_and_evaluation_does_not(grouping, relation_set):
    def setup(balance: bool) -> PreferenceDataModule:
        dm = PreferenceDataModule(
            relation_set,
            val_fraction=0.2,
            test_fraction=0.2,
            batch_size=100,
            grouping=grouping,
            balance_relation_classes=balance,
        )
        dm.setup("fit")
        return dm

    plain, balanced = setup(False), setup(True)
    assert [p.weight for p in plain.pairs["train"]] == [1.0] * len(plain.pairs["train"])
    scenes = balanced.dataset["scene"]
    weights = {relation_class(scenes[p.better]): p.weight for p in balanced.pairs["train"]}
    assert weights["vertical"] > 1.0 > weights["horizontal"]
    total = sum(p.weight for p in balanced.pairs["train"])
    assert total == pytest.approx(len(balanced.pairs["train"]))
    batch = pairs_as_asset_batch(next(iter(balanced.train_dataloader())))
    assert batch["pair_weight"].shape == batch["better_index"].shape
    assert sorted(batch["pair_weight"].tolist()) == pytest.approx(
        sorted(p.weight for p in balanced.pairs["train"])
    )
    heavier = PreferenceDataModule(
        relation_set,
        val_fraction=0.2,
        test_fraction=0.2,
        grouping=grouping,
        balance_relation_classes=True,
        defect_weights={"wrong_relation": 3.0},
    )
    heavier.setup("fit")
    assert [p.weight for p in heavier.pairs["train"]] == pytest.approx(
        [3 * p.weight for p in balanced.pairs["train"]]
    )
    assert [p.weight for p in heavier.pairs["val"]] == [1.0] * len(heavier.pairs["val"])
    for loader in (balanced.val_dataloader(), *balanced.test_dataloader()):
        for eval_batch in loader:
            assert torch.equal(
                eval_batch["pair_weight"], torch.ones_like(eval_batch["pair_weight"])
            )


@pytest.mark.filterwarnings("ignore:You are trying to .self.log")
def test_the_training_step_weighs_its_pairs(relation_set, vocab_dir) -> None:
    dm = PreferenceDataModule(
        relation_set, val_fraction=0.2, test_fraction=0.2, batch_size=100, grouping="prompt"
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    module = Reward3DModule(tiny_reward(vocab_dir), finetune="full", baselines=False).eval()
    with torch.no_grad():
        r = module(batch)["reward3d"]
        plain = module.training_step(batch, 0)
        weights = torch.rand(len(batch["better_index"])) + 0.1
        weighted = module.training_step({**batch, "pair_weight": weights}, 0)
    better, worse = batch["better_index"], batch["worse_index"]
    torch.testing.assert_close(plain, pairwise_logistic_loss(r[better], r[worse]))
    torch.testing.assert_close(weighted, pairwise_logistic_loss(r[better], r[worse], weights))
    assert not torch.isclose(plain, weighted)


def test_balancing_that_changes_nothing_says_so(tmp_path) -> None:
    rows = synthetic_rows(num_prompts=8, assets_per_prompt=3, image_size=16)
    for row in rows:  # side-by-side prompts only: nothing to balance against
        row["scene"] = SIDE_BY_SIDE
        row["defect"] = "none" if row["rank"] == 1 else "wrong_relation"
    columns = {name: [r[name] for r in rows] for name in PREFERENCE_FEATURES}
    datasets.Dataset.from_dict(columns, features=PREFERENCE_FEATURES).save_to_disk(
        str(tmp_path / "ds")
    )
    dm = PreferenceDataModule(str(tmp_path / "ds"), balance_relation_classes=True)
    with pytest.warns(UserWarning, match="balance_relation_classes changed nothing"):
        dm.setup("fit")
    bad = PreferenceDataModule(str(tmp_path / "ds"), defect_weights={"wrong_relatoin": 2.0})
    with pytest.raises(ValueError, match="'wrong_relatoin', which no training pair has"):
        bad.setup("fit")
