"""Moved to :mod:`dreamreward.pipelines.scoring`; this alias is kept for one release.

``import dreamreward.scoring`` gives that module itself (so attributes set on it, e.g. by tests'
monkeypatching, are the pipeline's), with a ``FutureWarning``.
"""

import importlib
import sys
import warnings

warnings.warn(
    "dreamreward.scoring moved to dreamreward.pipelines.scoring "
    "(the old name works for this release)",
    FutureWarning,
    stacklevel=2,
)
sys.modules[__name__] = importlib.import_module("dreamreward.pipelines.scoring")
