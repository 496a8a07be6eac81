"""The preference schema: round trip through disk, and row/dataset validation errors."""

from __future__ import annotations

import copy

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from dreamreward.data.schema import (
    NUM_VIEWS,
    PREFERENCE_FEATURES,
    cameras_to_tensor,
    conform_dataset,
    synthetic_rows,
    validate_dataset,
    validate_row,
    views_to_tensor,
)


def _columns(rows: list[dict]) -> dict[str, list]:
    return {name: [r[name] for r in rows] for name in PREFERENCE_FEATURES}


def _dataset(rows: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(_columns(rows), features=PREFERENCE_FEATURES)


def test_round_trip_through_disk(tmp_path) -> None:
    rows = synthetic_rows(num_prompts=2, assets_per_prompt=3, image_size=16, seed=1)
    _dataset(rows).save_to_disk(str(tmp_path / "ds"))
    loaded = datasets.load_from_disk(str(tmp_path / "ds"))
    assert loaded.features == PREFERENCE_FEATURES
    assert len(loaded) == len(rows)
    for original, row in zip(rows, loaded, strict=True):
        for name in ("prompt_id", "prompt", "asset_id", "rank", "defect", "scene", "composition"):
            assert row[name] == original[name]
        assert row["ratings"]["alignment"] == original["ratings"]["alignment"]
        assert row["ratings"]["overall"] == pytest.approx(original["ratings"]["overall"])
        np.testing.assert_allclose(row["cameras"], original["cameras"], rtol=0, atol=1e-6)
        assert len(row["views"]) == NUM_VIEWS
        for a, b in zip(row["views"], original["views"], strict=True):
            assert a.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    summary = validate_dataset(loaded, image_size=16)
    assert (summary.num_rows, summary.num_prompts, summary.image_sizes) == (6, 2, {(16, 16)})


def test_views_and_cameras_to_tensor() -> None:
    row = synthetic_rows(num_prompts=1, assets_per_prompt=1, image_size=16)[0]
    views = views_to_tensor(row["views"])
    assert views.shape == (4, 3, 16, 16) and views.dtype == torch.float32
    assert float(views.min()) >= 0.0 and float(views.max()) <= 1.0
    assert torch.equal(views[0].permute(1, 2, 0), torch.from_numpy(np.array(row["views"][0])) / 255)
    assert views_to_tensor(row["views"], size=8).shape == (4, 3, 8, 8)
    c2w = cameras_to_tensor(row["cameras"])
    assert c2w.shape == (4, 4, 4)
    torch.testing.assert_close(c2w[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(4, 4))


def _corrupt(mutate) -> dict:
    row = copy.deepcopy(synthetic_rows(num_prompts=1, assets_per_prompt=1, image_size=16)[0])
    mutate(row)
    return row


def _gray(row: dict) -> None:
    row["views"][1] = row["views"][1].convert("L")


def _nan_camera(row: dict) -> None:
    row["cameras"][0][3] = float("nan")


def _column_major(row: dict) -> None:
    row["cameras"] = [np.asarray(c).reshape(4, 4).T.reshape(16).tolist() for c in row["cameras"]]


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda r: r["views"].pop(), "views", "missing views"),
        (lambda r: r["views"].append(r["views"][0]), "views", "extra views"),
        (lambda r: r["views"].__setitem__(2, None), "views", "views[2] is missing"),
        (lambda r: r["views"].__setitem__(3, Image.new("RGB", (8, 8))), "views", "differ"),
        (_gray, "views", "mode 'L'"),
        (lambda r: r["cameras"].pop(), "cameras", "shape (3, 16)"),
        (_nan_camera, "cameras", "NaN"),
        (_column_major, "cameras", "column-major"),
        (lambda r: r["ratings"].__setitem__("fidelity", 7), "ratings.fidelity", "outside 1-6"),
        (lambda r: r["ratings"].pop("consistency"), "ratings.consistency", "missing"),
        (lambda r: r["ratings"].__setitem__("overall", 0.5), "ratings.overall", "outside"),
        (lambda r: r.__setitem__("rank", 0), "rank", ">= 1"),
        (lambda r: r.__setitem__("composition", "unseen"), "composition", "'unseen'"),
        (lambda r: r.pop("prompt"), "prompt", "missing"),
        (lambda r: r.__setitem__("scene", "{not json"), "scene", "JSON"),
    ],
)
def test_validate_row_names_row_and_field(mutate, field, words) -> None:
    row = _corrupt(mutate)
    with pytest.raises(ValueError) as err:
        validate_row(row, index=7)
    message = str(err.value)
    assert message.startswith("row 7 (asset_id='p000/0')"), message
    assert f"field '{field}'" in message and words in message, message


def test_validate_row_image_size() -> None:
    row = _corrupt(lambda r: None)
    validate_row(row, 0, image_size=16)
    with pytest.raises(ValueError, match=r"row 0 .*'views'.*16x16, expected 32x32"):
        validate_row(row, 0, image_size=32)


def test_validate_dataset_names_first_bad_row() -> None:
    rows = synthetic_rows(num_prompts=2, assets_per_prompt=2, image_size=16)
    rows[2]["views"] = rows[2]["views"][:3]  # variable-length lists let the bad row be stored
    rows[3]["ratings"]["alignment"] = 7
    with pytest.raises(ValueError, match=r"^row 2 \(asset_id='p001/0'\): field 'views': missing"):
        validate_dataset(_dataset(rows))
    rows = synthetic_rows(num_prompts=2, assets_per_prompt=2, image_size=16)
    rows[3]["asset_id"] = rows[0]["asset_id"]
    with pytest.raises(ValueError, match=r"row 3 .*'asset_id': duplicate of row 0"):
        validate_dataset(_dataset(rows))
    rows = synthetic_rows(num_prompts=2, assets_per_prompt=2, image_size=16)
    rows[1]["composition"] = "novel"
    with pytest.raises(ValueError, match=r"row 1 .*'composition'.*one split"):
        validate_dataset(_dataset(rows))


def test_validate_dataset_respects_selection() -> None:
    rows = synthetic_rows(num_prompts=2, assets_per_prompt=2, image_size=16)
    rows[0]["rank"] = 0
    ds = _dataset(rows)
    assert validate_dataset(ds.select([1, 2, 3])).num_rows == 3
    with pytest.raises(ValueError, match="row 1 .*'rank'"):
        validate_dataset(ds.select([1, 0]))


def test_conform_casts_plain_types_and_reports_missing_columns() -> None:
    rows = synthetic_rows(num_prompts=1, assets_per_prompt=2, image_size=16)
    plain = _columns(rows)
    plain["extra"] = ["x", "y"]
    ds = conform_dataset(datasets.Dataset.from_dict(plain))  # int64 ratings, inferred types
    assert ds.features == PREFERENCE_FEATURES
    validate_dataset(ds)
    del plain["rank"]
    with pytest.raises(ValueError, match=r"lacks the preference-schema column\(s\) \['rank'\]"):
        conform_dataset(datasets.Dataset.from_dict(plain))


def test_a_row_that_cannot_be_cast_is_named():
    import datasets

    from dreamreward.data.schema import conform_dataset, synthetic_rows

    rows = list(synthetic_rows(2, 3, 16, 0, 0))
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    columns["ratings"][2] = {"alignment": 3.5, "fidelity": 4, "consistency": 4, "overall": 4.0}
    with pytest.raises(ValueError, match=r"row 2 .*ratings\.alignment"):
        conform_dataset(datasets.Dataset.from_dict(columns))
