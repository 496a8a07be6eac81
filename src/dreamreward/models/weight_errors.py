"""Errors raised when a weights file does not fit the model it is loaded into."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys/shapes/kind do not match the model. Attributes list the details."""

    def __init__(
        self,
        message: str,
        path: str | os.PathLike[str] | None = None,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.missing = tuple(missing)
        self.unexpected = tuple(unexpected)
        self.mismatched = tuple(mismatched)


class CheckpointFormatError(ValueError):
    """The file is not a plain state dict of tensors that ``weights_only`` loading accepts."""


def check_state_dict(
    expected: Mapping[str, Any],
    state: Mapping[str, Any],
    what: str,
    path: str | os.PathLike[str] | None = None,
    may_be_missing: Iterable[str] = (),
) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` has exactly the keys of
    ``expected`` (apart from ``may_be_missing``) with the same shapes.

    Args:
        expected: the model's state dict (key -> tensor).
        state: the loaded one.
        what: what ``state`` is, for the message (e.g. ``"/x.pth is not an EfficientNet-Lite0
            state_dict"``).
        path: the file, recorded on the error.
        may_be_missing: keys the model may keep at their initialisation.
    """
    missing = sorted(set(expected) - set(state) - set(may_be_missing))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    )
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(
            f"{what}: missing {missing[:8]}, unexpected {unexpected[:8]}, "
            f"mis-shaped {mismatched[:8]}",
            path=path,
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )


__all__ = ["CheckpointFormatError", "CheckpointMismatchError", "check_state_dict"]
