"""Primitives-world benchmark: preference-set build throughput and its parts, in one run.

    python bench/world.py [--num-prompts 60] [--threads N]

Rows: whole build (assets/s, through ``generate_rows``, PNG encoding included), candidate
rendering alone, oracle annotation, and the oracle score of a 4-view asset (what DreamFL's
evaluation calls).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import markdown_table  # noqa: E402
from dreamreward.data.build_primitives import generate_rows  # noqa: E402
from dreamreward.render.cameras import OrbitCameraSampler  # noqa: E402
from dreamreward.world.candidates import make_candidates, render_candidate  # noqa: E402
from dreamreward.world.oracle import annotate, oracle_score  # noqa: E402
from dreamreward.world.prompts import sample_scene  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompts", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.num_prompts
    rows = []

    start = time.perf_counter()
    assets = sum(1 for _ in generate_rows(n, seed=0, image_size=args.image_size, progress=False))
    build_s = time.perf_counter() - start
    rows.append(
        {
            "stage": "whole build (render + oracle + PNG)",
            "assets": assets,
            "seconds": build_s,
            "assets/s": assets / build_s,
        }
    )

    rng = random.Random(0)
    sampler = OrbitCameraSampler(width=args.image_size)
    gen = torch.Generator().manual_seed(0)
    jobs = []
    for i in range(n):
        scene = sample_scene(rng)
        cams = sampler.sample(1, gen).cameras
        jobs.append((scene, cams, make_candidates(scene, f"p{i}", rng.randint(4, 10), rng)))
    count = sum(len(c) for _, _, c in jobs)

    start = time.perf_counter()
    renders = [[render_candidate(c, cams) for c in cands] for _, cams, cands in jobs]
    render_s = time.perf_counter() - start
    rows.append(
        {
            "stage": "candidate rendering only",
            "assets": count,
            "seconds": render_s,
            "assets/s": count / render_s,
        }
    )

    start = time.perf_counter()
    for _, _, cands in jobs:
        annotate(cands)
    annotate_s = time.perf_counter() - start
    rows.append(
        {
            "stage": "oracle annotation (ratings + ranks)",
            "assets": count,
            "seconds": annotate_s,
            "assets/s": count / max(annotate_s, 1e-9),
        }
    )

    start = time.perf_counter()
    for (scene, cams, _), views in zip(jobs, renders, strict=True):
        for v in views:
            oracle_score(v, scene, cams)
    score_s = time.perf_counter() - start
    rows.append(
        {
            "stage": "oracle score of a 4-view asset",
            "assets": count,
            "seconds": score_s,
            "assets/s": count / score_s,
        }
    )

    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "image_size": args.image_size,
        "prompts": n,
    }
    print(f"environment: {env}")
    print(markdown_table(rows))
    out = Path(__file__).parent / "results" / "world_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
