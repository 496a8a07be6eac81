"""The 3DRewardDB-layout loader on a small fixture, and the restricted camera unpickler."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreamreward.data.camera_files import to_our_c2w
from dreamreward.data.pairs import build_pairs
from dreamreward.data.preference import PreferenceDataModule
from dreamreward.data.rewarddb import convert_rewarddb, load_rewarddb
from dreamreward.data.safe_pickle import RestrictedUnpickler, restricted_load
from dreamreward.data.schema import PREFERENCE_FEATURES, validate_dataset
from dreamreward.render.cameras import orbit_cameras

SIZE = 8


def _c2w(count: int) -> np.ndarray:
    """(count, 4, 4) orbit cameras (our convention = the default "blender" one)."""
    azimuths = torch.arange(count, dtype=torch.float32) * (360.0 / count)
    return orbit_cameras(15.0, azimuths, 2.0, 40.0, SIZE).c2w.numpy()


def _color(asset: int, view: int) -> tuple[int, int, int]:
    return (10 + 40 * asset, 20 * view, 255 - 10 * view)


def _tile(colors: list[tuple[int, int, int]], layout: str) -> Image.Image:
    """Solid-colour views of SIZE x SIZE tiled as a horizontal strip or a square grid."""
    n = len(colors)
    if layout == "strip":
        img = Image.new("RGB", (n * SIZE, SIZE))
        for t, c in enumerate(colors):
            img.paste(c, (t * SIZE, 0, (t + 1) * SIZE, SIZE))
        return img
    g = int(n**0.5)
    img = Image.new("RGB", (g * SIZE, g * SIZE))
    for t, c in enumerate(colors):
        x, y = (t % g) * SIZE, (t // g) * SIZE
        img.paste(c, (x, y, x + SIZE, y + SIZE))
    return img


def _write_fixture(root: Path) -> Path:
    """Prompt 0: one png per asset (strip of 4, 2x2 grid, strip of 8 views), (N, 16) arrays,
    column-form ratings and per-asset ranks. Prompt 1: one RGBA png per view (2 assets x 4),
    dict pickles with a (4, 4) ``c2w``, row-form ratings, no ranking (ranked by score)."""
    d0, d1 = root / "data" / "0", root / "data" / "1"
    d0.mkdir(parents=True)
    d1.mkdir(parents=True)
    for i, (count, layout) in enumerate([(4, "strip"), (4, "grid"), (8, "strip")]):
        _tile([_color(i, v) for v in range(count)], layout).save(d0 / f"{i}.png")
        with (d0 / f"cam_{i}.pkl").open("wb") as fh:
            pickle.dump(_c2w(count).reshape(count, 16).astype(np.float32), fh)
    cams = _c2w(4)
    for a in range(2):
        for v in range(4):
            i = a * 4 + v
            Image.new("RGBA", (SIZE, SIZE), (*_color(a, v), 255)).save(d1 / f"{i}.png")
            with (d1 / f"cam_{i}.pkl").open("wb") as fh:
                pickle.dump({"c2w": cams[v].astype(np.float64)}, fh, protocol=5)
    doc = [
        {
            "prompt": "a red chair",
            "score": [4.5, 5.0, 2.0],
            "alignment": [4, 5, 2],
            "fidelity": [5, 5, 2],
            "consistency": [5, 6, 1],
            "ranking": [2, 1, 2],
        },
        {
            "text": "a blue car",
            "ratings": [
                {"score": 3.0, "alignment": 3, "fidelity": 3, "consistency": 3},
                {"score": 4.0, "alignment": 4, "fidelity": 5, "consistency": 3},
            ],
        },
    ]
    (root / "prompt_reward.json").write_text(json.dumps(doc))
    return root


@pytest.fixture
def rewarddb(tmp_path) -> Path:
    return _write_fixture(tmp_path / "3DRewardDB")


def test_load_fixture(rewarddb, tmp_path) -> None:
    ds = load_rewarddb(rewarddb, cache_dir=str(tmp_path / "cache"))
    assert ds.features == PREFERENCE_FEATURES
    summary = validate_dataset(ds, image_size=SIZE)
    assert (summary.num_rows, summary.num_prompts) == (5, 2)
    assert ds["asset_id"] == ["0/0", "0/1", "0/2", "1/0", "1/1"]
    assert ds["prompt"] == ["a red chair"] * 3 + ["a blue car"] * 2
    assert ds["rank"] == [2, 1, 2, 2, 1]  # prompt 1 ranked by score
    assert set(ds["defect"]) == {"unknown"} and set(ds["composition"]) == {"seen"}
    # Views: strip, 2x2 grid read row-major, 8 views thinned to 0, 2, 4, 6; RGBA -> RGB.
    expected_views = {0: [0, 1, 2, 3], 1: [0, 1, 2, 3], 2: [0, 2, 4, 6], 3: [0, 1, 2, 3]}
    for row_index, views in expected_views.items():
        asset = row_index % 3
        got = [np.asarray(v)[0, 0].tolist() for v in ds[row_index]["views"]]
        assert got == [list(_color(asset, v)) for v in views], row_index
    cams = np.asarray(ds[2]["cameras"]).reshape(4, 4, 4)
    np.testing.assert_allclose(cams, _c2w(8)[[0, 2, 4, 6]], atol=1e-6)
    np.testing.assert_allclose(np.asarray(ds[4]["cameras"]).reshape(4, 4, 4), _c2w(4), atol=1e-6)
    assert ds[0]["ratings"] == {"alignment": 4, "fidelity": 5, "consistency": 5, "overall": 4.5}
    pairs = build_pairs(ds)
    assert [(p.better, p.worse, p.axis) for p in pairs] == [
        (1, 0, "alignment"),
        (1, 2, "consistency"),
        (4, 3, "fidelity"),
    ]


def test_convert_then_datamodule(rewarddb, tmp_path) -> None:
    out = tmp_path / "converted"
    convert_rewarddb(str(rewarddb), str(out), image_size=16, cache_dir=str(tmp_path / "cache"))
    dm = PreferenceDataModule(str(out), val_fraction=0, test_fraction=0, batch_size=8)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["better_views"].shape == (3, 4, 3, 16, 16)
    assert sorted(batch["prompt"]) == ["a blue car", "a red chair", "a red chair"]
    assert set(batch["defect"]) == {"unknown"}


def test_resize_max_prompts_and_scales(rewarddb, tmp_path) -> None:
    ds = load_rewarddb(
        rewarddb,
        image_size=16,
        max_prompts=1,
        rating_range=(0, 10),
        cache_dir=str(tmp_path / "cache"),
    )
    assert len(ds) == 3
    validate_dataset(ds, image_size=16)
    # 5 on a 0-10 scale is 3.5 on 1-6 (rounded half up for the integer axes).
    assert ds[1]["ratings"]["alignment"] == 4
    assert ds[1]["ratings"]["overall"] == pytest.approx(3.5)


def test_ranking_order_format(rewarddb, tmp_path) -> None:
    doc = json.loads((rewarddb / "prompt_reward.json").read_text())
    doc[0]["ranking"] = [1, [0, 2]]  # asset 1 best, assets 0 and 2 tied
    doc[1]["ranking"] = [1, 0]
    (rewarddb / "prompt_reward.json").write_text(json.dumps(doc))
    ds = load_rewarddb(rewarddb, ranking_format="order", cache_dir=str(tmp_path / "cache"))
    assert ds["rank"] == [2, 1, 2, 2, 1]


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: d[0].pop("fidelity"), r"prompt_reward\.json: prompt '0': missing ratings"),
        (lambda d: d[0]["alignment"].__setitem__(1, 9), r"prompt '0' asset 1 alignment: .* 9"),
        (lambda d: d[1].pop("text"), r"prompt '1': missing prompt text"),
        (lambda d: d[0].__setitem__("ranking", [1, 2]), r"\['ranking'\]: 2 ranks for 3 assets"),
        (lambda d: d[1]["ratings"].append(d[1]["ratings"][0]), r"8 png files do not group"),
    ],
)
def test_json_errors_name_file_and_key(rewarddb, tmp_path, edit, pattern) -> None:
    doc = json.loads((rewarddb / "prompt_reward.json").read_text())
    edit(doc)
    (rewarddb / "prompt_reward.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=pattern):
        load_rewarddb(rewarddb, cache_dir=str(tmp_path / "cache"))


def test_camera_and_image_errors(rewarddb, tmp_path) -> None:
    cam = rewarddb / "data" / "0" / "cam_1.pkl"
    with cam.open("wb") as fh:
        pickle.dump(np.ones((4, 3)), fh)
    with pytest.raises(ValueError, match=r"cam_1\.pkl: camera array of shape \(4, 3\)"):
        load_rewarddb(rewarddb, cache_dir=str(tmp_path / "cache"))
    with cam.open("wb") as fh:
        pickle.dump(_c2w(3).reshape(3, 16), fh)  # 3 cameras: a 16x16 png is no 3-view tiling
    with pytest.raises(ValueError, match=r"1\.png: a 16x16 image cannot hold 3 square views"):
        load_rewarddb(rewarddb, cache_dir=str(tmp_path / "cache"))
    with cam.open("wb") as fh:
        pickle.dump({"intrinsics": np.eye(3)}, fh)
    with pytest.raises(ValueError, match=r"cam_1\.pkl: camera dict has keys \['intrinsics'\]"):
        load_rewarddb(rewarddb, cache_dir=str(tmp_path / "cache"))
    # a few KB of shared nested lists that would spell out ~10^9 numbers: refused by count
    row = [0.0] * 16
    nested = [[[row] * 1000] * 1000] * 4
    with cam.open("wb") as fh:
        pickle.dump(nested, fh)
    assert cam.stat().st_size < 20_000
    with pytest.raises(ValueError, match=r"cam_1\.pkl: refusing a camera structure of more than"):
        load_rewarddb(rewarddb, cache_dir=str(tmp_path / "cache"))


class _Shell:
    """A pickle payload that runs a shell command when loaded by a plain unpickler."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickle_is_rejected_without_running(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "cam_0.pkl"
    path.write_bytes(pickle.dumps(_Shell(f"touch {marker}")))
    with pytest.raises(pickle.UnpicklingError, match=r"cam_0\.pkl: forbidden global '\w+\.system'"):
        restricted_load(path)
    assert not marker.exists()
    # Nested inside an otherwise valid camera dict, and through the dataset loader.
    root = _write_fixture(tmp_path / "db")
    cam = root / "data" / "1" / "cam_5.pkl"
    cam.write_bytes(pickle.dumps({"c2w": np.eye(4), "x": _Shell(f"touch {marker}")}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"cam_5\.pkl: forbidden global"):
        load_rewarddb(root, cache_dir=str(tmp_path / "cache"))
    assert not marker.exists()


def test_other_forbidden_globals(tmp_path) -> None:
    path = tmp_path / "evil.pkl"
    # GLOBAL builtins.eval, then REDUCE: a classic payload without any class of ours.
    path.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="forbidden global 'builtins.eval'"):
        restricted_load(path)
    path.write_bytes(b"\x80\x02ccopyreg\n_reconstructor\nq\x00.")
    with pytest.raises(pickle.UnpicklingError, match="forbidden global 'copyreg._reconstructor'"):
        restricted_load(path)
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(pickle.UnpicklingError, match="evil.pkl"):
        restricted_load(path)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_numpy_pickles_are_accepted(tmp_path, protocol) -> None:
    value = {
        "c2w": _c2w(4).reshape(4, 16),
        "fovy": np.float64(0.7),
        "order": [np.int32(3), 1.5, (1, 2)],
        "noncontiguous": np.arange(16.0).reshape(4, 4)[:, ::2],
        "tags": {"a", "b"},
    }
    path = tmp_path / "cam.pkl"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    with path.open("rb") as fh:
        loaded = RestrictedUnpickler(fh, source=str(path)).load()
    np.testing.assert_array_equal(loaded["c2w"], value["c2w"])
    np.testing.assert_array_equal(loaded["noncontiguous"], value["noncontiguous"])
    assert loaded["fovy"] == value["fovy"] and loaded["order"] == value["order"]
    assert loaded["tags"] == value["tags"]


def test_camera_conventions() -> None:
    # MVDream's Y-up camera at azimuth 0 sits on +Z looking at the origin (OpenGL axes).
    yup = np.eye(4)[None].copy()
    yup[0, :3, 3] = (0.0, 0.0, 2.0)
    ours = to_our_c2w(yup, "opengl")[0]
    np.testing.assert_allclose(ours[:3, 3], [0.0, -2.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(ours[:3, 2], [0.0, -1.0, 0.0], atol=1e-12)  # back axis: away
    np.testing.assert_allclose(ours[:3, 1], [0.0, 0.0, 1.0], atol=1e-12)  # up axis: world up
    blender = _c2w(4)
    np.testing.assert_array_equal(to_our_c2w(blender, "blender"), blender)
    opencv = blender.copy()
    opencv[:, :3, 1:3] *= -1  # y down, z forward
    np.testing.assert_allclose(to_our_c2w(opencv, "opencv"), blender, atol=1e-12)
    with pytest.raises(ValueError, match="unknown camera convention"):
        to_our_c2w(blender, "colmap")  # type: ignore[arg-type]


class _HugeArray:
    """A 40-byte pickle asking numpy for an 80 GB array."""

    def __reduce__(self):
        import numpy as np

        return (np.ndarray, ((10**10,),))


class _HugeBytes:
    def __reduce__(self):
        return (bytearray, (10**10,))


@pytest.mark.parametrize("payload", [_HugeArray(), _HugeBytes()], ids=["ndarray", "bytearray"])
def test_restricted_unpickler_refuses_huge_allocations(tmp_path, payload):
    import pickle

    from dreamreward.data.safe_pickle import restricted_load

    path = tmp_path / "cam_0.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="cam_0.pkl"):
        restricted_load(path)
