"""Modules that moved keep their old import path for one release.

An alias module calls :func:`alias_moved_module` and nothing else: ``import`` of the old name
then gives the new module itself (attributes set on it, e.g. by monkeypatching, are the new
module's), with a ``FutureWarning`` naming the new place.
"""

from __future__ import annotations

import importlib
import sys
import warnings


def alias_moved_module(old: str, new: str) -> None:
    """Make ``sys.modules[old]`` the module ``new``, warning the importer."""
    warnings.warn(
        f"{old} moved to {new} (the old name works for this release)", FutureWarning, stacklevel=3
    )
    sys.modules[old] = importlib.import_module(new)
