"""Camera poses as 3DRewardDB's pickles may hold them, turned into our convention.

Ours: camera-to-world, Z-up world, OpenGL camera axes (:mod:`dreamreward.render.cameras`).
:func:`parse_cameras` accepts the shapes and dict keys listed in :mod:`dreamreward.data.rewarddb`
and checks that each matrix is a rigid pose; :func:`to_our_c2w` converts from the conventions a
file may use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

CameraConvention = Literal["blender", "opengl", "opencv"]

_C2W_KEYS = ("c2w", "camera", "cameras", "pose", "poses", "transform_matrix")
_W2C_KEYS = ("w2c", "extrinsic", "extrinsics")

# World change Y-up -> Z-up: (x, y, z) -> (x, -z, y), a +90 degree turn about X.
_Y_UP_TO_Z_UP = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
# Camera axes OpenCV (x right, y down, z forward) -> OpenGL (x right, y up, z back).
_OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def to_our_c2w(matrices: np.ndarray, convention: CameraConvention = "blender") -> np.ndarray:
    """(N, 4, 4) camera-to-world in ``convention`` -> (N, 4, 4) in ours (Z-up, OpenGL axes).

    - ``"blender"``: Z-up world, OpenGL camera axes (MVDream ``get_camera(blender_coord=True)``,
      threestudio): already ours.
    - ``"opengl"``: Y-up world, OpenGL camera axes (MVDream ``blender_coord=False``): the world
      is turned Y-up -> Z-up.
    - ``"opencv"``: Z-up world, OpenCV camera axes (y down, looking down +z): camera axes flipped.

    The single place to adjust once the real pickles are seen. Translations are kept as they are.
    """
    if convention == "blender":
        return matrices.copy()
    if convention == "opengl":
        return _Y_UP_TO_Z_UP @ matrices
    if convention == "opencv":
        return matrices @ _OPENCV_TO_OPENGL
    raise ValueError(f"unknown camera convention {convention!r}; use blender, opengl or opencv")


MAX_CAMERA_VALUES = 1 << 16  # 4096 flattened 4x4 matrices: far more views than any asset has


def _check_nested_size(obj: Any, where: str, limit: int = MAX_CAMERA_VALUES) -> None:
    """Count the leaves of nested lists / tuples before numpy converts them.

    A pickle may reference one list many times (memo), so a few kilobytes can spell out a
    nested structure of billions of numbers; the count stops at ``limit``, whatever the file
    size. Arrays (already sized by the unpickler's check) count by their size.
    """
    count = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            count += 1  # the container itself: endless empty lists are refused too
            stack.extend(item)
        elif isinstance(item, np.ndarray):
            count += item.size
        else:
            count += 1
        if count > limit:
            raise ValueError(
                f"{where}: refusing a camera structure of more than {limit} values from an "
                "untrusted pickle (nested lists that share their elements?)"
            )


def parse_cameras(obj: Any, source: str) -> np.ndarray:
    """An unpickled camera object -> (N, 4, 4) float64 camera-to-world (file's convention).

    Raises:
        ValueError: naming ``source`` (and the dict key), for an unknown structure, a bad shape,
            non-finite values, or a rotation that is not orthonormal.
    """
    inverse = False
    where = source
    if isinstance(obj, Mapping):
        key = next((k for k in (*_C2W_KEYS, *_W2C_KEYS) if k in obj), None)
        if key is None:
            raise ValueError(
                f"{source}: camera dict has keys {sorted(map(str, obj))}; expected one of "
                f"{_C2W_KEYS} (camera-to-world) or {_W2C_KEYS} (world-to-camera)"
            )
        inverse, where, obj = key in _W2C_KEYS, f"{source}[{key!r}]", obj[key]
    _check_nested_size(obj, where)
    try:
        arr = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: not a numeric camera array ({err})") from err
    shape = arr.shape
    if shape[-1:] == (16,) and arr.ndim in (1, 2):
        arr = arr.reshape(-1, 4, 4)  # flattened row-major, as MVDream stores them
    elif shape[-2:] in ((4, 4), (3, 4)) and arr.ndim in (2, 3):
        arr = arr.reshape(-1, *shape[-2:])
        if shape[-2] == 3:
            bottom = np.broadcast_to([0.0, 0.0, 0.0, 1.0], (arr.shape[0], 1, 4))
            arr = np.concatenate([arr, bottom], axis=1)
    else:
        raise ValueError(
            f"{where}: camera array of shape {shape}; expected (16,), (4, 4), (3, 4) or a stack "
            "(N, 16), (N, 4, 4), (N, 3, 4)"
        )
    if arr.shape[0] == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{where}: empty camera array or NaN/infinite values")
    if not np.allclose(arr[:, 3], [0.0, 0.0, 0.0, 1.0], atol=1e-4):
        raise ValueError(f"{where}: bottom row of a camera matrix is not (0, 0, 0, 1)")
    rot = arr[:, :3, :3]
    if not np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-3):
        raise ValueError(f"{where}: the 3x3 rotation part is not orthonormal (not a rigid pose)")
    return np.linalg.inv(arr) if inverse else arr
