"""Images that are merely unusual just work: every mode PIL reads comes out as RGB uint8 (H, W, 3), upright.

Grayscale, gray + alpha, RGBA, palette (with and without transparency), 1-bit, 16-bit gray PNG, 32-bit gray
TIFF, 48-bit RGB PNG, CMYK JPEG, EXIF-rotated JPEG, BMP, TIFF, WebP, GIF and a very large image (more pixels than
PIL's default limit warns about); then a whole tiny chain over a competition whose images mix all of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.builders import tiny_experiment
from helpers.chain import run_chain, write_competition_yaml
from pipeline.data.tables import load_image

RED = (220, 30, 30)


def gray(path: Path) -> None:
    Image.new("L", (20, 12), 77).save(path.with_suffix(".png"))


def gray_alpha(path: Path) -> None:
    Image.new("LA", (20, 12), (77, 255)).save(path.with_suffix(".png"))


def rgba(path: Path) -> None:
    image = Image.new("RGBA", (20, 12), (*RED, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent: composited onto white
    image.save(path.with_suffix(".png"))


def palette(path: Path) -> None:
    Image.new("RGB", (20, 12), RED).convert("P", palette=Image.Palette.ADAPTIVE).save(path.with_suffix(".png"))


def palette_transparent(path: Path) -> None:
    image = Image.new("P", (20, 12), 1)
    image.putpalette([0, 0, 0, *RED] + [0] * 762)
    image.info["transparency"] = 0
    image.putpixel((0, 0), 0)
    image.save(path.with_suffix(".png"), transparency=0)


def one_bit(path: Path) -> None:
    Image.new("1", (20, 12), 1).save(path.with_suffix(".png"))


def gray16(path: Path) -> None:
    ramp = np.linspace(0, 65535, 20 * 12).reshape(12, 20).astype(np.uint16)
    Image.fromarray(ramp).save(path.with_suffix(".png"))  # mode I;16


def gray32(path: Path) -> None:
    Image.fromarray(np.full((12, 20), 1000, dtype=np.int32), mode="I").save(path.with_suffix(".tif"))


def cmyk_jpeg(path: Path) -> None:
    Image.new("RGB", (20, 12), RED).convert("CMYK").save(path.with_suffix(".jpg"), quality=95)


def exif_rotated_jpeg(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (20, 12), RED).save(path.with_suffix(".jpg"), exif=exif.tobytes(), quality=95)


def bmp(path: Path) -> None:
    Image.new("RGB", (20, 12), RED).save(path.with_suffix(".bmp"))


def rgb48_png(path: Path) -> None:
    import cv2

    pixels = np.zeros((12, 20, 3), dtype=np.uint16)
    pixels[...] = [c * 257 for c in reversed(RED)]  # OpenCV writes BGR; 16 bits per channel
    cv2.imwrite(str(path.with_suffix(".png")), pixels)


def lzw_tiff(path: Path) -> None:
    Image.new("RGB", (20, 12), RED).save(path.with_suffix(".tiff"), compression="tiff_lzw")


def webp(path: Path) -> None:
    Image.new("RGB", (20, 12), RED).save(path.with_suffix(".webp"), lossless=True)


def gif(path: Path) -> None:
    Image.new("RGB", (20, 12), RED).save(path.with_suffix(".gif"))


KINDS: dict[str, Callable[[Path], None]] = {
    "grayscale": gray,
    "gray+alpha": gray_alpha,
    "RGBA": rgba,
    "palette": palette,
    "palette with transparency": palette_transparent,
    "1-bit": one_bit,
    "16-bit gray PNG": gray16,
    "32-bit gray TIFF": gray32,
    "CMYK JPEG": cmyk_jpeg,
    "EXIF-rotated JPEG": exif_rotated_jpeg,
    "BMP": bmp,
    "48-bit RGB PNG": rgb48_png,
    "LZW TIFF": lzw_tiff,
    "WebP": webp,
    "GIF": gif,
}


def written(tmp_path: Path, kind: str) -> Path:
    KINDS[kind](tmp_path / "image")
    (path,) = tmp_path.glob("image.*")
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_unusual_images_decode_to_rgb_uint8(tmp_path: Path, kind: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = load_image(written(tmp_path, kind))
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    expected_shape = (20, 12, 3) if kind == "EXIF-rotated JPEG" else (12, 20, 3)  # upright, as a viewer shows it
    assert pixels.shape == expected_shape
    if kind in (
        "CMYK JPEG",
        "EXIF-rotated JPEG",
        "palette",
        "48-bit RGB PNG",
        "BMP",
        "LZW TIFF",
        "WebP",
        "GIF",
        "RGBA",
    ):
        assert np.abs(pixels[5, 5].astype(int) - RED).max() <= 12, pixels[5, 5]  # colours survive
    if kind in ("RGBA", "palette with transparency"):
        assert tuple(pixels[0, 0]) == (255, 255, 255)  # transparent -> white, not black
    if kind == "16-bit gray PNG":
        assert pixels.min() == 0 and pixels.max() == 255 and len(np.unique(pixels)) > 100  # scaled, not clipped
    if kind == "grayscale":
        assert (pixels == 77).all()


def test_a_very_large_image_decodes(tmp_path: Path) -> None:
    """More pixels than PIL's default decompression-bomb warning (about 89 MP): a big scan is not an attack."""
    width, height = 10_000, 9_000
    assert width * height > 89_478_485  # PIL's default Image.MAX_IMAGE_PIXELS
    path = tmp_path / "scan.png"
    Image.new("L", (width, height), 200).save(path, compress_level=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail here
        pixels = load_image(path)
    assert pixels.shape == (height, width, 3) and pixels.dtype == np.uint8 and pixels[-1, -1, 0] == 200


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_chain_over_every_unusual_kind(project: Path, capsys: pytest.CaptureFixture) -> None:
    """Train, predict and submit on a competition whose images (train and test) cycle through every kind."""
    write_competition_yaml(project, "csv")
    raw = project / "data" / "raw" / "toy"
    kinds = list(KINDS)
    for i, image in enumerate(sorted((raw / "train").glob("*.png")) + sorted((raw / "test").glob("*.png"))):
        scratch = image.parent / "scratch"
        scratch.mkdir()
        KINDS[kinds[i % len(kinds)]](scratch / "image")
        (made,) = scratch.glob("image.*")
        made.rename(image)  # keep the .png name the tables use: PIL goes by content, not extension
        scratch.rmdir()
    config = tiny_experiment(project)
    run_chain(capsys, config)
    submission = pd.read_csv(project / "submissions/toy/tiny.csv")
    assert len(submission) == 6 and submission["label"].isin(["cat", "dog", "fox"]).all()
