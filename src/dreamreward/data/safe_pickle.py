"""Loading untrusted pickles safely: only plain containers, numbers and numpy arrays.

3DRewardDB's cameras come as pickles (``data/<k>/cam_<i>.pkl``), and unpickling runs whatever
global a file names. :class:`RestrictedUnpickler` resolves only the globals a numpy array or a
nested list of numbers needs, rejects any other before anything is called, and caps the file
size and every array's size (a forged shape cannot allocate gigabytes).
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# A camera pickle holds a few dozen floats: anything large is refused before unpickling.
MAX_PICKLE_BYTES = 1 << 20

# bytearray stays out: bytearray(n) would let a 40-byte pickle allocate n bytes. The others only
# hold what the (size-capped) file spells out.
_BUILTIN_TYPES = ("set", "frozenset", "complex", "list", "tuple", "dict")
# No array a camera pickle legitimately holds comes near this; a forged shape would.
MAX_ARRAY_BYTES = 8 << 20
_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("builtins", name) for name in _BUILTIN_TYPES}
    | {
        ("collections", "OrderedDict"),
        # Protocols 0-2 encode bytes as codecs.encode(latin-1 text): a pure transformation.
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        # Protocol 5 rebuilds contiguous arrays with frombuffer (refuses object dtypes).
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)
_MODULE_ALIASES = {"__builtin__": "builtins"}  # Python 2 name in protocol 0-2 pickles


def _check_array_size(shape: Any, dtype: Any, source: str) -> None:

    try:
        dims = (int(shape),) if np.isscalar(shape) else tuple(int(d) for d in shape)
        itemsize = np.dtype(dtype).itemsize
    except (TypeError, ValueError) as error:
        raise pickle.UnpicklingError(f"{source}: malformed array header ({error})") from None
    count = 1
    for d in dims:
        if d < 0:
            raise pickle.UnpicklingError(f"{source}: negative array dimension {dims}")
        count *= d
    if count * itemsize > MAX_ARRAY_BYTES:
        raise pickle.UnpicklingError(
            f"{source}: refusing an array of shape {dims} ({count * itemsize} bytes) from an "
            f"untrusted pickle (limit {MAX_ARRAY_BYTES} bytes)"
        )


def _bounded_numpy(name: str, real: Any, source: str) -> Any:
    """Wrap numpy's array constructors so a forged shape cannot allocate gigabytes."""

    if name == "ndarray":

        class BoundedNdarray(np.ndarray):
            def __new__(cls, shape, dtype=float, *args, **kwargs):  # noqa: D102
                _check_array_size(shape, dtype, source)
                return np.ndarray.__new__(np.ndarray, shape, dtype, *args, **kwargs)

        return BoundedNdarray
    if name == "_reconstruct":

        def reconstruct(subtype, shape, dtype):
            _check_array_size(shape, dtype, source)
            return real(np.ndarray, shape, dtype)

        return reconstruct
    return real


def _resolve_allowed(module: str, name: str) -> Any:
    """Import an allowed global; numpy 1.x calls ``numpy._core`` ``numpy.core`` and vice versa."""
    candidates = [module]
    if module.startswith("numpy._core."):
        candidates.append("numpy.core." + module.removeprefix("numpy._core."))
    elif module.startswith("numpy.core."):
        candidates.insert(0, "numpy._core." + module.removeprefix("numpy.core."))
    for candidate in candidates:
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"allowed global {module}.{name} is not importable here")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for untrusted camera files: plain containers, numbers and numpy arrays only.

    Every global a pickle names goes through :meth:`find_class`; anything outside the allow-list
    raises :class:`pickle.UnpicklingError` naming the source and the global, before it is
    imported or called. Persistent ids are refused too.

    Args:
        file: a binary file object.
        source: the file name used in error messages.
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str = "<stream>") -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        key = (_MODULE_ALIASES.get(module, module), name)
        if key not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"{self.source}: forbidden global '{module}.{name}' in an untrusted pickle; "
                "only plain containers, numbers and numpy arrays are allowed (nothing was "
                "executed). If the file is trusted, convert it to a .npy array first."
            )
        return _bounded_numpy(name, _resolve_allowed(*key), self.source)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"{self.source}: persistent ids are not allowed ({pid!r})")


def restricted_load(path: str | Path, max_bytes: int = MAX_PICKLE_BYTES) -> Any:
    """Unpickle an untrusted file with :class:`RestrictedUnpickler`.

    Raises:
        pickle.UnpicklingError: a forbidden global, a corrupt stream, or a file over ``max_bytes``.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise pickle.UnpicklingError(
            f"{path}: {size} bytes is too large for a camera pickle (limit {max_bytes})"
        )
    with path.open("rb") as fh:
        try:
            return RestrictedUnpickler(fh, source=str(path)).load()
        except pickle.UnpicklingError as err:
            if str(err).startswith(str(path)):  # ours: already names the file
                raise
            raise pickle.UnpicklingError(f"{path}: not a valid pickle ({err})") from err
        except Exception as err:  # truncated/garbled streams raise many types
            raise pickle.UnpicklingError(f"{path}: not a valid pickle ({err!r})") from err
