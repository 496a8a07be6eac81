"""Errors raised when a weights file does not fit the model it is loaded into."""

from __future__ import annotations

import os
from collections.abc import Iterable


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


__all__ = ["CheckpointFormatError", "CheckpointMismatchError"]
