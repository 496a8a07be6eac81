"""How the shipped prior's samples depend on classifier-free guidance and the sampler (a quality
sweep, not a timing): for each setting, 20 one-object prompts (5 shapes x 4 colours) are sampled
from the canonical cameras and the oracle reads each sample's shape and colour.

    python bench/prior_guidance.py   # -> bench/results/prior_guidance.json (~8 min, 2 cores)

Every setting uses the same initial noise per prompt (seed = prompt index), so the settings
differ only by guidance and sampler. DDPM is the ancestral sampler (fresh noise every step).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from diffusers import DDPMScheduler

sys.path.insert(0, str(Path(__file__).parent))
from _timing import markdown_table  # noqa: E402
from dreamreward.models.mvdiffusion.camera_embedding import mvdream_camera_embedding  # noqa: E402
from dreamreward.models.mvdiffusion.prior import MultiViewPrior, load_prior  # noqa: E402
from dreamreward.world.oracle import recognise_object  # noqa: E402
from dreamreward.world.views import default_cameras  # noqa: E402

SHAPES = ("cube", "sphere", "cylinder", "cone", "torus")
COLOURS = ("red", "blue", "green", "yellow")
SETTINGS = (  # (sampler, steps, guidance)
    ("ddim", 50, 1.0),
    ("ddim", 30, 1.0),
    ("ddim", 30, 1.5),
    ("ddim", 30, 2.0),
    ("ddim", 30, 3.0),
    ("ddim", 30, 7.5),
    ("ddpm", 50, 1.0),
    ("ddpm", 50, 2.0),
    ("ddpm", 100, 3.0),
)


@torch.no_grad()
def ancestral_sample(
    prior: MultiViewPrior,
    prompt: str,
    cameras: torch.Tensor,
    steps: int,
    guidance: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """(V, 3, H, W) in [0, 1]: DDPM ancestral sampling with CFG (MultiViewPrior.sample is DDIM)."""
    ddpm = DDPMScheduler.from_config(
        prior.scheduler.config, prediction_type="epsilon", timestep_spacing="trailing"
    )
    ddpm.set_timesteps(steps)
    text, uncond = prior.encode_prompts([prompt]), prior.encode_prompts([""])
    size = prior.unet.sample_size
    x = torch.randn(prior.num_views, prior.unet.in_channels, size, size, generator=generator)
    for t in ddpm.timesteps:
        eps, _ = prior.predict_noise(x, t.expand(1), text, cameras, uncond, guidance)
        x = ddpm.step(eps, t, x, generator=generator).prev_sample
    return prior.decode(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results/prior_guidance.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prior = load_prior().eval()
    cams = default_cameras(prior.image_size)
    embedding = mvdream_camera_embedding(cams)
    prompts = [(colour, shape) for shape in SHAPES for colour in COLOURS]
    rows = []
    for sampler, steps, guidance in SETTINGS:
        shape_right = colour_right = 0
        for i, (colour, shape) in enumerate(prompts):
            prompt = f"a {colour} {shape}"
            gen = torch.Generator().manual_seed(i)
            if sampler == "ddim":
                views = prior.sample(
                    [prompt],
                    embedding,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    generator=[gen],
                )
            else:
                views = ancestral_sample(prior, prompt, embedding, steps, guidance, gen)
            seen = recognise_object(views.permute(0, 2, 3, 1), cams)
            shape_right += seen.shape == shape
            colour_right += seen.color == colour
        rows.append(
            {
                "sampler": sampler,
                "steps": steps,
                "guidance": guidance,
                "shape right": round(shape_right / len(prompts), 3),
                "colour right": round(colour_right / len(prompts), 3),
            }
        )
        print(rows[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"prompts": len(prompts), "rows": rows}, indent=2) + "\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
