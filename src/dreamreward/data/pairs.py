"""Preference pairs from per-prompt rankings, as ImageReward builds them.

For every prompt, every two of its assets whose ranks differ form one (better, worse) pair;
ties are skipped. n assets with distinct ranks give n(n-1)/2 pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets

from dreamreward.data.schema import RATING_AXES

NO_AXIS = "none"
_PAIR_COLUMNS = ["prompt_id", "rank", "defect", "ratings"]


@dataclass(frozen=True)
class PreferencePair:
    """One comparison of two assets of the same prompt.

    Attributes:
        better, worse: row indices (into the dataset or row list given to :func:`build_pairs`).
        prompt_id: the prompt both assets answer.
        defect: the worse asset's ``defect`` (for per-failure-type accuracy).
        axis: the rating axis on which the better asset leads the most (signed difference
            better - worse; on equal leads the first of ``alignment, fidelity, consistency``);
            ``"none"`` when it leads on no axis (for per-axis accuracy).
        weight: how much the pair counts in the training loss (1; see
            :func:`~dreamreward.data.pair_balance.balance_relation_classes`).
    """

    better: int
    worse: int
    prompt_id: str
    defect: str
    axis: str
    weight: float = 1.0


def leading_axis(better: Mapping[str, Any], worse: Mapping[str, Any]) -> str:
    """The axis of :data:`RATING_AXES` where ``better - worse`` is largest and positive."""
    best, lead = NO_AXIS, 0.0
    for axis in RATING_AXES:
        diff = float(better[axis]) - float(worse[axis])
        if diff > lead:  # strict: the first axis wins a tie
            best, lead = axis, diff
    return best


def _columns(dataset_or_rows: datasets.Dataset | Sequence[Mapping[str, Any]]) -> dict[str, list]:
    if isinstance(dataset_or_rows, datasets.Dataset):
        # Only the small columns: images are never touched. Slicing honours an indices mapping
        # (a .select()/.filter() view), which the raw Arrow table would not.
        return dataset_or_rows.select_columns(_PAIR_COLUMNS)[:]
    rows = list(dataset_or_rows)
    out: dict[str, list] = {c: [] for c in _PAIR_COLUMNS}
    for index, row in enumerate(rows):
        for c in _PAIR_COLUMNS:
            if c not in row:
                raise ValueError(f"row {index}: field {c!r} is missing (needed to build pairs)")
            out[c].append(row[c])
    return out


def build_pairs(
    dataset_or_rows: datasets.Dataset | Sequence[Mapping[str, Any]],
) -> list[PreferencePair]:
    """All (better, worse) pairs within each prompt, ties skipped.

    Order (deterministic): prompts in order of first appearance; within a prompt, assets sorted
    by (rank, row index) and pairs enumerated as ``(a_i, a_j)`` for ``i < j`` in that order, so
    the best asset's pairs come first. Ranks [1, 2, 2, 3] give 5 pairs.

    Args:
        dataset_or_rows: a dataset in the preference schema, or a sequence of row dicts with at
            least ``prompt_id``, ``rank``, ``defect`` and ``ratings``.

    Returns:
        pairs whose indices point into ``dataset_or_rows``.
    """
    cols = _columns(dataset_or_rows)
    groups: dict[str, list[int]] = {}
    for index, prompt_id in enumerate(cols["prompt_id"]):
        groups.setdefault(prompt_id, []).append(index)
    ranks, defects, ratings = cols["rank"], cols["defect"], cols["ratings"]
    pairs: list[PreferencePair] = []
    for prompt_id, members in groups.items():
        ordered = sorted(members, key=lambda i: (ranks[i], i))
        for a, better in enumerate(ordered):
            for worse in ordered[a + 1 :]:
                if ranks[better] == ranks[worse]:
                    continue
                axis = leading_axis(ratings[better], ratings[worse])
                pairs.append(PreferencePair(better, worse, prompt_id, defects[worse], axis))
    return pairs
