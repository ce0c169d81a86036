"""Generate-stage speed, measured as ratios in one run.

1. ``warp`` on CPU, 160 px aligned crops of scikit-image's astronaut (one real face):
   - floor: decode + encode of the same images (what any stage pays per output);
   - the thin-plate-spline warp alone against skimage's PiecewiseAffineTransform moving
     the same landmarks (the other smooth warp the design allows);
   - the backend (landmarks once per source + K warps), one process;
   - the whole stage (gate embeddings, JPEG writes, manifests) with 1 and 2 workers;
     this includes starting workers and loading dlib's models, as a user sees it.
2. Diffusion denoising steps per second with a realistically sized (Stable Diffusion
   1.5 configuration, random weights) UNet at 512x512 (64x64 latents), float16, on a
   CUDA GPU: one image per call against a batch of images per call, with
   classifier-free guidance (img2img: 2 UNet inputs per image; instruct-pix2pix: 3,
   8 input channels). Skipped without CUDA unless ``--diffusion-device cpu``.

    .venv/bin/python benchmarks/generate.py                 # ~1 min on 2 CPU cores
    .venv/bin/python benchmarks/generate.py --sources 2 --skip-stage   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.components import landmarks as face_landmarks
from pipeline.components.generators import Job, warp
from pipeline.components.generators.warp import WarpGenerator
from pipeline.core.files import sha256_file
from pipeline.core.images import decode_rgb, encode_jpeg
from pipeline.core.manifest import write_manifest
from pipeline.core.params import load_params
from stages import generate

EMBED = load_params().embed  # the identity gate embeds as clean does


OUT = Path(__file__).resolve().parent / "out"
EXPRESSIONS = ["smile", "frown", "surprise"]


def crops(n: int, size: int = 160) -> list[np.ndarray]:
    """``n`` different aligned crops of the astronaut's face (shifted a few pixels)."""
    from skimage import data

    rgb = data.astronaut()
    points, _ = face_landmarks.find_landmarks(rgb)
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    side = max(x1 - x0, y1 - y0) * 1.4
    out = []
    for i in range(n):
        dx, dy = (i % 5) * 3 - 6, (i // 5) * 3 - 3
        left, top = int((x0 + x1 - side) / 2 + dx), int((y0 + y1 - side) / 2 + dy)
        crop = rgb[top : top + int(side), left : left + int(side)]
        out.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return out


def rate(fn: Callable[[], int], repeat: int = 3) -> float:
    """Items per second of the best of ``repeat`` runs (the machine is shared)."""
    best = float("inf")
    count = 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def floor(images: list[np.ndarray], k: int) -> int:
    data = [encode_jpeg(img, 95) for img in images]
    for blob in data:
        rgb = decode_rgb(blob, 10**8)
        for _ in range(k):
            encode_jpeg(rgb, 95)
    return len(images) * k


def piecewise_affine(images: list[np.ndarray], k: int) -> int:
    from skimage.transform import PiecewiseAffineTransform
    from skimage.transform import warp as sk_warp

    for img in images:
        points, _ = face_landmarks.find_landmarks(img)
        h, w = img.shape[:2]
        border = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=float)
        for e in EXPRESSIONS[:k]:
            moved = warp.move_landmarks(points, e, 1.0)
            tform = PiecewiseAffineTransform.from_estimate(
                np.vstack([moved, border]), np.vstack([points, border])
            )
            sk_warp(img, tform, output_shape=(h, w))
    return len(images) * k


def tps(images: list[np.ndarray], k: int) -> int:
    for img in images:
        points, _ = face_landmarks.find_landmarks(img)
        for e in EXPRESSIONS[:k]:
            warp.warp_expression(img, e, 1.0, points)
    return len(images) * k


def backend(images: list[np.ndarray], k: int) -> int:
    gen = WarpGenerator(load_params().generate)
    jobs = [
        Job(img, EXPRESSIONS[j % 3], j, str(i)) for i, img in enumerate(images) for j in range(k)
    ]
    gen.generate(jobs)
    return len(jobs)


def stage_rate(images: list[np.ndarray], k: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path.cwd()
        os.chdir(tmp)
        try:
            rows = []
            for i, img in enumerate(images):
                path = Path(f"faces/a/{i}.jpg")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode_jpeg(img, 95))
                rows.append({"path": path.as_posix(), "label": "a", "split": "train",
                             "sha256": sha256_file(path)})  # fmt: skip
            write_manifest(Path("split.csv"), rows)
            overrides = {"generate.enabled": True, "generate.backends.warp.workers": workers,
                         "generate.variants_per_image": k}  # fmt: skip
            params = load_params(overrides=overrides).generate
            start = time.perf_counter()
            generate.run(params, EMBED, 0, Path("split.csv"), Path("gen"))
            return len(images) * k / (time.perf_counter() - start)
        finally:
            os.chdir(cwd)


def warp_section(n_sources: int, k: int, skip_stage: bool) -> dict[str, Any]:
    images = crops(n_sources)
    face_landmarks.find_landmarks(images[0])  # load dlib's models outside the timings
    results: dict[str, Any] = {"sources": n_sources, "variants_per_image": k, "size": 160}
    results["floor_decode_encode_per_s"] = round(rate(lambda: floor(images, k)), 1)
    results["tps_warp_per_s"] = round(rate(lambda: tps(images, k)), 1)
    results["piecewise_affine_per_s"] = round(rate(lambda: piecewise_affine(images, k), 1), 1)
    results["backend_per_s"] = round(rate(lambda: backend(images, k)), 1)
    if not skip_stage:
        for workers in (1, 2):
            results[f"stage_{workers}_workers_per_s"] = round(stage_rate(images, k, workers), 2)
    results["tps_vs_piecewise_affine"] = round(
        results["tps_warp_per_s"] / results["piecewise_affine_per_s"], 2
    )
    results["backend_vs_floor"] = round(
        results["backend_per_s"] / results["floor_decode_encode_per_s"], 3
    )
    return results


def sd15_unet(in_channels: int) -> Any:
    """Stable Diffusion 1.5's UNet configuration (860M parameters), random weights."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64, in_channels=in_channels, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
        attention_head_dim=8,
    )  # fmt: skip


def unet_steps_per_s(unet: Any, images: int, cfg: int, latent: int, device: str) -> float:
    """Denoising steps per second for ``images`` per call (``cfg`` UNet inputs per image)."""
    import torch

    dtype = next(unet.parameters()).dtype
    n = images * cfg
    x = torch.randn(n, unet.config.in_channels, latent, latent, device=device, dtype=dtype)
    text = torch.randn(n, 77, 768, device=device, dtype=dtype)
    t = torch.tensor([500] * n, device=device)

    def steps() -> int:
        with torch.inference_mode():
            for _ in range(5):
                unet(x, t, encoder_hidden_states=text)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return 5

    steps()  # warm-up: kernels, allocator
    return rate(steps, repeat=2)


def diffusion_section(device: str, size: int, batch: int) -> dict[str, Any]:
    import torch

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    latent = size // 8
    results: dict[str, Any] = {"device": device, "size": size, "dtype": str(dtype), "batch": batch}
    if device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name(device)
    for name, channels, cfg in (("img2img", 4, 2), ("instruct-pix2pix", 8, 3)):
        unet = sd15_unet(channels).to(device, dtype).eval()
        one = unet_steps_per_s(unet, 1, cfg, latent, device)
        many = unet_steps_per_s(unet, batch, cfg, latent, device)
        results[name] = {
            "steps_per_s_1_image": round(one, 2),
            f"steps_per_s_{batch}_images": round(many, 2),
            "image_steps_per_s_1": round(one, 2),
            f"image_steps_per_s_{batch}": round(many * batch, 2),
            "batching_speedup": round(many * batch / one, 2),
        }
        del unet
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--variants", type=int, default=3)
    parser.add_argument("--skip-stage", action="store_true", help="no whole-stage timings")
    parser.add_argument("--diffusion-device", default=None, help="default: cuda when present")
    parser.add_argument("--diffusion-size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    results: dict[str, Any] = {"warp": warp_section(args.sources, args.variants, args.skip_stage)}
    import torch

    device = args.diffusion_device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        results["diffusion"] = "skipped: no CUDA device (use --diffusion-device cpu to force)"
    else:
        results["diffusion"] = diffusion_section(device, args.diffusion_size, args.batch)
    OUT.mkdir(exist_ok=True)
    (OUT / "generate.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
