"""Moved to :mod:`dreamreward.pipelines.sampling`; this alias is kept for one release.

``import dreamreward.sampling`` gives that module itself (so attributes set on it, e.g. by tests'
monkeypatching, are the pipeline's), with a ``FutureWarning``.
"""

import importlib
import sys
import warnings

warnings.warn(
    "dreamreward.sampling moved to dreamreward.pipelines.sampling "
    "(the old name works for this release)",
    FutureWarning,
    stacklevel=2,
)
sys.modules[__name__] = importlib.import_module("dreamreward.pipelines.sampling")
