"""Backend selection between our pure-PyTorch kernels and NVIDIA Kaolin.

Kaolin is never imported at module import time: it is an optional CUDA accelerator that cannot
be installed from PyPI. Every op that has a Kaolin twin takes ``backend: "auto" | "torch" |
"kaolin"``; :func:`resolve_backend` turns that into the backend actually used.

- ``"torch"``  always our implementation (CPU or CUDA).
- ``"kaolin"`` Kaolin, or a clear error when it is missing or the tensors are not on CUDA.
- ``"auto"``   Kaolin when it imports *and* the tensors live on CUDA, otherwise torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Literal

import torch

Backend = Literal["auto", "torch", "kaolin"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "kaolin")


def import_kaolin() -> ModuleType | None:
    """Return the ``kaolin`` module if a working install is importable, else ``None``.

    The PyPI placeholder ``kaolin==0.1`` raises ImportError on import, so it counts as absent.
    Looked up every call (not cached) so tests can insert a fake module in ``sys.modules``.
    """
    try:
        return importlib.import_module("kaolin")
    except Exception:  # ImportError, or a broken CUDA extension raising OSError/RuntimeError
        return None


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """Decide which implementation runs an op.

    Args:
        backend: ``"auto"``, ``"torch"`` or ``"kaolin"``.
        device: device of the op's input tensors.

    Returns:
        ``"torch"`` or ``"kaolin"``.

    Raises:
        ValueError: unknown backend name.
        RuntimeError: ``"kaolin"`` requested but Kaolin is missing or the tensors are not on CUDA.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cuda = torch.device(device).type == "cuda"
    if backend == "torch":
        return "torch"
    if backend == "kaolin":
        if import_kaolin() is None:
            raise RuntimeError(
                "backend='kaolin' but Kaolin is not importable. Install it from NVIDIA's index "
                "(see README, 'Optional: Kaolin') or use backend='torch' / 'auto'."
            )
        if not on_cuda:
            raise RuntimeError(
                f"backend='kaolin' needs CUDA tensors (Kaolin's rendering kernels are CUDA-only), "
                f"got tensors on {torch.device(device)}; use backend='auto' or 'torch'."
            )
        return "kaolin"
    return "kaolin" if on_cuda and import_kaolin() is not None else "torch"
