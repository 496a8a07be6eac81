"""ImageReward-style pair construction from per-prompt ranks."""

from __future__ import annotations

import datasets
import pytest

from dreamreward.data.pairs import PreferencePair, build_pairs, leading_axis
from dreamreward.data.schema import PREFERENCE_FEATURES, synthetic_rows


def _row(prompt_id: str, rank: int, defect: str = "none", a: int = 3, f: int = 3, c: int = 3):
    ratings = {"alignment": a, "fidelity": f, "consistency": c, "overall": (a + f + c) / 3}
    return {"prompt_id": prompt_id, "rank": rank, "defect": defect, "ratings": ratings}


def test_ties_skipped_and_order() -> None:
    # Row order is deliberately not rank order.
    rows = [
        _row("p", 2, "wrong_color"),
        _row("p", 3, "missing_object"),
        _row("p", 1, "none"),
        _row("p", 2, "wrong_shape"),
    ]
    pairs = build_pairs(rows)
    assert [(p.better, p.worse) for p in pairs] == [(2, 0), (2, 3), (2, 1), (0, 1), (3, 1)]
    assert len(pairs) == 5  # C(4, 2) = 6 minus the one tie
    assert [p.defect for p in pairs] == [
        "wrong_color",
        "wrong_shape",
        "missing_object",
        "missing_object",
        "missing_object",
    ]
    assert all(p.prompt_id == "p" for p in pairs)
    assert build_pairs(list(reversed(rows))) != pairs  # indices follow the input
    assert build_pairs(rows) == pairs  # deterministic


def test_pairs_stay_within_prompts_in_first_appearance_order() -> None:
    rows = [_row("b", 1), _row("a", 1), _row("b", 2), _row("a", 2), _row("a", 3)]
    pairs = build_pairs(rows)
    assert [(p.prompt_id, p.better, p.worse) for p in pairs] == [
        ("b", 0, 2),
        ("a", 1, 3),
        ("a", 1, 4),
        ("a", 3, 4),
    ]


def test_leading_axis() -> None:
    better = {"alignment": 5, "fidelity": 6, "consistency": 4}
    assert leading_axis(better, {"alignment": 4, "fidelity": 3, "consistency": 4}) == "fidelity"
    assert leading_axis(better, {"alignment": 3, "fidelity": 4, "consistency": 4}) == "alignment"
    # The better asset may trail on an axis: only positive leads count.
    assert leading_axis(better, {"alignment": 6, "fidelity": 6, "consistency": 2}) == "consistency"
    assert leading_axis(better, better) == "none"
    pair = build_pairs([_row("p", 1, a=5, c=6), _row("p", 2, "janus", a=5, c=2)])[0]
    assert pair == PreferencePair(0, 1, "p", "janus", "consistency")


def test_dataset_input_matches_rows_and_honours_selection() -> None:
    rows = synthetic_rows(num_prompts=3, assets_per_prompt=4, image_size=8, seed=3)
    columns = {name: [r[name] for r in rows] for name in PREFERENCE_FEATURES}
    ds = datasets.Dataset.from_dict(columns, features=PREFERENCE_FEATURES)
    assert build_pairs(ds) == build_pairs(rows)
    picked = [8, 9, 10, 11]
    assert build_pairs(ds.select(picked)) == build_pairs([rows[i] for i in picked])


def test_missing_field() -> None:
    with pytest.raises(ValueError, match=r"row 0: field 'rank' is missing"):
        build_pairs([{"prompt_id": "p", "defect": "none", "ratings": {}}])
