"""Build the primitives preference set: prompts, candidate assets, oracle ratings and ranks.

    python -m dreamreward build-primitives --out data/primitives --num_prompts 300 --seed 0

Writes a ``datasets`` dataset in the project's preference schema to ``out`` (``save_to_disk``)
plus ``build_info.json`` (arguments, counts, timing). Deterministic for a given seed.
"""

from __future__ import annotations

import io
import json
import random
import tempfile
import time
from pathlib import Path

import datasets
import torch
from PIL import Image
from tqdm.auto import tqdm

from dreamreward.data.schema import PREFERENCE_FEATURES
from dreamreward.render.cameras import OrbitCameraSampler
from dreamreward.world.candidates import make_candidates, render_candidate
from dreamreward.world.oracle import annotate
from dreamreward.world.prompts import describe, sample_scene
from dreamreward.world.scene import Scene


def _png(image: torch.Tensor) -> dict[str, bytes | None]:
    """(H, W, 3) float in [0, 1] -> encoded PNG in the form ``datasets.Image`` stores as is
    (handing it a PIL image would make it encode the image a second time)."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def scene_key(scene: Scene) -> tuple:
    """What a scene looks like: one object's size is invisible (scenes are normalised), so
    "a small red cube" and "a large red cube" are the same asset."""
    if scene.num_objects == 1:
        return (scene.objects[0].shape, scene.objects[0].color)
    return (scene.objects, scene.relation)


def _unseen_scene(rng: random.Random, num_objects: int, split: str, seen: set[tuple]) -> Scene:
    """A scene not generated before (each scene belongs to one prompt, so paraphrases of one
    scene can never land in two splits). One-object scenes run out (40 seen, 10 novel): then
    two-object scenes are drawn instead."""
    for attempt in range(200):
        objects = num_objects if attempt < 50 else 2
        scene = sample_scene(rng, num_objects=objects, split=split)
        if scene_key(scene) not in seen:
            return scene
    raise RuntimeError(f"could not find an unseen {split} scene after 200 draws")


def check_build_arguments(
    num_prompts: int,
    image_size: int,
    min_candidates: int,
    max_candidates: int,
    novel_fraction: float,
    two_object_fraction: float,
) -> None:
    """Raise ValueError naming the first bad argument (checked before any work: inside the
    ``datasets`` generator it would surface as a generic ``DatasetGenerationError``)."""
    if num_prompts < 1:
        raise ValueError(f"--num_prompts must be >= 1, got {num_prompts}")
    if image_size < 16:
        raise ValueError(f"--image_size must be >= 16 pixels, got {image_size}")
    if not 2 <= min_candidates <= max_candidates <= 12:
        raise ValueError(
            f"need 2 <= --min_candidates <= --max_candidates <= 12, got {min_candidates}, "
            f"{max_candidates}"
        )
    if not 0.0 <= novel_fraction < 1.0:
        raise ValueError(f"--novel_fraction must be in [0, 1), got {novel_fraction}")
    if not 0.0 <= two_object_fraction <= 1.0:
        raise ValueError(f"--two_object_fraction must be in [0, 1], got {two_object_fraction}")


def generate_rows(
    num_prompts: int,
    seed: int = 0,
    image_size: int = 64,
    min_candidates: int = 4,
    max_candidates: int = 10,
    novel_fraction: float = 0.15,
    two_object_fraction: float = 0.5,
    progress: bool = True,
):
    """Yield one schema row per asset (see ``dreamreward.data.schema``)."""
    check_build_arguments(
        num_prompts, image_size, min_candidates, max_candidates, novel_fraction, two_object_fraction
    )
    rng = random.Random(seed)
    sampler = OrbitCameraSampler(num_views=4, width=image_size)
    generator = torch.Generator().manual_seed(seed)
    seen_scenes: set[tuple] = set()
    made = 0
    bar = tqdm(total=num_prompts, desc="prompts", disable=not progress, unit="prompt")
    while made < num_prompts:
        split = "novel" if rng.random() < novel_fraction else "train"
        num_objects = 2 if rng.random() < two_object_fraction else 1
        scene = _unseen_scene(rng, num_objects, split, seen_scenes)
        seen_scenes.add(scene_key(scene))
        prompt = describe(scene, rng)
        prompt_id = f"p{made:05d}"
        views = sampler.sample(1, generator)
        cameras = views.cameras
        candidates = make_candidates(
            scene,
            prompt_id,
            rng.randint(min_candidates, max_candidates),
            rng,
            allow_novel=split == "novel",
        )
        ratings, ranks = annotate(candidates)
        camera_rows = cameras.c2w.reshape(4, 16).tolist()
        for cand, rating, rank in zip(candidates, ratings, ranks, strict=True):
            rgb = render_candidate(cand, cameras)
            yield {
                "prompt_id": prompt_id,
                "prompt": prompt,
                "asset_id": cand.asset_id,
                "views": [_png(v) for v in rgb],
                "cameras": camera_rows,
                "fovy_deg": views.fovy_deg.tolist(),
                "ratings": {
                    "alignment": rating.alignment,
                    "fidelity": rating.fidelity,
                    "consistency": rating.consistency,
                    "overall": rating.overall,
                },
                "rank": rank,
                "defect": cand.defect
                if cand.defect != "low_fidelity"
                else f"low_fidelity/{cand.fidelity_kind}",
                "scene": json.dumps(scene.to_dict()),
                "composition": split if split == "novel" else "seen",
            }
        made += 1
        bar.update(1)
    bar.close()


def build_primitives(
    out: str,
    num_prompts: int = 300,
    seed: int = 0,
    image_size: int = 64,
    min_candidates: int = 4,
    max_candidates: int = 10,
    novel_fraction: float = 0.15,
    two_object_fraction: float = 0.5,
    progress: bool = True,
) -> datasets.Dataset:
    """Generate the primitives preference set and save it to ``out``.

    Args:
        out: output directory (``datasets`` ``save_to_disk`` format); must not exist or be empty.
        num_prompts: prompts to generate (each with 4-10 candidate assets).
        seed: everything (scenes, paraphrases, cameras, defects) follows from it.
        image_size: view size in pixels.
        min_candidates, max_candidates: candidates per prompt (3DRewardDB: 4-10).
        novel_fraction: share of prompts drawn from the held-out novel compositions.
        two_object_fraction: share of two-object prompts.
        progress: show a progress bar.
    """
    check_build_arguments(
        num_prompts, image_size, min_candidates, max_candidates, novel_fraction, two_object_fraction
    )
    out_path = Path(out)
    if out_path.exists() and any(out_path.iterdir()):
        raise FileExistsError(f"{out_path} exists and is not empty; choose another --out")
    start = time.perf_counter()
    kwargs = {
        "num_prompts": num_prompts,
        "seed": seed,
        "image_size": image_size,
        "min_candidates": min_candidates,
        "max_candidates": max_candidates,
        "novel_fraction": novel_fraction,
        "two_object_fraction": two_object_fraction,
        "progress": progress,
    }
    # A private cache dir: nothing is written to (or reused from) ~/.cache.
    bars_were_on = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory() as cache_dir:
            dataset = datasets.Dataset.from_generator(
                generate_rows,
                gen_kwargs=kwargs,
                features=PREFERENCE_FEATURES,
                cache_dir=cache_dir,
            )
            dataset.save_to_disk(str(out_path))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    dataset = datasets.load_from_disk(str(out_path))
    elapsed = time.perf_counter() - start
    info = {
        "arguments": {k: v for k, v in kwargs.items() if k != "progress"},
        "assets": len(dataset),
        "prompts": num_prompts,
        "novel_assets": sum(c == "novel" for c in dataset["composition"]),
        "seconds": round(elapsed, 2),
        "assets_per_second": round(len(dataset) / elapsed, 2),
    }
    (out_path / "build_info.json").write_text(json.dumps(info, indent=2))
    return dataset
