"""DreamFL benchmark: the reward term's cost as a ratio to plain score distillation, one run.

    python bench/dreamfl.py                 # 2 threads -> bench/results/dreamfl_cpu.json
    python bench/dreamfl.py --threads 1 --repeats 9

Builds ``DreamFLModule`` exactly as ``configs/dreamfl/primitives.yaml`` does (the shipped prior
and Reward3D), trains it for ``--warmup-steps`` SDS steps (so the NeRF has formed an object and
skips empty space, as in the real job), then times one optimisation step (render 4 views,
guidance, reward term, backward, Adam step) in both stages (NeRF at the stage-1 resolution, the
DMTet mesh at the stage-2 resolution), interleaved: without the reward term (SDS), with it on
every step (DreamFL, as the paper), with it on every other step (``every: 2``, the mean of
an "on" and an "off" step), and with the reward as a ranker instead (``RankedDistillation``,
DreamDPO: two prior predictions and two Reward3D forwards, no reward backward); and this
process's peak RSS. Then it runs the main job, the same
with ``presets/every_other_step.yaml`` and its SDS baseline (``python -m dreamreward fit
--config <config>``, each a fresh process, into a temporary folder) and records each one's wall
time from launch to exit, the time and peak RSS of each stage (from its ``result.json``) and the
whole process's peak RSS.
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
from dreamreward.guidance import RankedDistillation  # noqa: E402
from dreamreward.lightning_cli import build_from_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def build_module(config: Path):
    return build_from_config(["--config", str(config), "--trainer.logger", "false"]).model


def warm_up(module, steps: int) -> None:
    """Train ``steps`` SDS steps with a real Trainer (occupancy-grid updates included).

    Timing the untrained blob would mislead: before the grid's first update every ray samples
    densely and the field dominates a NeRF step (2x its cost later), which hides the reward's
    share; and a mesh made from the blob is not a mesh the real job refines.
    """
    if steps <= 0:
        return
    import lightning as L

    from dreamreward.data.steps import OptimizationSteps

    reward, module.reward = module.reward, None
    nerf_steps, module.nerf_steps = module.nerf_steps, 10**9
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
            default_root_dir=tmp,
        )  # fmt: skip
        trainer.fit(module, datamodule=OptimizationSteps(steps_per_epoch=steps))
    # detached again: the timed steps are called by hand (global_step reads 0, which only
    # changes the timestep drawn, not the cost)
    module.trainer = None
    module.reward, module.nerf_steps = reward, nerf_steps


def step(module, optimizer) -> None:
    optimizer.zero_grad(set_to_none=True)
    module.training_step(None, 0).backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", default=str(ROOT / "configs" / "dreamfl" / "primitives.yaml"))
    parser.add_argument(
        "--baseline-overlay",
        default=str(ROOT / "configs" / "dreamfl" / "primitives_sds.yaml"),
        help="laid over --config for the SDS baseline job",
    )
    parser.add_argument(
        "--every-2-overlay",
        default=str(ROOT / "configs" / "dreamfl" / "presets" / "every_other_step.yaml"),
        help="laid over --config for the main job with the reward on every other step",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "dreamfl_cpu.json"))
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=150,
        help="SDS steps trained before timing, so that the NeRF has formed an object and its "
        "occupancy grid skips empty space as in the real job (0: time the initial blob)",
    )
    parser.add_argument("--skip-main-job", action="store_true", help="only the step ratios")
    parser.add_argument(
        "--skip-baseline-job",
        action="store_true",
        help="run the main job only (not its every-other-step and SDS twins)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*self.log.*")
    module = build_module(Path(args.config))
    reward = module.reward
    warm_up(module, args.warmup_steps)
    reward.start_step = 0  # the term is active in every timed step
    distillation = module.guidance
    ranker = RankedDistillation(  # the same prior and schedule, the shipped Reward3D ranking
        reward.judge,
        prior=distillation.prior,
        loss=distillation.loss_kind,
        guidance_scale=distillation.guidance_scale,
        std_rescale=distillation.std_rescale,
        timesteps=distillation.timesteps,
    )
    optimizer = module.configure_optimizers()
    results: dict[str, object] = {"threads": args.threads, "torch": torch.__version__}
    results["machine"] = platform.machine()
    results["warmup_steps"] = args.warmup_steps
    rows = []
    for stage in ("nerf", "mesh"):
        # global_step stays at the warm-up's end while timing
        module.nerf_steps = 10**9 if stage == "nerf" else 0

        def dreamfl():
            module.reward, reward.every, reward.start_step = reward, 1, 0
            step(module, optimizer)

        def dreamfl_every_2():
            # an "on" step (0 - 0 is a multiple of 2) then the real "off" path (0 - (-1) is not)
            module.reward, reward.every = reward, 2
            for start in (0, -1):
                reward.start_step = start
                step(module, optimizer)

        def sds():
            module.reward = None
            step(module, optimizer)

        def ranked():
            module.reward, module.guidance = None, ranker
            try:
                step(module, optimizer)
            finally:
                module.guidance = distillation

        timed = {"dreamfl": dreamfl, "dreamfl_every_2_pair": dreamfl_every_2, "sds": sds}
        t = interleaved_ms({**timed, "ranker": ranked}, args.repeats)
        t["dreamfl_every_2"] = t.pop("dreamfl_every_2_pair") / 2  # per step
        module.reward, reward.every, reward.start_step = reward, 1, 0
        results[f"{stage}_step_ms"] = t
        size = module.hparams.nerf_resolution if stage == "nerf" else module.hparams.mesh_resolution
        rows.append(
            {
                "stage": f"{stage} ({size} px, 4 views)",
                "SDS step ms": t["sds"],
                "DreamFL step ms": t["dreamfl"],
                "DreamFL / SDS": t["dreamfl"] / t["sds"],
                "every: 2, step ms": t["dreamfl_every_2"],
                "every: 2 / SDS": t["dreamfl_every_2"] / t["sds"],
                "ranker step ms": t["ranker"],
                "ranker / SDS": t["ranker"] / t["sds"],
            }
        )
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(markdown_table(rows))
    print(f"peak RSS of this process: {results['peak_rss_mb']:.0f} MB")
    if not args.skip_main_job:
        jobs = [run_main_job([Path(args.config)], args.threads)]
        results["main_job"] = jobs[0]
        if not args.skip_baseline_job:
            every_2 = run_main_job([Path(args.config), Path(args.every_2_overlay)], args.threads)
            baseline = run_main_job([Path(args.config), Path(args.baseline_overlay)], args.threads)
            jobs += [every_2, baseline]
            results["every_2_job"], results["baseline_job"] = every_2, baseline
            wall = "wall s (launch to exit)"
            results["main_job_wall_ratio"] = jobs[0][wall] / baseline[wall]
            results["every_2_job_wall_ratio"] = every_2[wall] / baseline[wall]
        print(markdown_table(jobs))
        if "main_job_wall_ratio" in results:
            print(
                f"wall time / SDS job: main job {results['main_job_wall_ratio']:.2f}, "
                f"every other step {results['every_2_job_wall_ratio']:.2f}"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


def run_main_job(configs: list[Path], threads: int) -> dict[str, object]:
    """Run the configs' fit in a fresh process: wall time, stage times and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "dreamreward", "fit",
            *(arg for config in configs for arg in ("--config", str(config))),
            "--trainer.logger.init_args.save_dir", tmp, "--trainer.enable_progress_bar", "false",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        log = Path(tmp) / "job.log"
        start = time.perf_counter()
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
            # wait4: this child's own peak RSS (RUSAGE_CHILDREN is the max over all children)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        wall = time.perf_counter() - start
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
        peak_rss = usage.ru_maxrss / 1024  # KiB on Linux
        result = json.loads(next(Path(tmp).rglob("result.json")).read_text())
    return {
        "job": " + ".join(config.name for config in configs),
        "wall s (launch to exit)": round(wall, 1),
        "NeRF stage s": result.get("nerf_seconds"),
        "mesh stage s": result.get("mesh_seconds"),
        "NeRF stage peak RSS MB": result.get("nerf_process_peak_rss_mb"),
        "peak RSS MB": round(peak_rss, 1),
        "oracle": result.get("oracle"),
    }


if __name__ == "__main__":
    main()
