"""Multi-view diffusion prior benchmark: every ratio is measured side by side in one run.

    python bench/mvdiffusion.py            # 2 threads -> bench/results/mvdiffusion_cpu.json
    python bench/mvdiffusion.py --threads 1 --repeats 7

Model: the small prior exactly as ``configs/mvdiffusion/primitives.yaml`` builds it (pixel space,
4 views at 32 px, UNet (32, 64, 128), MiniLM text tokens).

1. UNet forward and forward+backward for 1 and 8 objects x 4 views: multi-view self-attention
   (``MultiViewAttnProcessor`` on attn1) vs per-view attention (the same UNet with V = 1), i.e.
   what MVDream's cross-view attention costs.
2. SDPA (``AttnProcessor2_0``) vs diffusers' classic attention processor on the same UNet.
3. Prompt encoding: MiniLM forward vs the per-prompt cache (score distillation re-encodes one
   prompt thousands of times).
4. One training step of ``MVDiffusionModule`` (4 objects x 4 views: noise, forward, MSE,
   backward, AdamW, EMA): steps/s.
5. Sampling 4 views of one prompt (30 DDIM steps with CFG, one batched cond+uncond pass per
   step).
6. With CUDA: the full SD-2.1 / MVDream UNet (random weights; cost does not depend on values),
   4 views of 32x32 latents, fp16 forward and forward+backward, and peak memory.

Variants being compared are timed interleaved (A, B, A, B, ...) and reported as medians.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved_ms, markdown_table  # noqa: E402
from dreamreward.models.mvdiffusion.unet import MultiViewUNet, small_unet_config  # noqa: E402
from dreamreward.modules.mv_diffusion import MVDiffusionModule  # noqa: E402


def unet_inputs(objects: int, size: int = 32, channels: int = 3, width: int = 384, length=24):
    n = objects * 4
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(n, channels, size, size, generator=g),
        torch.randint(0, 1000, (objects,), generator=g),
        torch.randn(n, length, width, generator=g),
        torch.randn(n, 16, generator=g),
    )


def fwd(unet, x):
    with torch.no_grad():
        unet(*x)


def fwd_bwd(unet, x):
    unet.zero_grad(set_to_none=True)
    unet(*x).square().mean().backward()


def small_unets() -> dict[str, torch.nn.Module]:
    """The same weights three ways: multi-view attention (SDPA), per-view attention (SDPA) and
    per-view attention with diffusers' classic (non-SDPA) processor."""
    config = small_unet_config(image_size=32, block_out_channels=(32, 64, 128))
    torch.manual_seed(0)
    multi = MultiViewUNet(UNet2DConditionModel(**config), 4)
    models: dict[str, torch.nn.Module] = {"multi-view": multi}
    for name, processor in (("per-view", AttnProcessor2_0()), ("classic", AttnProcessor())):
        unet = UNet2DConditionModel(**config)
        unet.load_state_dict(multi.unet.state_dict())
        unet.set_attn_processor(processor)
        models[name] = _PerView(unet)
    return models


class _PerView(torch.nn.Module):
    """A stock UNet called like :class:`MultiViewUNet` (one timestep per object)."""

    def __init__(self, unet: UNet2DConditionModel) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, text, cameras):
        t = timestep.repeat_interleave(4)
        return self.unet(sample, t, text, class_labels=cameras, return_dict=False)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    default_out = Path(__file__).parent / "results" / "mvdiffusion_cpu.json"
    parser.add_argument("--out", default=str(default_out))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict[str, object]] = []
    results: dict[str, object] = {
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
    }

    # 1 + 2: multi-view vs per-view attention; SDPA vs classic attention
    unets = small_unets()
    for objects in (1, 8):
        x = unet_inputs(objects)
        fns = {}
        for name, unet in unets.items():
            fns[f"{name} fwd"] = lambda unet=unet, x=x: fwd(unet, x)
            fns[f"{name} fwd+bwd"] = lambda unet=unet, x=x: fwd_bwd(unet, x)
        t = interleaved_ms(fns, args.repeats)
        results[f"unet_{objects}x4"] = t
        rows.append(
            {
                "case": f"UNet {objects} obj x 4 views",
                "fwd ms": t["multi-view fwd"],
                "fwd+bwd ms": t["multi-view fwd+bwd"],
                "multi/per-view fwd": t["multi-view fwd"] / t["per-view fwd"],
                "multi/per-view fwd+bwd": t["multi-view fwd+bwd"] / t["per-view fwd+bwd"],
                "classic/SDPA fwd+bwd": t["classic fwd+bwd"] / t["per-view fwd+bwd"],
            }
        )
    del unets

    # 3 + 4 + 5 with the module as the config builds it
    module = MVDiffusionModule()
    prompts = ["a red cube on top of a blue sphere", "a small green cone", "", "a pink torus"]
    enc = module.prior.text_encoder

    def uncached():
        enc.clear_cache()
        enc(prompts)

    t = interleaved_ms({"uncached": uncached, "cached": lambda: enc(prompts)}, args.repeats * 4)
    results["text_4_prompts_ms"] = t
    rows.append(
        {
            "case": "MiniLM 4 prompts",
            "fwd ms": t["uncached"],
            "fwd+bwd ms": "",
            "multi/per-view fwd": "",
            "multi/per-view fwd+bwd": "",
            "classic/SDPA fwd+bwd": f"cached {t['cached']:.2f} ms",
        }
    )

    opt = torch.optim.AdamW(module.prior.unet.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    batch = {
        "images": torch.rand(4, 4, 3, 32, 32, generator=g),
        "cameras": torch.randn(4, 4, 16, generator=g),
        "prompt": prompts,
    }

    def train_step():
        opt.zero_grad(set_to_none=True)
        module.training_step(batch, 0).backward()
        opt.step()
        module._update_ema()

    warnings.filterwarnings("ignore", message=".*self.log.*")
    step_ms = interleaved_ms({"step": train_step}, args.repeats)["step"]
    results["train_step_ms"] = step_ms
    module.eval()
    cams = torch.randn(4, 16)
    sample_ms = interleaved_ms(
        {"sample": lambda: module.prior.sample(["a red cube"], cams, 30, guidance_scale=3.0)},
        max(2, args.repeats // 2),
    )["sample"]
    results["sample_4_views_30_steps_ms"] = sample_ms
    rows.append(
        {
            "case": "train step (4 obj x 4 views)",
            "fwd ms": "",
            "fwd+bwd ms": step_ms,
            "multi/per-view fwd": f"{1000 / step_ms:.2f} steps/s",
            "multi/per-view fwd+bwd": "",
            "classic/SDPA fwd+bwd": "",
        }
    )
    rows.append(
        {
            "case": "sample 4 views, 30 DDIM + CFG",
            "fwd ms": sample_ms,
            "fwd+bwd ms": "",
            "multi/per-view fwd": "",
            "multi/per-view fwd+bwd": "",
            "classic/SDPA fwd+bwd": "",
        }
    )

    # 6: full scale on a GPU
    if torch.cuda.is_available():
        from dreamreward.models.mvdiffusion.convert import mvdream_unet_config

        unet = MultiViewUNet(UNet2DConditionModel(**mvdream_unet_config(image_size=32)), 4)
        unet = unet.to("cuda", torch.float16)
        x = tuple(v.cuda() for v in unet_inputs(1, 32, 4, 1024, 77))
        x = (x[0].half(), x[1], x[2].half(), x[3].half())

        def sync(fn):
            def run():
                fn()
                torch.cuda.synchronize()

            return run

        torch.cuda.reset_peak_memory_stats()
        t = interleaved_ms(
            {"fwd": sync(lambda: fwd(unet, x)), "fwd+bwd": sync(lambda: fwd_bwd(unet, x))},
            args.repeats,
        )
        t["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        results["sd21_unet_cuda_fp16"] = t | {"device": torch.cuda.get_device_name()}

    print(markdown_table(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
