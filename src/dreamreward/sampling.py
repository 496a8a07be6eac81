"""Moved to :mod:`dreamreward.pipelines.sampling`; this alias is kept for one release
(:mod:`dreamreward.moved_modules`)."""

from dreamreward.moved_modules import alias_moved_module

alias_moved_module(__name__, "dreamreward.pipelines.sampling")
