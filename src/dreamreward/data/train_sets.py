"""Training-only preference sets of other prompts, kept clear of the held-out prompts.

A second build of the primitives world (another seed) has thousands of prompts the main set does
not have. ``PreferenceDataModule(train_sets=[...])`` trains on them without touching the main
set's split: each such set's pairs join the training split only, and a prompt is dropped first
when it could leak an evaluation:

- its composition is ``"novel"`` (the novel split measures compositions never trained on);
- it has the text of one of the main set's held-out prompts (validation, test, novel), or shows
  one's scene up to what the cameras cannot tell apart (:func:`visual_scene_key`).

Its prompt ids are prefixed with the set's name (``train_sets[k]/``) so they can never merge with
the main set's prompts when batches group assets by prompt.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import datasets

from dreamreward.data.pair_balance import relation_class
from dreamreward.data.pairs import PreferencePair, build_pairs


def visual_scene_key(scene_json: str) -> tuple:
    """A scene (its ``scene`` column, JSON) up to what the cameras cannot tell apart: a
    one-object scene's size, and which of two objects side by side is named first."""
    scene = json.loads(scene_json)
    objects = scene["objects"]
    parts = [(o["shape"], o["color"]) + ((o["size"],) if len(objects) > 1 else ()) for o in objects]
    relation = relation_class(scene_json)  # vertical, horizontal, or None for one object
    if relation is None:
        return ("one", tuple(parts))
    return (relation, tuple(parts) if relation == "vertical" else tuple(sorted(parts)))


def content_keys(prompt: str, scene: str | None) -> set:
    """What identifies a prompt's content: its text, and its visual scene key where the data
    has a scene (so a look-alike is caught across wordings, and data without scenes by text)."""
    return {("text", prompt)} | ({visual_scene_key(scene)} if scene else set())


def prompt_keys(dataset: datasets.Dataset, prompt_ids: Iterable[str] | None = None) -> set:
    """The :func:`content_keys` of the prompts ``prompt_ids`` (or all) of ``dataset``."""
    names = dataset.column_names
    columns = dataset.select_columns(
        ["prompt_id", "prompt"] + (["scene"] if "scene" in names else [])
    )[:]
    wanted = None if prompt_ids is None else set(prompt_ids)
    keys: set = set()
    scenes = columns.get("scene") or [None] * len(columns["prompt_id"])
    for prompt_id, prompt, scene in zip(
        columns["prompt_id"], columns["prompt"], scenes, strict=True
    ):
        if wanted is None or prompt_id in wanted:
            keys |= content_keys(prompt, scene)
    return keys


def defects_per_set(
    train_set_defects: Sequence[str] | Sequence[Sequence[str] | None] | None, n_sets: int
) -> list[list[str] | None]:
    """``PreferenceDataModule(train_set_defects=...)`` as one entry per training set.

    A list of defect names applies to every set; a list of lists (or None entries) gives each
    set its own, so one build can join twice: all its pairs, and its content pairs again.

    Raises:
        ValueError: a per-set list whose length is not the number of ``train_sets``.
        TypeError: a per-set entry that is a single string.
    """
    if train_set_defects is None:
        return [None] * n_sets
    entries = list(train_set_defects)
    if all(isinstance(entry, str) for entry in entries):
        return [list(entries)] * n_sets
    if len(entries) != n_sets:
        raise ValueError(
            f"train_set_defects has {len(entries)} per-set entries for {n_sets} train_sets; "
            f"give one (a list of defects, or null for every pair) per set"
        )
    for k, entry in enumerate(entries):
        if isinstance(entry, str):
            raise TypeError(
                f"train_set_defects[{k}] must be a list of defects or null, got the string "
                f"{entry!r} (a flat list of names applies to every set)"
            )
    return [None if entry is None else list(entry) for entry in entries]


@dataclass(frozen=True)
class TrainSetPairs:
    """A training-only set's pairs (indices into the set itself), and what was dropped.

    Attributes:
        pairs: the kept pairs, prompt ids prefixed with the set's name.
        prompts: prefixed prompt id -> prompt text, for the kept prompts.
        dropped_novel, dropped_held_out: how many prompts each rule dropped.
    """

    pairs: list[PreferencePair]
    prompts: dict[str, str]
    dropped_novel: int
    dropped_held_out: int


def train_set_pairs(
    dataset: datasets.Dataset,
    name: str,
    held_out_keys: set,
    defects: Sequence[str] | None = None,
) -> TrainSetPairs:
    """The pairs of a training-only set ``dataset`` (named ``name`` in prompt ids and errors).

    Args:
        dataset: the set, in the preference schema.
        name: prefix of its prompt ids (``train_sets[0]``).
        held_out_keys: :func:`prompt_keys` of the main set's held-out prompts.
        defects: keep only the pairs of a correct asset (defect ``"none"``) against an asset with
            one of these defects (e.g. the content defects); None keeps every pair.

    Raises:
        ValueError: a name in ``defects`` that no row of the set has, naming it.
    """
    names = dataset.column_names
    columns = dataset.select_columns(
        ["prompt_id", "prompt", "defect"] + [c for c in ("scene", "composition") if c in names]
    )[:]
    n = len(columns["prompt_id"])
    compositions = columns.get("composition") or [None] * n
    scenes = columns.get("scene") or [None] * n
    novel, leaking = set(), set()
    for prompt_id, prompt, scene, composition in zip(
        columns["prompt_id"], columns["prompt"], scenes, compositions, strict=True
    ):
        if composition == "novel":
            novel.add(prompt_id)
        elif content_keys(prompt, scene) & held_out_keys:
            leaking.add(prompt_id)
    wanted = None if defects is None else set(defects)
    row_defects = columns["defect"]
    if wanted is not None and wanted - set(row_defects):
        raise ValueError(
            f"{name}: train_set_defects names {sorted(wanted - set(row_defects))}, which no row "
            f"has (a misspelt name would keep nothing); defects present: {sorted(set(row_defects))}"
        )
    pairs, prompts = [], {}
    for pair in build_pairs(dataset):
        if pair.prompt_id in novel or pair.prompt_id in leaking:
            continue
        if wanted is not None and (
            row_defects[pair.better] != "none" or row_defects[pair.worse] not in wanted
        ):
            continue
        prefixed = f"{name}/{pair.prompt_id}"
        pairs.append(dataclasses.replace(pair, prompt_id=prefixed))
        prompts[prefixed] = columns["prompt"][pair.better]
    return TrainSetPairs(pairs, prompts, len(novel), len(leaking))
