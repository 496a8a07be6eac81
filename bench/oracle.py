"""Can the oracle be trusted? Its scores on adversarial assets, on the world's candidates, on the
shipped prior's samples, against the annotator, and its cost: one run, one JSON.

    python bench/oracle.py [--num-prompts 100] [--num-candidate-prompts 200] [--threads N]

1. Adversarial kinds (``dreamreward.world.adversarial``) for ``--num-prompts`` prompts (half one
   object, half two) at the canonical cameras: mean and max score per kind, and the share of
   prompts where the ground truth beats the kind (by any margin, and by 0.05).
2. The world's candidates (``make_candidates``, rendered from the preference set's random
   cameras) for ``--num-candidate-prompts`` prompts: how often the correct asset ranks first by
   the oracle, whether a flat frame (any of the 10 colours) ever scores at or above a correct
   asset, and how often the preference set's annotator (``rate``) and ``oracle_score`` order
   two candidates differently.
3. The shipped prior's one-object samples (32 px, DDIM 50, guidance 1) of train-split and novel
   prompts: their oracle scores, split by whether the oracle's reading (``recognise_object``)
   finds the prompt's shape and colour ("good" samples).
4. Milliseconds per ``oracle_score`` call at 32 and 64 px.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import median_ms  # noqa: E402
from dreamreward.models.mvdiffusion.camera_embedding import mvdream_camera_embedding  # noqa: E402
from dreamreward.render.cameras import OrbitCameraSampler  # noqa: E402
from dreamreward.world.adversarial import (  # noqa: E402
    DEGENERATE,
    MUST_FAIL,
    MUST_PASS,
    make_adversary,
)
from dreamreward.world.candidates import make_candidates, render_candidate  # noqa: E402
from dreamreward.world.oracle import oracle_score, rate, recognise_object  # noqa: E402
from dreamreward.world.prompts import describe, sample_scene  # noqa: E402
from dreamreward.world.scene import COLORS  # noqa: E402
from dreamreward.world.views import default_cameras, ground_truth_views  # noqa: E402

MARGIN = 0.05


def _family(kind: str) -> str:
    return "flat frame (10 colours)" if kind.startswith("flat ") else kind


def adversarial_table(num_prompts: int, image_size: int) -> dict:
    cams = default_cameras(image_size)
    rng = random.Random(0)
    scores: dict[tuple[str, int], list[float]] = defaultdict(list)
    beaten: dict[tuple[str, int], list[bool]] = defaultdict(list)
    clear: dict[tuple[str, int], list[bool]] = defaultdict(list)
    degenerate_notes: dict[str, int] = defaultdict(int)
    for i in range(num_prompts):
        objects = 1 + i % 2
        scene = sample_scene(rng, objects)
        truth = oracle_score(ground_truth_views(scene, cams), scene, cams).total
        scores[("ground truth", objects)].append(truth)
        for kind in (*MUST_FAIL, *MUST_PASS):
            views = make_adversary(kind, scene, cams, seed=i)
            if views is None:
                continue
            judged = oracle_score(views, scene, cams)
            key = (_family(kind), objects)
            scores[key].append(judged.total)
            beaten[key].append(truth > judged.total)
            clear[key].append(truth > judged.total + MARGIN)
            if judged.degenerate:
                degenerate_notes[f"{_family(kind)}: {judged.degenerate}"] += 1
    rows = []
    for (kind, objects), values in sorted(scores.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        group = (
            "ground truth"
            if kind == "ground truth"
            else "must fail"
            if kind in {_family(k) for k in MUST_FAIL}
            else "must pass"
        )
        row = {
            "kind": kind,
            "objects": objects,
            "group": group,
            "n": len(values),
            "mean": statistics.fmean(values),
            "max": max(values),
            "min": min(values),
        }
        if kind != "ground truth":
            row["truth_beats"] = statistics.fmean(beaten[(kind, objects)])
            row["truth_beats_by_0.05"] = statistics.fmean(clear[(kind, objects)])
        row["degenerate_kind"] = any(_family(k) == kind for k in DEGENERATE)
        rows.append(row)
    return {"rows": rows, "degenerate_notes": dict(degenerate_notes)}


def candidate_ranking(num_prompts: int, image_size: int) -> dict:
    rng = random.Random(1)
    sampler = OrbitCameraSampler(width=image_size)
    gen = torch.Generator().manual_seed(1)
    first = 0
    flat_over_correct = 0
    pairs = disagree = 0
    top_differs = 0
    for i in range(num_prompts):
        scene = sample_scene(rng)
        cams = sampler.sample(1, gen).cameras
        cands = make_candidates(scene, f"p{i}", rng.randint(4, 10), rng)
        oracle = [oracle_score(render_candidate(c, cams), scene, cams).total for c in cands]
        overall = [rate(c).overall for c in cands]
        correct = oracle[0]
        first += all(correct > o for o in oracle[1:])
        flats = [
            oracle_score(make_adversary(f"flat {color}", scene, cams), scene, cams).total
            for color in COLORS
        ]
        flat_over_correct += max(flats) >= correct
        top_differs += max(range(len(cands)), key=oracle.__getitem__) != max(
            range(len(cands)), key=overall.__getitem__
        )
        for a in range(len(cands)):
            for b in range(a + 1, len(cands)):
                if overall[a] == overall[b]:
                    continue  # the annotator ties them: no order to disagree with
                pairs += 1
                disagree += (overall[a] > overall[b]) != (oracle[a] > oracle[b])
    return {
        "prompts": num_prompts,
        "correct_ranks_first": first / num_prompts,
        "flat_frame_at_or_above_correct": flat_over_correct,
        "annotator_pairs": pairs,
        "annotator_pair_disagreement": disagree / max(1, pairs),
        "annotator_top_differs": top_differs / num_prompts,
    }


def prior_samples(num_prompts: int) -> dict:
    from dreamreward.models.mvdiffusion.prior import load_prior

    prior = load_prior(None)
    cams = default_cameras(prior.image_size)
    rows = []
    for split in ("train", "novel"):
        rng = random.Random(2)
        prompts = [describe(sample_scene(rng, 1, split=split)) for _ in range(num_prompts)]
        images = prior.sample(
            prompts,
            mvdream_camera_embedding(cams).repeat(len(prompts), 1),
            num_inference_steps=50,
            guidance_scale=1.0,
            generator=torch.Generator().manual_seed(0),
        )
        views = images.permute(0, 2, 3, 1).reshape(
            len(prompts), prior.num_views, *images.shape[-2:], 3
        )
        from dreamreward.world.prompts import parse_prompt

        for prompt, asset in zip(prompts, views, strict=True):
            scene = parse_prompt(prompt)
            seen = recognise_object(asset, cams)
            good = (seen.shape, seen.color) == (scene.objects[0].shape, scene.objects[0].color)
            judged = oracle_score(asset, scene, cams)
            rows.append(
                {
                    "prompt": prompt,
                    "split": split,
                    "good": good,
                    "oracle": judged.total,
                    "degenerate": judged.degenerate,
                }
            )
    good = [r["oracle"] for r in rows if r["good"]]
    bad = [r["oracle"] for r in rows if not r["good"]]
    return {
        "samples": len(rows),
        "good": len(good),
        "good_mean": statistics.fmean(good) if good else None,
        "good_min": min(good) if good else None,
        "other_mean": statistics.fmean(bad) if bad else None,
        "rows": rows,
    }


def timing() -> dict:
    scene = sample_scene(random.Random(3), 2)
    out = {}
    for size in (32, 64):
        cams = default_cameras(size)
        views = ground_truth_views(scene, cams)
        out[f"ms_per_call_{size}px"] = median_ms(
            lambda c=cams, v=views: oracle_score(v, scene, c), 7
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--num-candidate-prompts", type=int, default=200)
    parser.add_argument("--num-prior-prompts", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "oracle.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "threads": torch.get_num_threads(),
        "adversarial_64px": adversarial_table(args.num_prompts, 64),
        "adversarial_32px": adversarial_table(args.num_prompts // 2, 32),
        "candidates": candidate_ranking(args.num_candidate_prompts, 64),
        "prior_one_object_samples": prior_samples(args.num_prior_prompts),
        "timing": timing(),
    }
    result["seconds"] = round(time.perf_counter() - start, 1)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for size in ("64px", "32px"):
        print(f"\n## adversarial kinds, {size}\n")
        print("| kind | objects | n | mean | max | truth beats it | by 0.05 |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in result[f"adversarial_{size}"]["rows"]:
            print(
                f"| {r['kind']} | {r['objects']} | {r['n']} | {r['mean']:.3f} | {r['max']:.3f} "
                f"| {r.get('truth_beats', float('nan')):.2f} "
                f"| {r.get('truth_beats_by_0.05', float('nan')):.2f} |"
            )
    print(json.dumps({k: result[k] for k in ("candidates", "timing", "seconds")}, indent=1))
    prior = dict(result["prior_one_object_samples"])
    prior.pop("rows")
    print(json.dumps(prior, indent=1))


if __name__ == "__main__":
    main()
