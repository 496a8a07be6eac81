"""docs/binding_probe.py keeps working, and the finding it documents holds for the shipped
Reward3D: swapping a two-object prompt's colours moves the text encoder's per-token states, and
mean pooling (the shipped backbone's ``text_pooling``) cancels most of that change."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from dreamreward.models.reward3d.export import load_reward3d

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "binding_probe.py"


def test_mean_pooling_cancels_most_of_a_colour_swap() -> None:
    spec = importlib.util.spec_from_file_location("binding_probe", SCRIPT)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    results = probe.measure(load_reward3d().eval(), scenes=3, split="novel")
    assert set(results) == {"colour", "swapped colours"}
    for row in results.values():
        assert all(len(values) == 3 for values in row.values())
        assert all(math.isfinite(v) for values in row.values() for v in values)

    # Measured on 40 novel scenes: pooled / per-token change 0.24-0.71 for a swap (mean change
    # 0.07 against 0.18), 0.77-1.21 for a colour edit (0.28 / 0.28).
    def pooled_share(row: dict[str, list[float]]) -> float:
        return sum(row["pooled, text side"]) / sum(row["tokens before pooling, text side"])

    assert pooled_share(results["swapped colours"]) < 0.75 < pooled_share(results["colour"])
