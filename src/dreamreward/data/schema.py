"""The one schema of multi-view 3D preference data, and its validation.

One row per 3D asset. Rows that share a ``prompt_id`` are candidates for the same prompt and are
compared through their ``rank`` (1 = best, ties share a rank). Our generated primitives set, the
3DRewardDB loader (:mod:`dreamreward.data.rewarddb`) and a team's own data all use it.

Columns (:data:`PREFERENCE_FEATURES`):

- ``prompt_id`` (str), ``prompt`` (str), ``asset_id`` (str, unique over the dataset).
- ``views``: exactly :data:`NUM_VIEWS` RGB images of one size, in render order: four azimuths
  90 degrees apart (MVDream's cameras; the first azimuth has a random offset in the primitives
  set, so "view 0" is not always the front).
- ``cameras``: 4 x 16 float32, each view's 4x4 camera-to-world flattened row-major in
  :mod:`dreamreward.render.cameras`' convention (Z-up world, OpenGL camera axes looking down -Z);
  the last four values of each row are therefore ``0, 0, 0, 1``.
- ``fovy_deg``: 4 float32, each view's vertical field of view in degrees (with ``cameras`` and
  the image size, enough to re-render the views).
- ``ratings``: ``alignment``, ``fidelity``, ``consistency`` (int8, 1-6) and ``overall``
  (float32 in [1, 6]).
- ``rank`` (int32 >= 1), ``defect`` (str: the failure type of generated data, ``"none"`` for the
  correct asset, ``"unknown"`` for external data), ``scene`` (str: JSON of the ground-truth scene
  for primitives data, ``""`` otherwise), ``composition`` (``"seen"`` or ``"novel"``).

The list lengths (4 views, 4 x 16 cameras) are enforced by :func:`validate_row`, not by the
Arrow type: a fixed-size Arrow list would turn one bad row into an opaque cast error for the
whole table, and plain list columns written by other tools (pandas, pyarrow) would not load.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image
from torch import Tensor

NUM_VIEWS = 4
RATING_AXES: tuple[str, ...] = ("alignment", "fidelity", "consistency")
RATING_MIN, RATING_MAX = 1, 6
COMPOSITIONS: tuple[str, ...] = ("seen", "novel")
UNKNOWN_DEFECT = "unknown"

PREFERENCE_FEATURES = datasets.Features(
    {
        "prompt_id": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "asset_id": datasets.Value("string"),
        "views": datasets.Sequence(datasets.Image()),
        "cameras": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
        "fovy_deg": datasets.Sequence(datasets.Value("float32")),
        "ratings": {
            "alignment": datasets.Value("int8"),
            "fidelity": datasets.Value("int8"),
            "consistency": datasets.Value("int8"),
            "overall": datasets.Value("float32"),
        },
        "rank": datasets.Value("int32"),
        "defect": datasets.Value("string"),
        "scene": datasets.Value("string"),
        "composition": datasets.Value("string"),
    }
)
COLUMNS: tuple[str, ...] = tuple(PREFERENCE_FEATURES)

# Downscaling filter for views (PIL's resize integrates over the source footprint, i.e. it
# antialiases); bicubic as in ImageReward's preprocessing.
RESAMPLE = Image.Resampling.BICUBIC


# --------------------------------------------------------------------------- errors
def _fail(index: int, row: Mapping[str, Any], field_name: str, message: str) -> ValueError:
    asset = row.get("asset_id") if isinstance(row, Mapping) else None
    return ValueError(f"row {index} (asset_id={asset!r}): field {field_name!r}: {message}")


# --------------------------------------------------------------------------- images
def image_header(view: Any) -> tuple[tuple[int, int], str]:
    """((width, height), mode) of a view without decoding its pixels.

    Accepts a PIL image, or the ``{"bytes": ..., "path": ...}`` dict that ``datasets`` stores
    for an undecoded :class:`datasets.Image`.
    """
    if isinstance(view, Image.Image):
        return view.size, view.mode
    if isinstance(view, Mapping):
        data, path = view.get("bytes"), view.get("path")
        source = io.BytesIO(data) if data is not None else path
        if source is None:
            raise ValueError("image has neither bytes nor a path")
        try:
            with Image.open(source) as img:  # reads the header only
                return img.size, img.mode
        except (OSError, Image.UnidentifiedImageError) as err:
            raise ValueError(f"unreadable image ({err})") from err
    raise ValueError(f"expected a PIL image or an encoded image dict, got {type(view).__name__}")


def resize_view(view: Image.Image, size: int) -> Image.Image:
    """Square ``size`` x ``size`` copy of ``view`` (no-op when already that size)."""
    if view.size == (size, size):
        return view
    return view.resize((size, size), RESAMPLE)


def views_to_tensor(views: Sequence[Image.Image], size: int | None = None) -> Tensor:
    """RGB views -> (V, 3, H, W) float32 in [0, 1] (V = 4 for schema rows).

    Args:
        views: PIL images of one size, mode ``"RGB"``.
        size: resize each view to ``size`` x ``size`` first (bicubic, antialiased).

    Raises:
        ValueError: a view is not RGB, or the views differ in size.
    """
    arrays = []
    for v, img in enumerate(views):
        if img.mode != "RGB":
            raise ValueError(f"views[{v}] has mode {img.mode!r}; expected 'RGB'")
        if size is not None:
            img = resize_view(img, size)
        arrays.append(np.asarray(img, dtype=np.uint8))
    if len({a.shape for a in arrays}) > 1:
        raise ValueError(f"views differ in size: {[a.shape[1::-1] for a in arrays]} (W, H)")
    stacked = torch.from_numpy(np.stack(arrays))  # (V, H, W, 3) uint8
    return stacked.permute(0, 3, 1, 2).float().div_(255.0)


# --------------------------------------------------------------------------- cameras
def cameras_to_list(c2w: Tensor | np.ndarray) -> list[list[float]]:
    """(4, 4, 4) camera-to-world matrices -> the ``cameras`` column value (4 x 16, row-major)."""
    arr = np.asarray(c2w.detach().cpu() if isinstance(c2w, Tensor) else c2w, dtype=np.float32)
    if arr.shape != (NUM_VIEWS, 4, 4):
        raise ValueError(f"expected ({NUM_VIEWS}, 4, 4) camera-to-world matrices, got {arr.shape}")
    return arr.reshape(NUM_VIEWS, 16).tolist()


def cameras_to_tensor(cameras: Sequence[Sequence[float]] | np.ndarray) -> Tensor:
    """The ``cameras`` column value (4 x 16) -> (4, 4, 4) float32 camera-to-world matrices."""
    return torch.as_tensor(np.asarray(cameras, dtype=np.float32)).reshape(-1, 4, 4)


# --------------------------------------------------------------------------- rows
def _check_string(row: Mapping[str, Any], index: int, name: str, allow_empty: bool) -> None:
    value = row[name]
    if not isinstance(value, str):
        raise _fail(index, row, name, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise _fail(index, row, name, "is empty")


def _check_views(row: Mapping[str, Any], index: int, image_size: int | None) -> tuple[int, int]:
    views = row["views"]
    if views is None or isinstance(views, (str, bytes)) or not isinstance(views, Sequence):
        raise _fail(index, row, "views", f"expected a list of {NUM_VIEWS} images")
    if len(views) != NUM_VIEWS:
        kind = "missing views" if len(views) < NUM_VIEWS else "extra views"
        raise _fail(index, row, "views", f"{kind}: has {len(views)}, expected {NUM_VIEWS}")
    sizes = []
    for v, view in enumerate(views):
        if view is None:
            raise _fail(index, row, "views", f"views[{v}] is missing (None)")
        try:
            size, mode = image_header(view)
        except ValueError as err:
            raise _fail(index, row, "views", f"views[{v}]: {err}") from err
        if mode != "RGB":
            raise _fail(
                index,
                row,
                "views",
                f"views[{v}] has mode {mode!r}; the schema stores RGB (composite alpha over a "
                "background or call .convert('RGB') when building the dataset)",
            )
        if image_size is not None and size != (image_size, image_size):
            raise _fail(
                index,
                row,
                "views",
                f"views[{v}] is {size[0]}x{size[1]}, expected {image_size}x{image_size}",
            )
        sizes.append(size)
    if len(set(sizes)) > 1:
        raise _fail(index, row, "views", f"views differ in size (W, H): {sizes}")
    return sizes[0]


def _check_cameras(row: Mapping[str, Any], index: int) -> None:
    try:
        cams = np.asarray(row["cameras"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise _fail(index, row, "cameras", f"not a numeric 4 x 16 array ({err})") from err
    if cams.shape != (NUM_VIEWS, 16):
        raise _fail(index, row, "cameras", f"shape {cams.shape}, expected ({NUM_VIEWS}, 16)")
    if not np.isfinite(cams).all():
        raise _fail(index, row, "cameras", "contains NaN or infinity")
    bottom = cams[:, 12:]
    if not np.allclose(bottom, [0.0, 0.0, 0.0, 1.0], atol=1e-4):
        raise _fail(
            index,
            row,
            "cameras",
            f"bottom rows {bottom.tolist()} are not (0, 0, 0, 1): each camera must be a 4x4 "
            "camera-to-world flattened row-major (was it flattened column-major?)",
        )


def _check_fovy(row: Mapping[str, Any], index: int) -> None:
    try:
        fovy = np.asarray(row["fovy_deg"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise _fail(index, row, "fovy_deg", f"not {NUM_VIEWS} numbers ({err})") from err
    if fovy.shape != (NUM_VIEWS,):
        raise _fail(index, row, "fovy_deg", f"shape {fovy.shape}, expected ({NUM_VIEWS},)")
    if not (np.isfinite(fovy).all() and ((fovy > 0) & (fovy < 180)).all()):
        raise _fail(index, row, "fovy_deg", f"{fovy.tolist()} not all in (0, 180) degrees")


def _check_ratings(row: Mapping[str, Any], index: int) -> None:
    ratings = row["ratings"]
    if not isinstance(ratings, Mapping):
        raise _fail(index, row, "ratings", f"expected a dict, got {type(ratings).__name__}")
    for axis in (*RATING_AXES, "overall"):
        name = f"ratings.{axis}"
        value = ratings.get(axis)
        if value is None:
            raise _fail(index, row, name, "is missing")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise _fail(index, row, name, f"expected a number, got {type(value).__name__}")
        value = float(value)
        if not math.isfinite(value) or not RATING_MIN <= value <= RATING_MAX:
            raise _fail(index, row, name, f"{value:g} is outside {RATING_MIN}-{RATING_MAX}")
        if axis != "overall" and value != int(value):
            raise _fail(index, row, name, f"{value:g} is not an integer")


def validate_row(row: Mapping[str, Any], index: int, image_size: int | None = None) -> None:
    """Check one row against the schema; extra keys are allowed and ignored.

    Views may be PIL images (a decoded dataset) or ``{"bytes", "path"}`` dicts (undecoded);
    only image headers are read.

    Args:
        row: the row as a dict.
        index: its position in the dataset (for the error message).
        image_size: when given, every view must be ``image_size`` x ``image_size``.

    Raises:
        ValueError: ``"row <index> (asset_id=...): field '<name>': <what is wrong>"``.
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"row {index}: expected a dict, got {type(row).__name__}")
    for name in COLUMNS:
        if name not in row or (row[name] is None and name != "scene"):
            raise _fail(index, row, name, "is missing")
    for name in ("prompt_id", "prompt", "asset_id", "defect"):
        _check_string(row, index, name, allow_empty=False)
    _check_views(row, index, image_size)
    _check_cameras(row, index)
    _check_fovy(row, index)
    _check_ratings(row, index)
    rank = row["rank"]
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise _fail(index, row, "rank", f"{rank!r} is not an integer >= 1 (1 = best)")
    if row["composition"] not in COMPOSITIONS:
        raise _fail(
            index, row, "composition", f"{row['composition']!r} is not one of {COMPOSITIONS}"
        )
    scene = row["scene"]
    if scene is not None:
        _check_string(row, index, "scene", allow_empty=True)
        if scene:
            try:
                json.loads(scene)
            except json.JSONDecodeError as err:
                raise _fail(index, row, "scene", f"not valid JSON ({err})") from err


# --------------------------------------------------------------------------- datasets
@dataclass
class DatasetSummary:
    """What :func:`validate_dataset` saw.

    Attributes:
        num_rows: assets.
        num_prompts: distinct ``prompt_id``.
        num_novel_rows: rows with ``composition == "novel"``.
        image_sizes: distinct (width, height) of the views.
    """

    num_rows: int
    num_prompts: int
    num_novel_rows: int
    image_sizes: set[tuple[int, int]] = field(default_factory=set)


def check_columns(ds: datasets.Dataset) -> None:
    """Raise ValueError naming the schema columns that ``ds`` lacks (extra columns are fine)."""
    missing = [c for c in COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"dataset lacks the preference-schema column(s) {missing}; it has "
            f"{ds.column_names} (see dreamreward.data.schema.PREFERENCE_FEATURES)"
        )


def conform_dataset(ds: datasets.Dataset) -> datasets.Dataset:
    """``ds`` restricted to the schema's columns and cast to :data:`PREFERENCE_FEATURES`.

    A no-op for datasets already in the schema; lets a team's parquet (e.g. int64 ratings,
    plain list columns) be used as is. Raises ValueError naming the column that cannot be cast.
    """
    check_columns(ds)
    if ds.column_names != list(COLUMNS):
        ds = ds.select_columns(list(COLUMNS))
    if ds.features == PREFERENCE_FEATURES:
        return ds
    for name in COLUMNS:
        if ds.features[name] != PREFERENCE_FEATURES[name]:
            try:
                ds = ds.cast_column(name, PREFERENCE_FEATURES[name])
            except (TypeError, ValueError, NotImplementedError) as err:
                # Usually one bad row: find and name it (row index, asset_id, field) first.
                validate_dataset(ds)
                raise ValueError(
                    f"column {name!r} has type {ds.features[name]} which cannot be cast to the "
                    f"schema's {PREFERENCE_FEATURES[name]}: {err}"
                ) from err
    return ds


def _undecoded_rows(ds: datasets.Dataset, batch_size: int) -> Iterator[dict[str, Any]]:
    """Rows with images left encoded (``{"bytes", "path"}``): Arrow batches, no decoding."""
    for batch in ds.with_format("arrow").iter(batch_size=batch_size):
        yield from batch.to_pylist()


def validate_dataset(
    ds: datasets.Dataset, image_size: int | None = None, batch_size: int = 256
) -> DatasetSummary:
    """Check every row (:func:`validate_row`, image headers only) and the cross-row rules.

    Cross-row rules: ``asset_id`` is unique; the rows of one ``prompt_id`` share the prompt text
    and the composition (a prompt lives in one split).

    Returns:
        a :class:`DatasetSummary`.

    Raises:
        ValueError: for the first bad row, naming its index, asset_id and field.
    """
    check_columns(ds)
    seen_assets: dict[str, int] = {}
    prompts: dict[str, tuple[str, str, int]] = {}
    sizes: set[tuple[int, int]] = set()
    novel = 0
    for index, row in enumerate(_undecoded_rows(ds, batch_size)):
        validate_row(row, index, image_size)
        sizes.add(image_header(row["views"][0])[0])
        asset = row["asset_id"]
        if asset in seen_assets:
            raise _fail(index, row, "asset_id", f"duplicate of row {seen_assets[asset]}")
        seen_assets[asset] = index
        novel += row["composition"] == "novel"
        first = prompts.setdefault(row["prompt_id"], (row["prompt"], row["composition"], index))
        if first[0] != row["prompt"]:
            raise _fail(
                index,
                row,
                "prompt",
                f"{row['prompt']!r} differs from row {first[2]}'s "
                f"{first[0]!r} for the same prompt_id {row['prompt_id']!r}",
            )
        if first[1] != row["composition"]:
            raise _fail(
                index,
                row,
                "composition",
                f"{row['composition']!r} differs from row {first[2]}'s "
                f"{first[1]!r} for the same prompt_id (a prompt must live in one split)",
            )
    return DatasetSummary(len(seen_assets), len(prompts), novel, sizes)


# --------------------------------------------------------------------------- examples
def synthetic_rows(
    num_prompts: int = 3,
    assets_per_prompt: int = 4,
    image_size: int = 16,
    seed: int = 0,
    novel_prompts: int = 0,
) -> list[dict[str, Any]]:
    """Rows of random images in the schema, for tests and examples (not a training set).

    Each prompt gets ``assets_per_prompt`` assets with random ratings, ranked by ``overall``
    (ties share a rank), the 4 orbit cameras at azimuths 0/90/180/270, and random RGB views.
    The last ``novel_prompts`` prompts have ``composition == "novel"``.
    """
    from dreamreward.render.cameras import orbit_cameras  # only needed here

    rng = np.random.default_rng(seed)
    azimuths = torch.tensor([0.0, 90.0, 180.0, 270.0])
    cameras = cameras_to_list(orbit_cameras(15.0, azimuths, 2.5, 40.0, image_size).c2w)
    rows = []
    for k in range(num_prompts):
        axes = rng.integers(RATING_MIN, RATING_MAX + 1, size=(assets_per_prompt, 3))
        overall = axes.mean(axis=1)
        order = sorted(set(overall.tolist()), reverse=True)
        for i in range(assets_per_prompt):
            pixels = rng.integers(0, 256, size=(NUM_VIEWS, image_size, image_size, 3))
            rows.append(
                {
                    "prompt_id": f"p{k:03d}",
                    "prompt": f"prompt number {k}",
                    "asset_id": f"p{k:03d}/{i}",
                    "views": [Image.fromarray(p.astype(np.uint8)) for p in pixels],
                    "cameras": cameras,
                    "fovy_deg": [40.0] * NUM_VIEWS,
                    "ratings": {
                        **{a: int(v) for a, v in zip(RATING_AXES, axes[i], strict=True)},
                        "overall": float(overall[i]),
                    },
                    "rank": order.index(float(overall[i])) + 1,
                    "defect": "none" if i == 0 else "wrong_color",
                    "scene": "",
                    "composition": "novel" if k >= num_prompts - novel_prompts else "seen",
                }
            )
    return rows


# --------------------------------------------------------------------------- saving built sets
def check_new_output(out: str | Path) -> Path:
    """``out`` as a Path, refused (``FileExistsError``) when it exists and is not empty: a
    builder never writes over a set. Call it before the expensive work."""
    path = Path(out)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty; choose another --out")
    return path


def save_preference_rows(
    rows: Sequence[Mapping[str, Any]], out: Path, info: Mapping[str, Any]
) -> datasets.Dataset:
    """Rows of the schema -> a validated ``datasets`` set saved at ``out`` with ``info`` as its
    ``build_info.json``; returns the set as loaded back from disk."""
    columns = {name: [r[name] for r in rows] for name in PREFERENCE_FEATURES}
    dataset = datasets.Dataset.from_dict(columns, features=PREFERENCE_FEATURES)
    validate_dataset(dataset)
    dataset.save_to_disk(str(out))
    (out / "build_info.json").write_text(json.dumps(info, indent=2))
    return datasets.load_from_disk(str(out))
