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
