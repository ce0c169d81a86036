"""instruct-pix2pix and img2img end to end, on tiny random pipelines built here (no download).

Each pipeline (a tiny UNet, VAE and CLIP text model, an in-memory BPE vocabulary) is
saved with save_pretrained and loaded back by path, the way a user's local model is.
Outputs are noise, so the identity threshold is raised: these tests are about the
backends and the stage's plumbing; the gate has its own tests.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.components.detectors import torch_threads
from pipeline.components.generators import Job, SlowDeviceWarning
from pipeline.components.generators.base import cpu_seconds_per_image, warn_if_slow
from pipeline.components.generators.diffusion import Img2ImgGenerator, InstructPix2PixGenerator
from pipeline.core.config import GenerateParams
from pipeline.core.errors import UserError
from pipeline.core.files import sha256_file
from pipeline.core.images import encode_jpeg, load_rgb
from pipeline.core.manifest import Row, read_manifest, write_manifest
from pipeline.core.params import load_params
from stages import generate

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")


EMBED = load_params().embed  # the identity gate embeds as clean does


def _tokenizer() -> Any:
    """A CLIP BPE tokenizer over single bytes: no merges, no files, no download."""
    from tokenizers import pre_tokenizers

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab |= {f"{c}</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    return transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _components(unet_in_channels: int) -> dict[str, Any]:
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16,
        in_channels=unet_in_channels, out_channels=4, cross_attention_dim=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=4, norm_num_groups=4,
    )  # fmt: skip
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=32,
    )  # fmt: skip
    text = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=16, intermediate_size=32,
            num_attention_heads=2, num_hidden_layers=2, vocab_size=600, max_position_embeddings=77,
        )
    )  # fmt: skip
    return {
        "unet": unet, "vae": vae, "text_encoder": text, "tokenizer": _tokenizer(),
        "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False,
    }  # fmt: skip


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both pipelines, saved to disk: {backend name: folder}."""
    root = tmp_path_factory.mktemp("models")
    scheduler = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    ip2p = diffusers.StableDiffusionInstructPix2PixPipeline(
        scheduler=diffusers.EulerAncestralDiscreteScheduler(**scheduler), **_components(8)
    )
    img2img = diffusers.StableDiffusionImg2ImgPipeline(
        scheduler=diffusers.DDIMScheduler(clip_sample=False, steps_offset=1, **scheduler),
        **_components(4),
    )
    ip2p.save_pretrained(root / "ip2p")
    img2img.save_pretrained(root / "img2img")
    return {"instruct-pix2pix": root / "ip2p", "img2img": root / "img2img"}


def _key(backend: str, key: str) -> str:
    """A shared key of the generate section, or one of the backend's own."""
    return key if key in GenerateParams.model_fields else f"backends.{backend}.{key}"


def _params(backend: str, model: Path | str, **extra: Any) -> GenerateParams:
    """The backend's own section: model, device, few steps at 32 px, batches of 4."""
    own = {"model": str(model), "device": "cpu", "steps": 2, "size": 32, "batch_size": 4}
    overrides = {
        "generate.enabled": True, "generate.backend": backend,
        "generate.identity_threshold": 10.0,
        **{f"generate.{_key(backend, k)}": v for k, v in (own | extra).items()},
    }  # fmt: skip
    return load_params(overrides=overrides).generate


@pytest.fixture
def split_manifest(in_tmp: Path) -> Path:
    """Two training crops (48 px) and one test crop, as split writes them."""
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    for i, split in enumerate(["train", "train", "test"]):
        path = Path(f"faces/p{i % 2}/{i}.jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_jpeg(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), 95))
        rows.append({"path": path.as_posix(), "label": f"p{i % 2}", "source": f"raw/{i}.jpg",
                     "sha256": sha256_file(path), "split": split})  # fmt: skip
    write_manifest(Path("split/manifest.csv"), rows)
    return Path("split/manifest.csv")


def _run_quietly(fn: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowDeviceWarning)
        return fn()


@pytest.mark.parametrize("backend", ["instruct-pix2pix", "img2img"])
def test_backend_runs_end_to_end_through_the_stage(
    backend: str, tiny_models: dict[str, Path], split_manifest: Path
) -> None:
    memory_options = backend == "img2img"  # slicing and tiling also run on a CPU
    params = _params(
        backend, tiny_models[backend], attention_slicing=memory_options, vae_tiling=memory_options
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowDeviceWarning)  # 32 px x 2 steps: under a second
        report = generate.run(params, EMBED, 0, split_manifest, Path("gen"))
    rows = read_manifest(Path("gen/manifest.csv"))
    assert report.n_in == report.n_kept == len(rows) == 2 * 3  # two train images x 3
    assert [r["expression"] for r in rows[:3]] == ["smile", "frown", "surprise"]
    for row in rows:
        assert row["backend"] == backend and row["kind"] == "generated"
        assert load_rgb(Path(row["path"]), 10**6).shape == (48, 48, 3)  # back at crop size
        assert sha256_file(Path(row["path"])) == row["sha256"]
    applied = [r["params"] for r in rows]
    key = "make the person smile" if backend == "instruct-pix2pix" else "a close-up photo"
    assert key in applied[0] and str(tiny_models[backend]) in applied[0]
    assert ('"attention_slicing":true,"' in applied[0]) == memory_options
    assert ('"vae_tiling":true' in applied[0]) == memory_options
    distances = report.extra["by_backend"][backend]["smile"]
    assert distances["made"] == distances["kept"] == 2 and distances["mean_distance"] > 0


def test_same_seed_same_image_in_any_batch_size(tiny_models: dict[str, Path]) -> None:
    face = np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    jobs = [Job(face, "smile", 11, "a"), Job(face, "frown", 12, "a"), Job(face, "smile", 13, "a")]
    model = tiny_models["instruct-pix2pix"]
    batched = _run_quietly(lambda: InstructPix2PixGenerator(_params("instruct-pix2pix", model)))
    singles = _run_quietly(
        lambda: InstructPix2PixGenerator(_params("instruct-pix2pix", model, batch_size=1))
    )
    together = [v.image for v in batched.generate(jobs)]
    alone = [v.image for job in jobs for v in singles.generate([job])]
    for a, b in zip(together, alone, strict=True):
        # The noise is the same; float sums in a larger batch may round a pixel one level.
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert np.array_equal(together[0], batched.generate(jobs[:1])[0].image)
    assert not np.array_equal(together[0], together[2])  # same expression, another seed


def test_the_cpu_warning_comes_from_size_and_steps(tiny_models: dict[str, Path]) -> None:
    """32 px x 2 steps took 0.2 s, not the "minutes per image" once announced for any job."""
    assert cpu_seconds_per_image(32, 2, 3, threads=2) < 5
    # instruct-pix2pix's defaults (512 px, 20 steps, 3 passes): 23 min per image on 2 cores
    assert 15 * 60 < cpu_seconds_per_image(512, 20, 3, threads=2) < 30 * 60
    cpu = torch.device("cpu")
    with torch_threads(2), warnings.catch_warnings():
        warnings.simplefilter("error", SlowDeviceWarning)
        warn_if_slow("img2img", cpu, 32, 2, 2)  # silent
        warn_if_slow("img2img", torch.device("cuda"), 512, 50, 3)  # not a CPU: silent
    with torch_threads(2), pytest.warns(SlowDeviceWarning, match=r"about 23 min per image at 512"):
        warn_if_slow("instruct-pix2pix", cpu, 512, 20, 3)
    # img2img runs strength x steps (0.5 x 20) with text guidance; the model itself is tiny
    large = _params("img2img", tiny_models["img2img"], steps=20, size=512)
    with torch_threads(2), pytest.warns(SlowDeviceWarning, match="10 denoising steps of 2 UNet"):
        Img2ImgGenerator(large)


def test_hub_id_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = _params("img2img", "someone/not-cached-model")
    with pytest.raises(UserError, match="cannot download someone/not-cached-model: offline"):
        _run_quietly(lambda: Img2ImgGenerator(params))


def test_missing_local_folder_is_a_clear_error(tmp_path: Path) -> None:
    params = _params("instruct-pix2pix", tmp_path / "nothing-here")
    with pytest.raises(UserError, match="not a folder saved with save_pretrained"):
        _run_quietly(lambda: InstructPix2PixGenerator(params))


def test_settings_are_checked_before_loading(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="0 denoising steps"):
        Img2ImgGenerator(_params("img2img", tmp_path, steps=1, strength=0.5))
    no_instruction = _params("instruct-pix2pix", tmp_path, expressions=["smile", "wink"])
    with pytest.raises(UserError, match=r"cannot make expression.*wink"):
        InstructPix2PixGenerator(no_instruction)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_half_precision_and_offload_on_cuda(tiny_models: dict[str, Path]) -> None:
    params = _params(
        "img2img", tiny_models["img2img"], device="cuda", steps=4, attention_slicing=True,
        vae_tiling=True, cpu_offload=True,
    )  # fmt: skip
    backend = Img2ImgGenerator(params)
    assert backend.dtype == torch.float16
    assert backend.options == {"attention_slicing": True, "vae_tiling": True, "cpu_offload": True}
    face = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    (variant,) = backend.generate([Job(face, "smile", 1, "a")])
    assert variant.image is not None and variant.image.shape == (40, 40, 3)
