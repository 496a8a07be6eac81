"""Multi-view renders of the primitives world: the training set of the small diffusion prior.

    python -m dreamreward build-multiview --out data/multiview_32 --num_groups 8000

Each *group* is one scene seen by V cameras drawn from MVDream's camera distribution
(:class:`~dreamreward.render.cameras.OrbitCameraSampler`: shared elevation 0-30 deg, fov 15-60
deg, distance ``[0.8, 1] / tan(fov / 2)``, azimuths a quarter turn apart) with one phrasing of
its prompt. Only ``train``-split compositions are rendered; the ``novel`` ones are held out for
evaluation. The folder holds

- ``views.safetensors``: ``images`` (G, V, H, W, 3) uint8, ``cameras`` (G, V, 16) float32
  MVDream embeddings;
- ``groups.jsonl``: per group its prompt and scene (``Scene.to_dict``);
- ``build_info.json``: the arguments, counts and build time.

Deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dreamreward.data.build_primitives import scene_key
from dreamreward.data.sampling import EpochShuffleSampler
from dreamreward.models.mvdiffusion.camera_embedding import mvdream_camera_embedding
from dreamreward.render.cameras import OrbitCameraSampler
from dreamreward.world.layout import scene_mesh
from dreamreward.world.prompts import describe, ground_truth_scene, sample_scene
from dreamreward.world.views import render_views

VIEWS_FILE = "views.safetensors"
GROUPS_FILE = "groups.jsonl"


def build_multiview(
    out: str,
    num_groups: int = 8000,
    image_size: int = 32,
    num_views: int = 4,
    seed: int = 0,
) -> Path:
    """Render ``num_groups`` random train-split scenes from MVDream-distributed cameras.

    Args:
        out: output folder (created; an existing build there is replaced).
        num_groups: scenes x camera sets to render (about 8 ms each at 32 px).
        image_size: square image side in pixels.
        num_views: views per group.
        seed: seeds the scenes, phrasings, layout jitter and cameras.

    Returns:
        The output folder.
    """
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    start = time.perf_counter()
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    sampler = OrbitCameraSampler(num_views=num_views, width=image_size)
    images = torch.empty(num_groups, num_views, image_size, image_size, 3, dtype=torch.uint8)
    cameras = torch.empty(num_groups, num_views, 16)
    rows: list[dict[str, Any]] = []
    for g in tqdm(range(num_groups), desc="rendering view groups", unit="group"):
        scene = sample_scene(rng, split="train")
        mesh, _ = scene_mesh(scene, jitter=rng)
        views = sampler.sample(1, gen)
        rgb = render_views(mesh, views.cameras)["rgb"]
        images[g] = (rgb * 255).round().to(torch.uint8)
        cameras[g] = mvdream_camera_embedding(views.cameras)
        rows.append({"prompt": describe(scene, rng), "scene": scene.to_dict()})
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / VIEWS_FILE).unlink(missing_ok=True)
    with open(folder / GROUPS_FILE, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    # the tensors last: a build interrupted before this point is rebuilt by prepare_data
    save_file({"images": images, "cameras": cameras}, str(folder / VIEWS_FILE))
    info = {
        "num_groups": num_groups,
        "image_size": image_size,
        "num_views": num_views,
        "seed": seed,
        "unique_prompts": len({r["prompt"] for r in rows}),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (folder / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


class MultiViewRenderDataset(Dataset):
    """The groups of a :func:`build_multiview` folder.

    Items: ``images`` (V, 3, H, W) float in [0, 1], ``cameras`` (V, 16), ``prompt`` str.
    """

    def __init__(self, path: str | Path) -> None:
        folder = Path(path)
        views_path, groups_path = folder / VIEWS_FILE, folder / GROUPS_FILE
        for p in (views_path, groups_path):
            if not p.is_file():
                raise FileNotFoundError(
                    f"no multi-view render set at {folder} ({p.name} missing): build one with "
                    f"`python -m dreamreward build-multiview --out {folder}`"
                )
        tensors = load_file(str(views_path))
        for key, ndim in (("images", 5), ("cameras", 3)):
            if key not in tensors or tensors[key].ndim != ndim:
                raise ValueError(f"{views_path}: field {key!r} missing or not {ndim}-D")
        self.images, self.cameras = tensors["images"], tensors["cameras"]
        self.prompts: list[str] = []
        with open(groups_path) as f:
            for line_no, line in enumerate(f, 1):
                try:
                    row = json.loads(line)
                    prompt = row["prompt"]
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise ValueError(
                        f"{groups_path}:{line_no}: not a JSON object with a 'prompt' ({err})"
                    ) from err
                if not isinstance(prompt, str) or not prompt.strip():
                    raise ValueError(f"{groups_path}:{line_no}: empty prompt")
                self.prompts.append(prompt)
        g, v = self.images.shape[:2]
        if len(self.prompts) != g or self.cameras.shape[:2] != (g, v):
            raise ValueError(
                f"{folder}: {g} image groups, {tuple(self.cameras.shape[:2])} camera groups and "
                f"{len(self.prompts)} prompts do not match"
            )
        if self.images.shape[-1] != 3 or self.cameras.shape[-1] != 16:
            raise ValueError(
                f"{views_path}: images must be (G, V, H, W, 3) and cameras (G, V, 16), got "
                f"{tuple(self.images.shape)} and {tuple(self.cameras.shape)}"
            )

    @property
    def num_views(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        images = self.images[i].permute(0, 3, 1, 2).float() / 255.0
        return {"images": images, "cameras": self.cameras[i], "prompt": self.prompts[i]}


def evaluation_prompts(num_per_split: int, seed: int) -> list[dict[str, str]]:
    """Prompts to sample from when judging the prior: ``num_per_split`` train-split and as many
    novel-composition scenes, half one-object and half two-object, in their canonical phrasing.

    Returns:
        dicts with ``prompt``, ``split`` ("train" | "novel") and ``objects`` ("1" | "2").
    """
    rng = random.Random(seed)
    items: list[dict[str, str]] = []
    for split in ("train", "novel"):
        seen: set[tuple] = set()
        for k in range(num_per_split):
            num_objects = 1 if k < (num_per_split + 1) // 2 else 2
            for attempt in range(200):
                # only 10 novel one-object scenes exist: then take two-object ones
                objects = num_objects if attempt < 100 else 2
                scene = sample_scene(rng, num_objects=objects, split=split)
                if scene_key(scene) not in seen:
                    break
            else:
                raise RuntimeError(f"no unseen {split} scene after 200 draws")
            num_objects = scene.num_objects
            seen.add(scene_key(scene))
            items.append({"prompt": describe(scene), "split": split, "objects": str(num_objects)})
    return items


class _PromptList(Dataset):
    def __init__(self, items: list[dict[str, str]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, str]:
        return self.items[i]


def _collate_prompts(items: list[dict[str, str]]) -> dict[str, list[str]]:
    return {key: [item[key] for item in items] for key in items[0]}


def check_prompts(prompts: list[str], what: str) -> list[str]:
    """Strip prompts; raise naming ``what`` on an empty list or a blank prompt."""
    if not prompts:
        raise ValueError(f"{what}: no prompts given")
    cleaned = [p.strip() for p in prompts]
    blank = [i for i, p in enumerate(cleaned) if not p]
    if blank:
        raise ValueError(f"{what}: prompt(s) {blank} are empty")
    return cleaned


class MultiViewDataModule(L.LightningDataModule):
    """Training groups of a :func:`build_multiview` folder; prompts to sample in val/test/predict.

    Args:
        path: the render set folder.
        image_size: side of the views; a set built here uses it, a set found must match it.
        batch_size: objects per batch (each with ``num_views`` images).
        num_workers: DataLoader workers.
        seed: seeds the resume-safe shuffle (the order depends on (seed, epoch) only).
        build_if_missing: render the set at ``path`` first when it is absent.
        build_num_groups: groups to render then.
        val_prompts_per_split: train-split and novel prompts sampled at each validation.
        test_prompts_per_split: the same for ``test`` (the quality table).
        predict_prompts: prompts for ``predict`` (each gives one 4-view grid).
    """

    def __init__(
        self,
        path: str = "data/multiview_32",
        image_size: int = 32,
        batch_size: int = 4,
        num_workers: int = 0,
        seed: int = 0,
        build_if_missing: bool = True,
        build_num_groups: int = 8000,
        val_prompts_per_split: int = 4,
        test_prompts_per_split: int = 24,
        predict_prompts: list[str] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path = path
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.build_if_missing = build_if_missing
        self.build_num_groups = build_num_groups
        self.val_prompts_per_split = val_prompts_per_split
        self.test_prompts_per_split = test_prompts_per_split
        self.predict_prompts = check_prompts(
            predict_prompts or ["a red cube"], "MultiViewDataModule.predict_prompts"
        )
        self.train_set: MultiViewRenderDataset | None = None

    def prepare_data(self) -> None:
        if self.build_if_missing and not (Path(self.path) / VIEWS_FILE).is_file():
            build_multiview(
                self.path,
                num_groups=self.build_num_groups,
                image_size=self.image_size,
                seed=self.seed,
            )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = MultiViewRenderDataset(self.path)
            if self.train_set.image_size != self.image_size:
                raise ValueError(
                    f"{self.path} holds {self.train_set.image_size}-px views but "
                    f"data.image_size is {self.image_size}: rebuild the set or fix the config"
                )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup('fit') first"
        sampler = EpochShuffleSampler(len(self.train_set), self.seed)
        sampler.resume_from(self.trainer, self.batch_size, drop_last=True)
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=True,
        )

    def _prompts(self, items: list[dict[str, str]]) -> DataLoader:
        return DataLoader(
            _PromptList(items), batch_size=self.batch_size, collate_fn=_collate_prompts
        )

    def val_dataloader(self) -> DataLoader:
        # a different seed than test, so model selection never sees the test prompts
        return self._prompts(evaluation_prompts(self.val_prompts_per_split, self.seed + 1))

    def test_dataloader(self) -> DataLoader:
        return self._prompts(evaluation_prompts(self.test_prompts_per_split, self.seed + 2))

    def predict_dataloader(self) -> DataLoader:
        items = []
        for p in self.predict_prompts:
            # any text works; only primitives prompts get an oracle score
            split = "free" if ground_truth_scene(p) is None else "primitives"
            items.append({"prompt": p, "split": split, "objects": ""})
        return self._prompts(items)
