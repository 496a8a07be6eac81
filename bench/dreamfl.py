"""DreamFL benchmark: the reward term's cost as a ratio to plain score distillation, one run.

    python bench/dreamfl.py                 # 2 threads -> bench/results/dreamfl_cpu.json
    python bench/dreamfl.py --threads 1 --repeats 9

Builds ``DreamFLModule`` exactly as ``configs/dreamfl/primitives.yaml`` does (the shipped prior
and Reward3D) and times one optimisation step (render 4 views, guidance, reward term, backward,
Adam step) with the reward term on (DreamFL) and off (SDS), interleaved, in both stages: NeRF at
the stage-1 resolution and the DMTet mesh at the stage-2 resolution, and this process's peak RSS.
Then it runs the main job itself (``python -m dreamreward fit --config <config>``, a fresh
process, into a temporary folder) and records its wall time from launch to exit, the time and
peak RSS of each stage (from its ``result.json``) and the whole process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved_ms, markdown_table  # noqa: E402
from dreamreward.cli import build_from_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def build_module(config: Path):
    return build_from_config(["--config", str(config), "--trainer.logger", "false"]).model


def step(module, optimizer) -> None:
    optimizer.zero_grad(set_to_none=True)
    module.training_step(None, 0).backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", default=str(ROOT / "configs" / "dreamfl" / "primitives.yaml"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "dreamfl_cpu.json"))
    parser.add_argument("--skip-main-job", action="store_true", help="only the step ratios")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*self.log.*")
    module = build_module(Path(args.config))
    reward = module.reward
    reward.start_step = 0  # the term is active in every timed step
    optimizer = module.configure_optimizers()
    results: dict[str, object] = {"threads": args.threads, "torch": torch.__version__}
    results["machine"] = platform.machine()
    rows = []
    for stage in ("nerf", "mesh"):
        module.nerf_steps = 10**9 if stage == "nerf" else 0  # global_step is 0 here

        def dreamfl():
            module.reward = reward
            step(module, optimizer)

        def sds():
            module.reward = None
            step(module, optimizer)

        t = interleaved_ms({"dreamfl": dreamfl, "sds": sds}, args.repeats)
        module.reward = reward
        results[f"{stage}_step_ms"] = t
        size = module.hparams.nerf_resolution if stage == "nerf" else module.hparams.mesh_resolution
        rows.append(
            {
                "stage": f"{stage} ({size} px, 4 views)",
                "SDS step ms": t["sds"],
                "DreamFL step ms": t["dreamfl"],
                "DreamFL / SDS": t["dreamfl"] / t["sds"],
            }
        )
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(markdown_table(rows))
    print(f"peak RSS of this process: {results['peak_rss_mb']:.0f} MB")
    if not args.skip_main_job:
        results["main_job"] = run_main_job(Path(args.config), args.threads)
        print(markdown_table([results["main_job"]]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


def run_main_job(config: Path, threads: int) -> dict[str, object]:
    """Run the config's fit in a fresh process: wall time, stage times and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "dreamreward", "fit", "--config", str(config),
            "--trainer.logger.init_args.save_dir", tmp, "--trainer.enable_progress_bar", "false",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, cwd=ROOT, capture_output=True)
        wall = time.perf_counter() - start
        children_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        result = json.loads(next(Path(tmp).rglob("result.json")).read_text())
    return {
        "main job": config.name,
        "wall s (launch to exit)": round(wall, 1),
        "NeRF stage s": result.get("nerf_seconds"),
        "mesh stage s": result.get("mesh_seconds"),
        "NeRF stage peak RSS MB": result.get("nerf_process_peak_rss_mb"),
        "peak RSS MB": round(children_rss, 1),
        "oracle": result.get("oracle"),
    }


if __name__ == "__main__":
    main()
