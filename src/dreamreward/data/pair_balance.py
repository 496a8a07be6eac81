"""Training-pair weights: relation classes weighed alike, and chosen defects weighed up.

The primitives world has one vertical relation ("on top of") and five horizontal ones (which its
turning cameras make one), so about 5 in 6 wrong-relation candidates of a two-object prompt are
*stacked* assets under a side-by-side prompt. A judge that finds every stacked asset worse,
whatever the prompt says, wins 5/6 of those pairs without reading anything, and the preference
loss teaches exactly that rule before any reading of the relation (``docs/content_probe.py``:
the side-by-side asset preferred on all 193 held-out pairs after 150 steps; with the classes
weighed equal the same probe read the relation on 98.4% of them). Weighing the two classes so
that each carries half of the wrong-relation pairs' total weight makes the prompt-blind rule
worth exactly a coin.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping, Sequence

from dreamreward.data.pairs import PreferencePair

WRONG_RELATION = "wrong_relation"


def relation_class(scene_json: str | None) -> str | None:
    """``"vertical"`` ("on top of"), ``"horizontal"`` (any other relation) or None (no scene,
    or one object)."""
    if not scene_json:
        return None
    relation = json.loads(scene_json).get("relation")
    if relation is None:
        return None
    return "vertical" if relation == "on top of" else "horizontal"


def balance_relation_classes(
    pairs: Sequence[PreferencePair], scenes: Sequence[str | None]
) -> list[PreferencePair]:
    """The pairs with the wrong-relation ones re-weighted so both relation classes weigh alike.

    A wrong-relation pair of class c (its prompt's relation, read from the better asset's
    ``scene``: every row of a prompt holds the prompt's ground-truth scene) gets weight
    ``n / (2 * n_c)``, n the wrong-relation pairs of both classes: the total weight of those
    pairs is unchanged. Other pairs keep their weight. With one class absent nothing changes.

    Args:
        pairs: the training pairs.
        scenes: per row of the dataset the pairs index, its ``scene`` JSON (or None / "").
    """
    classes = [
        relation_class(scenes[p.better]) if p.defect == WRONG_RELATION else None for p in pairs
    ]
    counts = Counter(c for c in classes if c is not None)
    if len(counts) < 2:
        return list(pairs)
    total = sum(counts.values())
    return [
        p if c is None else dataclasses.replace(p, weight=p.weight * total / (2 * counts[c]))
        for p, c in zip(pairs, classes, strict=True)
    ]


def weigh_defects(
    pairs: Sequence[PreferencePair], defect_weights: Mapping[str, float]
) -> list[PreferencePair]:
    """The pairs with each weight multiplied by ``defect_weights[pair.defect]`` (the worse
    asset's defect; others unchanged).

    The content comparisons the reward is for are a small share of a prompt's pairs (a wrong
    relation is about 3% of the primitives pairs), so their gradient is a small share of the
    loss's; this raises it without changing which pairs exist.

    Raises:
        ValueError: a weight that is not positive, or a defect no pair has (a misspelt name
            would otherwise weigh nothing), naming it.
    """
    present = {p.defect for p in pairs}
    for defect, weight in defect_weights.items():
        if not weight > 0:
            raise ValueError(f"defect_weights[{defect!r}] must be positive, got {weight}")
        if defect not in present:
            raise ValueError(
                f"defect_weights names {defect!r}, which no training pair has; defects present: "
                f"{sorted(present)}"
            )
    return [
        dataclasses.replace(p, weight=p.weight * defect_weights[p.defect])
        if p.defect in defect_weights
        else p
        for p in pairs
    ]
