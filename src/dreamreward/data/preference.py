"""``PreferenceDataModule``: pairs of multi-view assets from any dataset in the preference schema.

Splits are by prompt (a prompt's assets never straddle two splits) and deterministic from the
seed; rows whose ``composition`` is ``"novel"`` form a separate test split of novel
compositions that never enters train/val/test. Items are ImageReward-style (better, worse) pairs
(:func:`dreamreward.data.pairs.build_pairs`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import datasets
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dreamreward.data import pair_balance
from dreamreward.data.pairs import PreferencePair, build_pairs
from dreamreward.data.sampling import EpochShuffleSampler
from dreamreward.data.schema import (
    cameras_to_tensor,
    conform_dataset,
    validate_dataset,
    views_to_tensor,
)
from dreamreward.data.train_sets import defects_per_set, prompt_keys, train_set_pairs

SPLITS: tuple[str, ...] = ("train", "val", "test", "novel")
TEST_DATALOADERS: tuple[str, ...] = ("test", "novel")  # order of test_dataloader()'s list


def load_preference_dataset(path: str | Path, cache_dir: str | None = None) -> datasets.Dataset:
    """A dataset saved with ``save_to_disk`` (a ``DatasetDict``'s splits are concatenated, as we
    re-split by prompt), or a parquet file / folder of parquet files (read recursively; converted
    to Arrow in ``cache_dir``, default the ``datasets`` cache)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".parquet":
        return datasets.Dataset.from_parquet(str(path), cache_dir=cache_dir)
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                return datasets.concatenate_datasets([loaded[k] for k in sorted(loaded)])
            return loaded
        files = sorted(str(p) for p in path.rglob("*.parquet"))
        if files:
            return datasets.Dataset.from_parquet(files, cache_dir=cache_dir)
    raise ValueError(
        f"{path}: not a dataset saved with save_to_disk (no state.json / dataset_dict.json), "
        "a .parquet file, or a folder containing .parquet files"
    )


def split_prompts(
    prompt_ids: list[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Assign prompts to train / val / test, deterministically from ``seed``.

    Prompts are sorted, then permuted by ``numpy.random.default_rng(seed)``: the result does not
    depend on row order. A non-zero fraction gets at least one prompt.

    Raises:
        ValueError: fractions outside [0, 1), or no prompt left for training.
    """
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}")
    unique = sorted(set(prompt_ids))
    n = len(unique)

    def count(fraction: float) -> int:
        return 0 if fraction == 0 else max(1, round(fraction * n))

    n_val, n_test = count(val_fraction), count(test_fraction)
    if n_val + n_test >= n:
        raise ValueError(
            f"{n} prompts (excluding novel ones) cannot give {n_val} val + {n_test} test prompts "
            "and still leave some for training: lower val_fraction/test_fraction or add prompts"
        )
    order = [unique[i] for i in np.random.default_rng(seed).permutation(n)]
    return {
        "test": order[:n_test],
        "val": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }


class PairDataset(Dataset):
    """Item i: the i-th pair as tensors.

    Returns dicts with ``better_views`` / ``worse_views`` (4, 3, H, W) float in [0, 1],
    ``better_cameras`` / ``worse_cameras`` (4, 4, 4) camera-to-world, ``better_defect`` /
    ``worse_defect`` (what each asset's row says it shows), ``scene`` (the prompt's ground-truth
    scene as JSON, "" without one), and ``prompt``, ``prompt_id``, ``defect``, ``axis`` (str);
    the default collate makes (B, ...) tensors and lists of B strings.

    Args:
        dataset: the whole dataset in the schema (pair indices point into it).
        pairs: the pairs of this split.
        prompts: ``prompt_id`` -> prompt text.
        image_size: resize views to this square size (None: keep).
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        pairs: list[PreferencePair],
        prompts: dict[str, str],
        image_size: int | None = None,
    ) -> None:
        # Only the columns an item needs are decoded.
        self.assets = dataset.select_columns(["views", "cameras"])
        self.pairs, self.prompts, self.image_size = pairs, prompts, image_size
        # What each asset depicts, for the text side (prompt edits of correct assets): small
        # string columns, read once. Data without a ground-truth scene gives "".
        names = dataset.column_names
        defects = dataset["defect"] if "defect" in names else [None] * len(dataset)
        scenes = dataset["scene"] if "scene" in names else [None] * len(dataset)
        self.defects = [d or "" for d in defects]  # the schema allows a missing value
        self.scenes = [s or "" for s in scenes]

    def __len__(self) -> int:
        return len(self.pairs)

    def _asset(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.assets[index]
        return views_to_tensor(row["views"], self.image_size), cameras_to_tensor(row["cameras"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        pair = self.pairs[i]
        better_views, better_cameras = self._asset(pair.better)
        worse_views, worse_cameras = self._asset(pair.worse)
        return {
            "better_views": better_views,
            "worse_views": worse_views,
            "better_cameras": better_cameras,
            "worse_cameras": worse_cameras,
            "better_defect": self.defects[pair.better],
            "worse_defect": self.defects[pair.worse],
            "scene": self.scenes[pair.better],
            "prompt": self.prompts[pair.prompt_id],
            "prompt_id": pair.prompt_id,
            "defect": pair.defect,
            "axis": pair.axis,
            "pair_weight": torch.tensor(pair.weight, dtype=torch.float32),
        }


class PromptGroupDataset(PairDataset):
    """Item i: every asset of the i-th prompt that appears in a pair, and its pairs as indices.

    Scoring each asset once and forming all C(n, 2) pairs of a prompt from the scores gives the
    same loss as pair-by-pair batches at a fraction of the image-tower work (a prompt with 7
    assets has up to 21 pairs but only 7 assets).

    Returns dicts with ``views`` (A, 4, 3, H, W), ``cameras`` (A, 4, 4, 4), ``asset_prompt``,
    ``asset_defect`` and ``asset_scene`` (A strings each), ``better_index`` / ``worse_index``
    (P,) int64 into the A assets, ``pair_weight`` (P,) float, and ``prompt``, ``prompt_id``,
    ``defect``, ``axis``: lists of P strings. Batch with :func:`collate_asset_groups`.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        pairs: list[PreferencePair],
        prompts: dict[str, str],
        image_size: int | None = None,
        correct_only: bool = False,
    ) -> None:
        super().__init__(dataset, pairs, prompts, image_size)
        grouped: dict[str, list[PreferencePair]] = defaultdict(list)
        for pair in pairs:
            grouped[pair.prompt_id].append(pair)
        self.groups = [grouped[p] for p in sorted(grouped)]
        self.correct_only = correct_only
        if correct_only:
            # Only prompts whose correct asset (defect "none", with its scene) is in a pair.
            self.groups = [g for g in self.groups if self._correct_rows(g)]
            if not self.groups:
                raise ValueError(
                    "correct_only: no prompt has a correct asset with a ground-truth scene "
                    "(columns defect == 'none' and scene): only primitives data has them"
                )

    def _correct_rows(self, pairs: list[PreferencePair]) -> list[int]:
        rows = sorted({p.better for p in pairs} | {p.worse for p in pairs})
        return [r for r in rows if self.defects[r] == "none" and self.scenes[r]]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> dict[str, Any]:
        pairs = self.groups[i]
        if self.correct_only:
            rows = self._correct_rows(pairs)
            pairs = []  # the correct asset alone: a text-side item, no preference pairs
        else:
            rows = sorted({p.better for p in pairs} | {p.worse for p in pairs})
        local = {row: k for k, row in enumerate(rows)}
        views, cameras = zip(*(self._asset(row) for row in rows), strict=True)
        prompt = self.prompts[self.groups[i][0].prompt_id]
        return {
            "views": torch.stack(views),
            "cameras": torch.stack(cameras),
            "asset_prompt": [prompt] * len(rows),
            "asset_defect": [self.defects[row] for row in rows],
            "asset_scene": [self.scenes[row] for row in rows],
            "better_index": torch.tensor([local[p.better] for p in pairs], dtype=torch.long),
            "worse_index": torch.tensor([local[p.worse] for p in pairs], dtype=torch.long),
            "prompt": [prompt] * len(pairs),
            "prompt_id": [p.prompt_id for p in pairs],
            "defect": [p.defect for p in pairs],
            "axis": [p.axis for p in pairs],
            "pair_weight": torch.tensor([p.weight for p in pairs], dtype=torch.float32),
        }


def collate_asset_groups(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate prompt groups: assets along dim 0, pair indices offset into the batch."""
    out: dict[str, Any] = {
        "views": torch.cat([it["views"] for it in items]),
        "cameras": torch.cat([it["cameras"] for it in items]),
    }
    offsets = np.cumsum([0] + [len(it["views"]) for it in items[:-1]])
    for key in ("better_index", "worse_index"):
        out[key] = torch.cat([it[key] + int(o) for it, o in zip(items, offsets, strict=True)])
    out["pair_weight"] = torch.cat([it["pair_weight"] for it in items])
    for key in (
        "asset_prompt",
        "asset_defect",
        "asset_scene",
        "prompt",
        "prompt_id",
        "defect",
        "axis",
    ):
        out[key] = [value for it in items for value in it[key]]
    return out


def pairs_as_asset_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """A pair batch (``better_views`` / ``worse_views`` (B, ...)) in the prompt-group layout:
    assets = better rows then worse rows, ``better_index`` = 0..B-1, ``worse_index`` = B..2B-1.
    A batch already in that layout is returned as is."""
    if "views" in batch:
        return batch
    b = batch["better_views"].shape[0]
    return {
        "views": torch.cat([batch["better_views"], batch["worse_views"]]),
        "cameras": torch.cat([batch["better_cameras"], batch["worse_cameras"]]),
        "asset_prompt": list(batch["prompt"]) * 2,
        "asset_defect": list(batch.get("better_defect", [""] * b))
        + list(batch.get("worse_defect", [""] * b)),
        "asset_scene": list(batch.get("scene", [""] * b)) * 2,
        "better_index": torch.arange(b),
        "worse_index": torch.arange(b, 2 * b),
        "pair_weight": batch.get("pair_weight", torch.ones(b)),
        "prompt": list(batch["prompt"]),
        "prompt_id": list(batch["prompt_id"]),
        "defect": list(batch["defect"]),
        "axis": list(batch["axis"]),
    }


class PreferenceDataModule(L.LightningDataModule):
    """Pairs of 4-view assets for Reward3D training, from any dataset in the preference schema.

    Batches (dicts): ``better_views`` / ``worse_views`` (B, 4, 3, H, W) float in [0, 1];
    ``better_cameras`` / ``worse_cameras`` (B, 4, 4, 4) camera-to-world (Z-up, OpenGL axes);
    ``prompt``, ``prompt_id``, ``defect`` (the worse asset's), ``axis`` (the rating axis the
    better asset leads on): lists of B strings; ``pair_weight`` (B,) the pairs' loss weights
    (1 unless ``balance_relation_classes`` or ``defect_weights`` say otherwise).

    ``val_dataloader`` gives the val pairs; ``test_dataloader`` gives two loaders in the order
    :data:`TEST_DATALOADERS` = (test pairs, novel-composition pairs), i.e. ``dataloader_idx``
    0 is the test split and 1 the novel split (an empty novel split gives an empty loader).

    With ``grouping="prompt"`` a batch holds ``batch_size`` prompts instead: every asset of
    those prompts once, and all their pairs as indices (see :class:`PromptGroupDataset`);
    :func:`pairs_as_asset_batch` brings pair batches into that layout, so a model can take both.

    Args:
        path: a dataset saved with ``save_to_disk``, or a parquet file / folder.
        val_fraction, test_fraction: shares of the (non-novel) prompts held out.
        seed: seed of the prompt split and of the training shuffle.
        batch_size: pairs per batch (``grouping="pair"``) or prompts per batch (``"prompt"``).
        image_size: resize every view to ``image_size`` x ``image_size``; None keeps the stored
            size, which must then be one size across the dataset.
        num_workers: DataLoader workers.
        cache_dir: where parquet input is converted to Arrow (default: the ``datasets`` cache).
        grouping: ``"pair"`` (one item per pair) or ``"prompt"`` (one item per prompt, each asset
            decoded and scored once; the same pairs and loss, far less image-tower work).
        train_assets: ``"all"`` (every asset in a pair) or ``"correct"`` (each training prompt's
            correct asset alone, no pairs: for text-side training, ``Reward3DModule`` with
            ``preference_weight: 0``; needs ``grouping="prompt"`` and primitives data). Validation
            and test are unchanged.
        build_primitives_if_missing: when ``path`` does not exist, generate the primitives
            preference set there first (``build-primitives`` with ``build_num_prompts`` prompts
            and seed 0; 300 prompts take under a minute), so a config runs on a fresh clone.
        build_num_prompts: prompts of that build.
        extra_sets: further preference sets whose assets join the prompts of ``path``, e.g.
            ``build-generated`` samples of the training prompts (what DreamFL will show the
            reward). The split is made from ``path``'s prompts alone, so adding a set never moves
            a prompt between splits; each extra asset goes where its prompt is. Pairs never cross
            sets (each set ranks its own assets: a generated sample's oracle rank and a
            procedural candidate's defect rank do not compare). Every ``prompt_id`` of an extra
            set must be one of ``path``'s, with the same prompt text; ``asset_id`` stays unique
            across sets. Views of another size need ``image_size``.
        balance_relation_classes: weigh the training split's wrong-relation pairs so prompts
            of the vertical relation and of the horizontal ones count alike (batches carry
            ``pair_weight``; see :mod:`~dreamreward.data.pair_balance`). Validation and test
            pairs always weigh 1.
        defect_weights: multiply the training pairs' weights by their worse asset's defect's
            weight (e.g. ``{wrong_relation: 8}``; see
            :func:`~dreamreward.data.pair_balance.weigh_defects`); validation and test pairs
            always weigh 1.
        train_prompts: train on the first ``train_prompts`` prompts of the training split only
            (its order is the seeded permutation of :func:`split_prompts`, so smaller subsets
            are nested in larger ones); validation, test and novel prompts are unchanged, and so
            are the generated sets' assets of the prompts kept. For data-scale studies
            (``docs/data_scale.py``). None keeps every training prompt.
        train_sets: preference sets of other prompts (e.g. a second build of the world with
            another seed) whose pairs join the training split only; a prompt of a novel
            composition or showing a scene of the main set's validation, test or novel prompts is
            dropped first (see :mod:`~dreamreward.data.train_sets`). ``balance_relation_classes``
            and ``defect_weights`` weigh their pairs too.
        train_set_defects: keep only the ``train_sets`` pairs of a correct asset against one
            with these defects (e.g. ``[wrong_color, swapped_attributes]``); None keeps all. A
            list of lists gives each set its own (null: all its pairs), so one build can join
            twice, all its pairs and its content pairs again.
    """

    def __init__(
        self,
        path: str,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 16,
        image_size: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        grouping: Literal["pair", "prompt"] = "pair",
        build_primitives_if_missing: bool = False,
        build_num_prompts: int = 300,
        train_assets: Literal["all", "correct"] = "all",
        extra_sets: Sequence[str] = (),
        balance_relation_classes: bool = False,
        defect_weights: dict[str, float] | None = None,
        train_prompts: int | None = None,
        train_sets: Sequence[str] = (),
        train_set_defects: Sequence[str] | Sequence[Sequence[str] | None] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(train_sets, str):
            raise TypeError(f"train_sets must be a list of paths, got the string {train_sets!r}")
        self.train_sets = [str(path) for path in train_sets]
        self.train_set_defects = defects_per_set(train_set_defects, len(self.train_sets))
        if train_prompts is not None and train_prompts < 1:
            raise ValueError(f"train_prompts must be >= 1 or None, got {train_prompts}")
        self.train_prompts = train_prompts
        self.balance_relation_classes = balance_relation_classes
        self.defect_weights = dict(defect_weights or {})
        if grouping not in ("pair", "prompt"):
            raise ValueError(f"grouping must be 'pair' or 'prompt', got {grouping!r}")
        if train_assets not in ("all", "correct"):
            raise ValueError(f"train_assets must be 'all' or 'correct', got {train_assets!r}")
        if train_assets == "correct" and grouping != "prompt":
            raise ValueError("train_assets='correct' needs grouping='prompt'")
        self.train_assets = train_assets
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= f < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {f}")
        self.path = path
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.seed, self.batch_size = seed, batch_size
        self.image_size, self.num_workers = image_size, num_workers
        self.cache_dir, self.grouping = cache_dir, grouping
        self.build_primitives_if_missing = build_primitives_if_missing
        self.build_num_prompts = build_num_prompts
        if isinstance(extra_sets, str):
            raise TypeError(f"extra_sets must be a list of paths, got the string {extra_sets!r}")
        self.extra_sets = [str(path) for path in extra_sets]
        self.dataset: datasets.Dataset | None = None
        self.split_prompt_ids: dict[str, list[str]] = {}
        self.pairs: dict[str, list[PreferencePair]] = {}
        self._prompts: dict[str, str] = {}

    def prepare_data(self) -> None:
        """Build the primitives set at ``path`` when asked to and it is missing (rank 0 only)."""
        if self.build_primitives_if_missing and not Path(self.path).exists():
            from dreamreward.data.build_primitives import build_primitives

            build_primitives(self.path, num_prompts=self.build_num_prompts)

    def setup(self, stage: str | None = None) -> None:
        """Load, validate (errors name the bad row and field), split by prompt, build pairs."""
        if self.dataset is not None:
            return
        ds = conform_dataset(load_preference_dataset(self.path, self.cache_dir))
        summary = validate_dataset(ds)
        if self.image_size is None and len(summary.image_sizes) > 1:
            raise ValueError(
                f"{self.path}: views come in several sizes {sorted(summary.image_sizes)}; set "
                "image_size to resize them to one square size"
            )
        meta = ds.select_columns(["prompt_id", "prompt", "composition"])[:]
        extras = [
            self._load_extra_set(k, ds, summary.image_sizes) for k in range(len(self.extra_sets))
        ]
        self._prompts = dict(zip(meta["prompt_id"], meta["prompt"], strict=True))
        compositions = zip(meta["prompt_id"], meta["composition"], strict=True)
        novel = sorted({p for p, c in compositions if c == "novel"})
        novel_set = set(novel)
        seen = [p for p in meta["prompt_id"] if p not in novel_set]
        splits = split_prompts(seen, self.val_fraction, self.test_fraction, self.seed)
        splits["novel"] = novel
        if self.train_prompts is not None:
            if self.train_prompts > len(splits["train"]):
                raise ValueError(
                    f"train_prompts={self.train_prompts}, but {self.path} has only "
                    f"{len(splits['train'])} training prompts"
                )
            splits["train"] = splits["train"][: self.train_prompts]
        # Pairs never cross prompts, so pairing the whole dataset once and routing each pair by
        # its prompt equals pairing each split; indices stay global row indices.
        where = {p: name for name, ids in splits.items() for p in ids}
        self.pairs = {name: [] for name in SPLITS}
        offset = 0
        for part in [ds, *extras]:
            for pair in build_pairs(part):
                if self.train_prompts is not None and pair.prompt_id not in where:
                    continue  # a training prompt left out by train_prompts
                shifted = dataclasses.replace(
                    pair, better=pair.better + offset, worse=pair.worse + offset
                )
                self.pairs[where[pair.prompt_id]].append(shifted)
            offset += len(part)
        held_out = (
            prompt_keys(ds, [p for name in ("val", "test", "novel") for p in splits[name]])
            if self.train_sets
            else set()
        )
        loaded: dict[str, tuple[datasets.Dataset, int]] = {}  # path -> its rows and their offset
        for k, path in enumerate(self.train_sets):
            name = f"train_sets[{k}]"
            if path not in loaded:  # a set given twice is read once; its pairs share the rows
                part = self._load_set(f"{name} ({path})", path, summary.image_sizes)
                loaded[path] = (part, offset)
                extras.append(part)
                offset += len(part)
            part, rows_at = loaded[path]
            defects = self.train_set_defects[k]
            kept = train_set_pairs(part, name, held_out, defects)
            if not kept.pairs:
                raise ValueError(
                    f"{name} ({path}): no training pair left (novel prompts dropped: "
                    f"{kept.dropped_novel}, held-out scenes: {kept.dropped_held_out}, "
                    f"train_set_defects: {defects})"
                )
            self.pairs["train"] += [
                dataclasses.replace(p, better=p.better + rows_at, worse=p.worse + rows_at)
                for p in kept.pairs
            ]
            self._prompts.update(kept.prompts)
        self.split_prompt_ids = {name: splits[name] for name in SPLITS}
        self.dataset = datasets.concatenate_datasets([ds, *extras]) if extras else ds
        if self.balance_relation_classes:
            if "scene" not in self.dataset.column_names:
                raise ValueError(
                    f"balance_relation_classes reads each prompt's relation from the 'scene' "
                    f"column, which {self.path} does not have (primitives data has it)"
                )
            scenes = self.dataset.select_columns(["scene"])[:]["scene"]
            balanced = pair_balance.balance_relation_classes(self.pairs["train"], scenes)
            if balanced == self.pairs["train"]:
                warnings.warn(
                    "balance_relation_classes changed nothing: the training split lacks wrong-"
                    "relation pairs of both relation classes (or their prompts' scenes)",
                    stacklevel=2,
                )
            self.pairs["train"] = balanced
        if self.defect_weights:
            self.pairs["train"] = pair_balance.weigh_defects(
                self.pairs["train"], self.defect_weights
            )

    def _load_extra_set(
        self, k: int, main: datasets.Dataset, sizes: set[tuple[int, int]]
    ) -> datasets.Dataset:
        """``extra_sets[k]`` loaded, validated and checked against the main set (see
        ``extra_sets``); errors name the set."""
        path = self.extra_sets[k]
        name = f"extra_sets[{k}] ({path})"
        extra = self._load_set(name, path, sizes)
        prompts = dict(zip(main["prompt_id"], main["prompt"], strict=True))
        assets = set(main["asset_id"])
        for row, (prompt_id, prompt, asset_id) in enumerate(
            zip(extra["prompt_id"], extra["prompt"], extra["asset_id"], strict=True)
        ):
            if prompt_id not in prompts:
                raise ValueError(
                    f"{name}: row {row} has prompt_id {prompt_id!r}, which {self.path} does not "
                    "have (an extra set adds assets to the main set's prompts)"
                )
            if prompts[prompt_id] != prompt:
                raise ValueError(
                    f"{name}: row {row} gives prompt_id {prompt_id!r} the prompt {prompt!r}, "
                    f"{self.path} gives it {prompts[prompt_id]!r}"
                )
            if asset_id in assets:
                raise ValueError(f"{name}: row {row}'s asset_id {asset_id!r} is already used")
            assets.add(asset_id)
        return extra

    def _load_set(self, name: str, path: str, sizes: set[tuple[int, int]]) -> datasets.Dataset:
        """A further preference set, loaded and validated; errors name it (``name``)."""
        if not Path(path).exists():
            raise FileNotFoundError(f"{name}: no preference set there")
        try:
            extra = conform_dataset(load_preference_dataset(path, self.cache_dir))
            summary = validate_dataset(extra)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from error
        if self.image_size is None and summary.image_sizes | sizes != sizes:
            raise ValueError(
                f"{name}: views of size {sorted(summary.image_sizes)} beside {self.path}'s "
                f"{sorted(sizes)}; set image_size to resize them to one square size"
            )
        return extra

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.dataset is None:
            raise RuntimeError("call setup() before requesting a dataloader")
        items: PairDataset
        if self.grouping == "prompt":
            correct_only = split == "train" and self.train_assets == "correct"
            items = PromptGroupDataset(
                self.dataset, self.pairs[split], self._prompts, self.image_size, correct_only
            )
        else:
            items = PairDataset(self.dataset, self.pairs[split], self._prompts, self.image_size)
        sampler = None
        if shuffle:
            sampler = EpochShuffleSampler(len(items), self.seed)
            sampler.resume_from(self.trainer, self.batch_size, drop_last=False)
        return DataLoader(
            items,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=collate_asset_groups if self.grouping == "prompt" else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> list[DataLoader]:
        """[test pairs, novel-composition pairs] (see :data:`TEST_DATALOADERS`)."""
        return [self._loader(name, shuffle=False) for name in TEST_DATALOADERS]
