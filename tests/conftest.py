"""Shared test setup: offline, deterministic, small thread count."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip gpu/kaolin tests where they cannot run; slow tests only with ``-m slow``."""
    has_cuda = torch.cuda.is_available()
    from dreamreward.render.backend import import_kaolin

    has_kaolin = has_cuda and import_kaolin() is not None
    selected = config.getoption("-m") or ""
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "kaolin" in item.keywords and not has_kaolin:
            item.add_marker(pytest.mark.skip(reason="needs NVIDIA Kaolin on CUDA"))
        if "slow" in item.keywords and "slow" not in selected:
            item.add_marker(pytest.mark.skip(reason="slow: run with `pytest -m slow`"))


# ------------------------------------------------------------------ shared data fixtures
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "cube", "sphere"]
WORDS += [",", "front", "side", "back", "overhead", "view", "prompt", "0", "1", "2", "3"]


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory) -> str:
    """A 21-word WordPiece vocabulary for tiny random-weight text encoders."""
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    return str(folder)


@pytest.fixture(scope="module")
def world_set(tmp_path_factory) -> str:
    """Synthetic preference rows with world prompts and scenes (12 prompts, 4 assets each, the
    best one correct): its correct assets have a text side."""
    import json
    import random

    import datasets

    from dreamreward.data.schema import PREFERENCE_FEATURES, synthetic_rows
    from dreamreward.world.prompts import describe, sample_scene

    rows = synthetic_rows(num_prompts=12, assets_per_prompt=4, image_size=16, novel_prompts=2)
    rng = random.Random(0)
    scenes = {}
    for row in rows:
        if row["prompt_id"] not in scenes:
            scenes[row["prompt_id"]] = sample_scene(rng, 2)
        scene = scenes[row["prompt_id"]]
        row["prompt"] = describe(scene)
        row["scene"] = json.dumps(scene.to_dict())
        row["defect"] = "none" if row["rank"] == 1 else "wrong_color"
    columns = {name: [r[name] for r in rows] for name in PREFERENCE_FEATURES}
    path = tmp_path_factory.mktemp("world_pref") / "ds"
    datasets.Dataset.from_dict(columns, features=PREFERENCE_FEATURES).save_to_disk(str(path))
    return str(path)
