"""The config stack of the shipped CPU-scale Reward3D, as the docs/ scripts build it.

The shipped model was trained with ``configs/reward3d/primitives.yaml`` +
``presets/text_side.yaml`` + ``presets/generated.yaml`` and then, continuing it, with
``presets/balanced_relations.yaml`` + ``second_build.yaml`` + ``second_build_interleaved.yaml``
on top, which change only what it trains on (training-only sets, pair weights, steps); scoring it
again with the first three (and its export's adapter as ``init_weights``) rebuilds exactly its
architecture and its validation and test data. The scripts only score, so the head-only baseline
is off.
"""

from __future__ import annotations

from collections.abc import Sequence


def shipped_reward3d_args(
    init_weights: str, extra_sets: Sequence[str], overlays: Sequence[str] = ()
) -> list[str]:
    """``build_from_config`` arguments: the shipped stack, then ``overlays`` (more config files),
    the generated ``extra_sets`` to load beside the procedural pairs, and the weights to start
    from (an export folder or a checkpoint)."""
    return [
        "--config",
        "configs/reward3d/primitives.yaml",
        "--config",
        "configs/reward3d/presets/text_side.yaml",
        "--config",
        "configs/reward3d/presets/generated.yaml",
        "--model.init_args.baselines",
        "false",
        *(arg for overlay in overlays for arg in ("--config", overlay)),
        "--data.init_args.extra_sets",
        "[" + ", ".join(extra_sets) + "]",
        "--model.init_args.init_weights",
        init_weights,
    ]
