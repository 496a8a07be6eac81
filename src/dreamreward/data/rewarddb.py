"""Loader for the 3DRewardDB layout (HF ``yejunliang23/3DRewardDB``) into the preference schema.

Layout (published)::

    <root>/
      prompt_reward.json           prompts, per-asset ratings and a ranking
      data/<k>/<i>.png             images of prompt k
      data/<k>/cam_<i>.pkl         the camera(s) of <i>.png  (UNTRUSTED pickles)

The exact structure of ``prompt_reward.json`` and of the pickles is not available offline, so
this module implements a documented *interpretation*; every place that encodes an assumption is
one small function to adjust when the real files are seen, and every mismatch is a ValueError
naming the file and the key.

``prompt_reward.json`` (interpretation):

- top level: a list whose entry k describes ``data/<k>/``, or an object keyed by folder name;
- an entry: the prompt text under ``prompt`` (or ``text``, ``caption``); per-asset ratings
  either as columns (``"score": [...], "alignment": [...], "fidelity": [...],
  "consistency": [...]``, index i = asset i) or as rows (``"ratings"`` / ``"rewards"`` /
  ``"assets"``: a list of ``{"score", "alignment", "fidelity", "consistency"}``, or an object
  keyed by ``"<i>"``); and a ranking under ``ranking`` (or ``rank``, ``ranks``, ``order``).
- the ranking is read as ``ranking_format="ranks"`` (default: per-asset rank values, lower is
  better, equal values are ties, as in ImageReward's annotation files) or ``"order"`` (asset
  indices best first; an element may be a list of tied assets). Without a ranking, assets are
  ranked by score. Ranks are stored dense (1, 2, 2, 3).
- ratings are mapped linearly from ``rating_range`` (default 1-6) onto our 1-6 scale (axes
  rounded to integers); ``score`` from ``score_range`` (default: ``rating_range``) onto the
  float ``overall``; without a score, ``overall`` is the mean of the three axes.

Images and assets (interpretation): asset i of a prompt owns ``<i>.png`` and ``cam_<i>.pkl``
when the folder holds exactly as many pngs as the entry has assets; the png then tiles the
asset's V views (V = the number of cameras in its pickle) as a horizontal strip (W = V*H), a
vertical strip (H = V*W) or a square grid read row-major (2x2 for V = 4). When the folder holds
A*V pngs for A assets, each png is one view with one camera and asset a owns pngs a*V ... a*V+V-1.
Views are assumed ordered by azimuth from the front (MVDream's 0, 90, 180, 270 degrees); with
more than 4 views, views ``floor(j*V/4)`` for j = 0..3 are kept (evenly spaced).

Cameras (interpretation): a pickle holds a numpy array or nested list of shape (16,), (4, 4),
(3, 4), (N, 16), (N, 4, 4) or (N, 3, 4), or a dict holding one under ``c2w``, ``camera``,
``cameras``, ``pose``, ``poses`` or ``transform_matrix`` (camera-to-world), or under ``w2c``,
``extrinsic``, ``extrinsics`` (world-to-camera, inverted). The default convention ``"blender"``
is MVDream's ``get_camera(blender_coord=True)``: Z-up world, OpenGL camera axes, the same as
ours; see :func:`to_our_c2w` for the others.

The pickles are untrusted: they are read by :func:`~dreamreward.data.safe_pickle.restricted_load`
(plain containers, numbers and numpy arrays only); cameras are parsed and converted by
:mod:`dreamreward.data.camera_files`. Run it as ``python -m dreamreward convert-rewarddb``.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
from PIL import Image

from dreamreward.data.camera_files import CameraConvention, parse_cameras, to_our_c2w
from dreamreward.data.safe_pickle import restricted_load
from dreamreward.data.schema import (
    NUM_VIEWS,
    PREFERENCE_FEATURES,
    RATING_AXES,
    RATING_MAX,
    RATING_MIN,
    UNKNOWN_DEFECT,
    resize_view,
)

RankingFormat = Literal["ranks", "order"]

PROMPT_FILE = "prompt_reward.json"
DATA_DIR = "data"

# --------------------------------------------------------------------------- prompt_reward.json
_TEXT_KEYS = ("prompt", "text", "caption")
_RATING_KEYS: dict[str, tuple[str, ...]] = {
    "score": ("score", "overall", "reward"),
    "alignment": ("alignment", "align", "text_alignment"),
    "fidelity": ("fidelity", "quality"),
    "consistency": ("consistency", "3d_consistency"),
}
_ROW_FORM_KEYS = ("ratings", "rewards", "assets")
_RANKING_KEYS = ("ranking", "rank", "ranks", "order")


def _first_key(entry: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    return next((k for k in keys if k in entry), None)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _raw_ratings(entry: Mapping[str, Any], where: str) -> list[dict[str, float | None]]:
    """Per-asset ``{score, alignment, fidelity, consistency}`` (score may be None), raw scale."""
    row_key = _first_key(entry, _ROW_FORM_KEYS)
    if row_key is not None:  # row form
        rows = entry[row_key]
        if isinstance(rows, Mapping):
            try:
                rows = [rows[str(i)] for i in range(len(rows))]
            except KeyError as err:
                raise ValueError(
                    f"{where}[{row_key!r}]: object keys must be '0'..'{len(rows) - 1}', "
                    f"got {sorted(rows)}"
                ) from err
        if not isinstance(rows, list) or not rows:
            raise ValueError(f"{where}[{row_key!r}]: expected a non-empty list of asset ratings")
        out = []
        for i, r in enumerate(rows):
            if not isinstance(r, Mapping):
                raise ValueError(f"{where}[{row_key!r}][{i}]: expected an object of ratings")
            item: dict[str, float | None] = {}
            for name, aliases in _RATING_KEYS.items():
                key = _first_key(r, aliases)
                if key is None and name != "score":
                    raise ValueError(f"{where}[{row_key!r}][{i}]: missing rating {aliases}")
                item[name] = None if key is None else _number(r[key], f"{where}[{i}][{key!r}]")
            out.append(item)
        return out
    columns: dict[str, list[float] | None] = {}
    for name, aliases in _RATING_KEYS.items():  # column form
        key = _first_key(entry, aliases)
        if key is None:
            if name != "score":
                raise ValueError(
                    f"{where}: missing ratings: expected a rating list under one of {aliases}, "
                    f"or per-asset rows under one of {_ROW_FORM_KEYS}; keys are {sorted(entry)}"
                )
            columns[name] = None
            continue
        values = entry[key]
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}[{key!r}]: expected a non-empty list (one value per asset)")
        columns[name] = [_number(v, f"{where}[{key!r}][{i}]") for i, v in enumerate(values)]
    lengths = {name: len(v) for name, v in columns.items() if v is not None}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{where}: rating lists differ in length {lengths}")
    n = next(iter(lengths.values()))
    return [{name: None if v is None else v[i] for name, v in columns.items()} for i in range(n)]


def _to_scale(value: float, value_range: tuple[float, float], where: str) -> float:
    """Map ``value`` linearly from ``value_range`` onto [RATING_MIN, RATING_MAX]."""
    lo, hi = value_range
    if not lo <= value <= hi:
        raise ValueError(f"{where}: rating {value:g} is outside the declared range {lo}-{hi}")
    return RATING_MIN + (RATING_MAX - RATING_MIN) * (value - lo) / (hi - lo)


def _dense_ranks(keys: Sequence[float]) -> list[int]:
    """Dense ranks, 1 for the smallest key; equal keys share a rank."""
    order = {v: r + 1 for r, v in enumerate(sorted(set(keys)))}
    return [order[v] for v in keys]


def _parse_ranks(
    entry: Mapping[str, Any], n: int, fmt: RankingFormat, overall: list[float], where: str
) -> list[int]:
    key = _first_key(entry, _RANKING_KEYS)
    if key is None:  # no ranking: by overall score, best first
        return _dense_ranks([-s for s in overall])
    values = entry[key]
    where = f"{where}[{key!r}]"
    if not isinstance(values, list):
        raise ValueError(f"{where}: expected a list, got {type(values).__name__}")
    if fmt == "ranks":
        if len(values) != n:
            raise ValueError(f"{where}: {len(values)} ranks for {n} assets (ranking_format=ranks)")
        return _dense_ranks([_number(v, f"{where}[{i}]") for i, v in enumerate(values)])
    if fmt != "order":
        raise ValueError(f"unknown ranking_format {fmt!r}; use 'ranks' or 'order'")
    ranks: dict[int, int] = {}
    for position, group in enumerate(values):
        for asset in group if isinstance(group, list) else [group]:
            if isinstance(asset, bool) or not isinstance(asset, int) or not 0 <= asset < n:
                raise ValueError(f"{where}[{position}]: {asset!r} is not an asset index 0..{n - 1}")
            if asset in ranks:
                raise ValueError(f"{where}: asset {asset} appears twice (ranking_format=order)")
            ranks[asset] = position + 1
    if len(ranks) != n:
        missing = sorted(set(range(n)) - set(ranks))
        raise ValueError(f"{where}: assets {missing} are not ranked (ranking_format=order)")
    return _dense_ranks([ranks[i] for i in range(n)])


@dataclass
class _PromptPlan:
    """Everything about one prompt except its pixels."""

    key: str
    text: str
    ratings: list[dict[str, float]]
    ranks: list[int]
    # per asset, its 4 kept views: (png path, tile index, tiles in that png; 1 = not tiled)
    assets: list[list[tuple[str, int, int]]]
    cameras: list[np.ndarray]  # per asset: (4, 4, 4) c2w in our convention


def _prompt_entries(doc: Any, json_path: Path) -> list[tuple[str, Any]]:
    if isinstance(doc, list):
        return [(str(k), e) for k, e in enumerate(doc)]
    if isinstance(doc, Mapping):

        def order(k: str) -> tuple[int, int | str]:
            return (0, int(k)) if k.isdigit() else (1, k)

        return [(str(k), doc[k]) for k in sorted(doc, key=lambda k: order(str(k)))]
    raise ValueError(f"{json_path}: top level must be a list or an object keyed by folder name")


def _numbered_pngs(folder: Path) -> dict[int, Path]:
    """``<i>.png`` files of a prompt folder by their number i (other pngs are ignored)."""
    return {int(p.stem): p for p in folder.glob("*.png") if p.stem.isdigit()}


def _pick_views(count: int) -> list[int]:
    """``NUM_VIEWS`` evenly spaced view indices out of ``count`` (all of them when equal)."""
    return [j * count // NUM_VIEWS for j in range(NUM_VIEWS)]


def _plan_prompt(
    root: Path,
    key: str,
    entry: Any,
    json_path: Path,
    ranking_format: RankingFormat,
    rating_range: tuple[float, float],
    score_range: tuple[float, float],
    convention: CameraConvention,
) -> _PromptPlan:
    where = f"{json_path}: prompt {key!r}"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
    text_key = _first_key(entry, _TEXT_KEYS)
    if text_key is None or not isinstance(entry[text_key], str) or not entry[text_key].strip():
        raise ValueError(f"{where}: missing prompt text under one of {_TEXT_KEYS}")
    raw = _raw_ratings(entry, where)
    ratings = []
    for i, r in enumerate(raw):
        axes = {a: _to_scale(r[a], rating_range, f"{where} asset {i} {a}") for a in RATING_AXES}
        rounded = {a: int(math.floor(v + 0.5)) for a, v in axes.items()}
        score = r["score"]
        overall = (
            sum(axes.values()) / len(axes)
            if score is None
            else _to_scale(score, score_range, f"{where} asset {i} score")
        )
        ratings.append({**rounded, "overall": overall})
    n = len(ratings)
    ranks = _parse_ranks(entry, n, ranking_format, [r["overall"] for r in ratings], where)

    folder = root / DATA_DIR / key
    if not folder.is_dir():
        raise ValueError(f"{where}: folder {folder} does not exist")
    pngs = _numbered_pngs(folder)
    if sorted(pngs) != list(range(len(pngs))):
        raise ValueError(f"{folder}: png files must be numbered 0..P-1, found {sorted(pngs)}")
    if not pngs or len(pngs) % n:
        raise ValueError(
            f"{folder}: {len(pngs)} png files do not group into the {n} assets of {where} "
            "(expected one png per asset, or the same number of single-view pngs per asset)"
        )
    per_asset = len(pngs) // n
    assets, cameras = [], []
    for a in range(n):
        files = [a * per_asset + j for j in range(per_asset)]
        views: list[tuple[str, int, int]] = []
        mats = []
        for i in files:
            cam_path = folder / f"cam_{i}.pkl"
            if not cam_path.is_file():
                raise ValueError(f"{folder}: {pngs[i].name} has no camera file {cam_path.name}")
            c2w = parse_cameras(restricted_load(cam_path), str(cam_path))
            if per_asset > 1 and len(c2w) != 1:
                raise ValueError(
                    f"{cam_path}: {len(c2w)} cameras, but the folder has one png per view"
                )
            _tile_boxes(_png_size(pngs[i]), len(c2w), str(pngs[i]))  # fail before generating
            views += [(str(pngs[i]), t, len(c2w)) for t in range(len(c2w))]
            mats.append(c2w)
        all_c2w = np.concatenate(mats)
        if len(views) < NUM_VIEWS:
            raise ValueError(
                f"{folder}: asset {a} has {len(views)} view(s); the schema needs {NUM_VIEWS}"
            )
        keep = _pick_views(len(views))
        assets.append([views[j] for j in keep])
        cameras.append(to_our_c2w(all_c2w[keep], convention).astype(np.float32))
    return _PromptPlan(key, entry[text_key].strip(), ratings, ranks, assets, cameras)


# --------------------------------------------------------------------------- images
def _tile_boxes(size: tuple[int, int], count: int, where: str) -> list[tuple[int, int, int, int]]:
    """Crop boxes of the ``count`` views in an image of ``size`` (W, H): a horizontal strip,
    a vertical strip, or a square grid read row-major; the whole image when ``count`` is 1."""
    w, h = size
    g = math.isqrt(count)
    if count == 1:
        return [(0, 0, w, h)]
    if w == count * h:
        return [(t * h, 0, (t + 1) * h, h) for t in range(count)]
    if h == count * w:
        return [(0, t * w, w, (t + 1) * w) for t in range(count)]
    if g * g == count and w == h and w % g == 0:
        s = w // g
        cells = [(t % g, t // g) for t in range(count)]  # (column, row), row-major
        return [(c * s, r * s, (c + 1) * s, (r + 1) * s) for c, r in cells]
    raise ValueError(
        f"{where}: a {w}x{h} image cannot hold {count} square views (its camera file has "
        f"{count} cameras; expected a {count}x1 strip, a 1x{count} strip or a square grid)"
    )


def _png_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:  # header only
            return img.size
    except (OSError, Image.UnidentifiedImageError) as err:
        raise ValueError(f"{path}: unreadable image ({err})") from err


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with any transparency composited over white (MVDream renders' background)."""
    if img.mode == "RGB":
        return img
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _load_views(plan: _PromptPlan, a: int, image_size: int | None) -> list[Image.Image]:
    """The 4 kept views of asset ``a`` (each png read once)."""
    tiles: dict[str, list[Image.Image]] = {}
    out = []
    for path, tile, count in plan.assets[a]:
        if path not in tiles:
            try:
                with Image.open(path) as img:
                    img.load()
                    rgb = _to_rgb(img)
                    tiles[path] = [rgb.crop(b) for b in _tile_boxes(rgb.size, count, path)]
            except (OSError, Image.UnidentifiedImageError) as err:
                raise ValueError(f"{path}: unreadable image ({err})") from err
        view = tiles[path][tile]
        out.append(resize_view(view, image_size) if image_size else view)
    return out


def _rows(
    plans: list[_PromptPlan], image_size: int | None, signature: str, fovy_deg: float
) -> Iterator[dict]:
    del signature  # only part of the cache key
    for plan in plans:
        for a in range(len(plan.ratings)):
            yield {
                "prompt_id": plan.key,
                "prompt": plan.text,
                "asset_id": f"{plan.key}/{a}",
                "views": _load_views(plan, a, image_size),
                "cameras": plan.cameras[a].reshape(NUM_VIEWS, 16).tolist(),
                "fovy_deg": [fovy_deg] * NUM_VIEWS,
                "ratings": plan.ratings[a],
                "rank": plan.ranks[a],
                "defect": UNKNOWN_DEFECT,
                "scene": "",
                "composition": "seen",
            }


def _signature(plans: list[_PromptPlan], root: Path, options: dict[str, Any]) -> str:
    """Cache key of the generated dataset: every png's size and mtime, plus the options."""
    stats = []
    for plan in plans:
        for views in plan.assets:
            for path, _, _ in views:
                st = Path(path).stat()
                stats.append((path, st.st_size, st.st_mtime_ns))
    return json.dumps({"root": str(root), "options": options, "files": stats}, default=str)


def _original_error(err: BaseException) -> BaseException | None:
    """The ValueError/UnpicklingError that ``datasets`` wrapped in a generation error."""
    cause = err.__cause__ or err.__context__
    while cause is not None:
        if isinstance(cause, (ValueError, pickle.UnpicklingError)):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def load_rewarddb(
    root: str | Path,
    image_size: int | None = None,
    max_prompts: int | None = None,
    *,
    ranking_format: RankingFormat = "ranks",
    rating_range: tuple[float, float] = (1.0, 6.0),
    score_range: tuple[float, float] | None = None,
    camera_convention: CameraConvention = "blender",
    fovy_deg: float = 40.0,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """A 3DRewardDB-layout folder -> a dataset in the preference schema.

    All json entries and camera pickles are parsed and checked first (errors name the file and
    key), then the images are read and written to an Arrow cache (``datasets`` cache, keyed by
    the files' sizes/mtimes and the options, so a changed folder is re-read).

    Args:
        root: the folder holding ``prompt_reward.json`` and ``data/``.
        image_size: resize views to ``image_size`` x ``image_size`` (bicubic); None keeps them.
        max_prompts: only the first prompts (in folder-number order).
        ranking_format: how the json ranking list reads (module docstring).
        rating_range: the raw range of the per-axis ratings, mapped onto 1-6.
        score_range: the raw range of ``score`` (default ``rating_range``), mapped onto 1-6.
        camera_convention: the pickles' camera convention (:func:`to_our_c2w`).
        fovy_deg: the vertical field of view stored for every view. The layout's pickles hold
            poses only (as far as we know), so this is an assumption to set if known.
        cache_dir: ``datasets`` cache folder (default: its global cache).

    Returns:
        one row per asset: ``prompt_id`` = folder name, ``asset_id`` = ``"<k>/<i>"``,
        ``defect`` = ``"unknown"``, ``scene`` = ``""``, ``composition`` = ``"seen"``.
    """
    root = Path(root)
    json_path = root / PROMPT_FILE
    if not json_path.is_file():
        raise ValueError(f"{json_path} not found: is {root} a 3DRewardDB folder?")
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{json_path}: not valid JSON ({err})") from err
    if rating_range[1] <= rating_range[0]:
        raise ValueError(f"rating_range must be (low, high) with low < high, got {rating_range}")
    score_range = score_range or rating_range
    entries = _prompt_entries(doc, json_path)
    if max_prompts is not None:
        entries = entries[:max_prompts]
    if not entries:
        raise ValueError(f"{json_path}: no prompts")
    plans = [
        _plan_prompt(
            root, k, e, json_path, ranking_format, rating_range, score_range, camera_convention
        )
        for k, e in entries
    ]
    options = {
        "image_size": image_size,
        "ranking_format": ranking_format,
        "rating_range": rating_range,
        "score_range": score_range,
        "camera_convention": camera_convention,
        "fovy_deg": fovy_deg,
    }
    try:
        return datasets.Dataset.from_generator(
            _rows,
            features=PREFERENCE_FEATURES,
            cache_dir=cache_dir,
            gen_kwargs={
                "plans": plans,
                "image_size": image_size,
                "signature": _signature(plans, root, options),
                "fovy_deg": fovy_deg,
            },
        )
    except Exception as err:
        original = _original_error(err)
        if original is not None:
            raise original from err
        raise


def convert_rewarddb(
    root: str,
    out: str,
    image_size: int | None = None,
    max_prompts: int | None = None,
    ranking_format: RankingFormat = "ranks",
    rating_range: tuple[float, float] = (1.0, 6.0),
    score_range: tuple[float, float] | None = None,
    camera_convention: CameraConvention = "blender",
    fovy_deg: float = 40.0,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """Convert a 3DRewardDB folder into a ``save_to_disk`` dataset for ``PreferenceDataModule``.

    Args:
        root: folder with ``prompt_reward.json`` and ``data/``.
        out: output folder (must not exist or be empty).
        image_size, max_prompts, ranking_format, rating_range, score_range, camera_convention,
            fovy_deg, cache_dir: as in :func:`load_rewarddb`.
    """
    out_path = Path(out)
    if out_path.exists() and any(out_path.iterdir()):
        raise FileExistsError(f"{out_path} exists and is not empty; choose another out folder")
    ds = load_rewarddb(
        root,
        image_size,
        max_prompts,
        ranking_format=ranking_format,
        rating_range=rating_range,
        score_range=score_range,
        camera_convention=camera_convention,
        fovy_deg=fovy_deg,
        cache_dir=cache_dir,
    )
    ds.save_to_disk(str(out_path))
    print(f"wrote {len(ds)} assets of {len(set(ds['prompt_id']))} prompts to {out_path}")
    return ds
