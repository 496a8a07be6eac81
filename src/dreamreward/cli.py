"""The command line: ``python -m dreamreward {fit,validate,test,predict} --config ...``.

Extra subcommands: ``python -m dreamreward build-primitives --out DIR [--num_prompts N]`` and
``python -m dreamreward convert-rewarddb --root 3DRewardDB --out DIR``;
``python -m dreamreward score --prompt TEXT --inputs PATH [PATH ...] --out scores.csv``;
``python -m dreamreward build-multiview --out DIR`` (the prior's render set);
``python -m dreamreward sample --prompt TEXT --out grid.png`` (4 views from the prior);
``python -m dreamreward evaluate-dreamfl --out DIR`` (DreamFL vs SDS over a prompt set);
``python -m dreamreward build-generated --out DIR`` (the prior's samples of a split's prompts,
ranked by the oracle), ``build-blends --generated DIR --out DIR`` (those samples blended towards
the truth, ranked by how far), ``build-from-runs --runs DIR --out DIR`` (finished DreamFL / SDS
runs of training prompts as such a set) and ``evaluate-reward3d --data DIR`` (does a Reward3D
rank them as the oracle does).

Run as a command (``entry``), everything sits behind ``error_boundary``: a mistake in the input is
one line naming the field or file, exit code 2; a bug keeps its traceback.

The Lightning subcommands themselves are :mod:`dreamreward.lightning_cli`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from jsonargparse import CLI

from dreamreward.error_boundary import run_with_error_boundary
from dreamreward.lightning_cli import DreamRewardCLI, build_from_config, run_lightning

__all__ = ["DreamRewardCLI", "build_from_config", "entry", "main"]


def _extra_commands() -> dict[str, Callable[..., object]]:
    """Subcommands beside Lightning's, each a typed function (jsonargparse builds the parser)."""
    from dreamreward.data.build_blends import build_blends
    from dreamreward.data.build_from_runs import build_from_runs
    from dreamreward.data.build_generated import build_generated
    from dreamreward.data.build_primitives import build_primitives
    from dreamreward.data.multiview import build_multiview
    from dreamreward.data.rewarddb import convert_rewarddb
    from dreamreward.evaluate_dreamfl import evaluate_dreamfl
    from dreamreward.evaluate_reward3d import evaluate_reward3d
    from dreamreward.pipelines.sampling import sample_views
    from dreamreward.pipelines.scoring import score_files

    return {
        "build-primitives": build_primitives,
        "build-generated": build_generated,
        "build-blends": build_blends,
        "build-from-runs": build_from_runs,
        "build-multiview": build_multiview,
        "convert-rewarddb": convert_rewarddb,
        "score": score_files,
        "sample": sample_views,
        "evaluate-dreamfl": evaluate_dreamfl,
        "evaluate-reward3d": evaluate_reward3d,
    }


def main(args: list[str] | None = None) -> DreamRewardCLI | object:
    """Run ``fit | validate | test | predict`` (LightningCLI) or an extra subcommand."""
    # Nothing in this project downloads weights at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv = sys.argv[1:] if args is None else args
    extra = _extra_commands()
    if argv and argv[0] in extra:
        return CLI(extra[argv[0]], args=argv[1:], as_positional=False)
    return run_lightning(argv)


def entry() -> None:
    """The ``dreamreward`` / ``python -m dreamreward`` command: :func:`main` behind the error
    boundary (a user's mistake is one line and exit code 2; see ``error_boundary``)."""
    run_with_error_boundary(main, sys.argv[1:])


if __name__ == "__main__":
    entry()
