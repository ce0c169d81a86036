"""Contact sheets: thumbnails in rows with a caption each, to look at a stage's output.

``augment_sheet`` shows one row per source image with its variants in order. The
tiling (``Tile``, ``tile_sheet``, ``save_sheet``) knows nothing about augment,
so another sheet (e.g. rejects grouped by reason) only has to build its rows.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_bytes
from pipeline.core.images import MAX_PIXELS, ImageError, encode_png, load_rgb
from pipeline.core.manifest import Row, read_manifest

PAD = 4
BACKGROUND = (255, 255, 255)
PLACEHOLDER = (200, 200, 200)  # stands in for an image that cannot be read
TEXT = (0, 0, 0)
# DejaVu Sans covers Latin with every accent, Greek, Cyrillic and more (not CJK); it ships
# with matplotlib (a dependency for this font only; matplotlib itself is never imported).
CAPTION_FONT = ("matplotlib", "mpl-data/fonts/ttf/DejaVuSans.ttf")


@dataclass(frozen=True)
class Tile:
    """One thumbnail: the image file and the text under it."""

    path: Path
    caption: str
    readable: bool = True  # False: drawn as the placeholder, the file never opened


def caption_height(thumb: int) -> int:
    return _font_size(thumb) + 4


def sheet_size(n_rows: int, n_cols: int, thumb: int) -> tuple[int, int]:
    """(width, height) in pixels of a sheet with this many rows and columns."""
    width = PAD + n_cols * (thumb + PAD)
    height = PAD + n_rows * (thumb + caption_height(thumb) + PAD)
    return width, height


def tile_sheet(rows: Sequence[Sequence[Tile]], thumb: int) -> np.ndarray:
    """An RGB sheet: each row of tiles left to right, shorter rows left blank."""
    n_cols = max((len(row) for row in rows), default=0)
    sheet = Image.new("RGB", sheet_size(len(rows), n_cols, thumb), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = caption_font(_font_size(thumb))
    for r, row in enumerate(rows):
        top = PAD + r * (thumb + caption_height(thumb) + PAD)
        for c, tile in enumerate(row):
            left = PAD + c * (thumb + PAD)
            image = thumbnail(tile.path, thumb) if tile.readable else _placeholder(thumb)
            sheet.paste(image, (left, top))
            text = _fit_text(draw, tile.caption, font, thumb)
            draw.text((left, top + thumb + 2), text, fill=TEXT, font=font)
    return np.asarray(sheet)


def thumbnail(path: Path, thumb: int) -> Image.Image:
    """The image scaled to fit thumb x thumb (up or down), centred; grey if unreadable."""
    canvas = Image.new("RGB", (thumb, thumb), BACKGROUND)
    try:
        image = Image.fromarray(load_rgb(path, MAX_PIXELS))
    except ImageError:
        return _placeholder(thumb)
    image = ImageOps.contain(image, (thumb, thumb), Image.Resampling.LANCZOS)
    canvas.paste(image, ((thumb - image.width) // 2, (thumb - image.height) // 2))
    return canvas


def _placeholder(thumb: int) -> Image.Image:
    return Image.new("RGB", (thumb, thumb), PLACEHOLDER)


def save_sheet(out: Path, pixels: np.ndarray) -> None:
    atomic_write_bytes(out, encode_png(pixels))


def augment_sheet(manifest: Path, out: Path, n_sources: int = 8, thumb: int = 96) -> None:
    """One row per source (the first ``n_sources`` parents, sorted), variants in order."""
    rows = read_manifest(manifest)
    if not rows or "parent" not in rows[0]:
        raise UserError(f"{manifest} is not an augment manifest (no rows or no parent column)")
    by_parent: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_parent[row["parent"]].append(row)
    tiles = [_variant_tiles(by_parent[parent]) for parent in sorted(by_parent)[:n_sources]]
    save_sheet(out, tile_sheet(tiles, thumb))


def _variant_tiles(rows: list[Row]) -> list[Tile]:
    ordered = sorted(rows, key=lambda row: int(row["variant"]))
    return [Tile(Path(row["path"]), f"{row['label']} v{row['variant']}") for row in ordered]


@cache
def caption_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at ``size`` px, so ``Zoë Ångström`` or ``Дмитрий`` are not drawn as
    boxes; Pillow's default font (Latin only) when it is missing."""
    path = _caption_font_file()
    return ImageFont.load_default(size=size) if path is None else ImageFont.truetype(path, size)


@cache
def _caption_font_file() -> str | None:
    path = font_file(*CAPTION_FONT)
    if path is None:  # once per process, not once per size
        print(
            "warning: DejaVu Sans (matplotlib's) not found: captions use Pillow's default "
            "font, which draws non-Latin letters as boxes",
            file=sys.stderr,
        )
    return None if path is None else str(path)


def font_file(package: str, relative: str) -> Path | None:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def _font_size(thumb: int) -> int:
    return max(9, thumb // 8)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """Shorten text with an ellipsis so a caption never spills into the next tile."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


# ---------------------------------------------------------------------------- rejects


def rejects_sheet(
    rejects: Path | Sequence[Path],
    out: Path,
    thumb: int = 96,
    per_reason: int = 24,
    per_row: int = 8,
) -> dict[str, int]:
    """Every rejected image grouped by reason, beside the image it conflicts with.

    A band per reason (title: reason and count); each reject is its thumbnail captioned
    with its class, followed, when the row names one in ``conflict_with``, by that image
    captioned "vs <class>" (the kept duplicate, the same face in another class, or the
    face it resembles). At most ``per_reason`` rejects per reason are drawn. Returns the
    count per reason. Several rejects manifests (every stage's) make one sheet.
    """
    files = [rejects] if isinstance(rejects, Path) else list(rejects)
    rows = [row for file in files for row in _rejects_rows(file)]
    by_reason: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_reason[row["reason"]].append(row)
    counts = {reason: len(members) for reason, members in sorted(by_reason.items())}
    grids = {
        reason: _reason_grid(by_reason[reason], thumb, per_reason, per_row) for reason in counts
    }
    width = max([grid.shape[1] for grid in grids.values()], default=320)
    bands = [_title(f"no rejects in {', '.join(map(str, files))}", width, thumb)]
    if counts:
        bands = []
        for reason, grid in grids.items():
            more = counts[reason] - per_reason
            note = f", {more} more not shown" if more > 0 else ""
            bands += [_title(f"{reason} ({counts[reason]}{note})", width, thumb), _pad(grid, width)]
    save_sheet(out, np.concatenate(bands))
    return counts


def _rejects_rows(path: Path) -> list[Row]:
    rows = read_manifest(path)
    if rows and "reason" not in rows[0]:
        raise UserError(f"{path} is not a rejects manifest (no reason column)")
    return rows


def _reject_tiles(row: Row) -> list[Tile]:
    # a link out of the dataset is never followed, not even for a thumbnail
    readable = row["reason"] != "outside_root"
    tiles = [Tile(Path(row["path"]), row.get("label", ""), readable)]
    if row.get("conflict_with"):
        other = row.get("conflict_label") or Path(row["conflict_with"]).parent.name
        tiles.append(Tile(Path(row["conflict_with"]), f"vs {other}"))
    return tiles


def _reason_grid(members: list[Row], thumb: int, per_reason: int, per_row: int) -> np.ndarray:
    """The reason's tiles in rows; a pair (reject, the other image) is never split."""
    lines: list[list[Tile]] = [[]]
    for row in members[:per_reason]:
        tiles = _reject_tiles(row)
        if lines[-1] and len(lines[-1]) + len(tiles) > max(per_row, len(tiles)):
            lines.append([])
        lines[-1].extend(tiles)
    return tile_sheet(lines, thumb)


def _title(text: str, width: int, thumb: int) -> np.ndarray:
    size = _font_size(thumb) + 4
    strip = Image.new("RGB", (width, size + 2 * PAD), (230, 230, 230))
    draw = ImageDraw.Draw(strip)
    draw.text((PAD, PAD), text, fill=TEXT, font=caption_font(size))
    return np.asarray(strip)


def _pad(pixels: np.ndarray, width: int) -> np.ndarray:
    """Pad on the right with the background colour to ``width``."""
    extra = width - pixels.shape[1]
    return np.pad(pixels, ((0, 0), (0, extra), (0, 0)), constant_values=BACKGROUND[0])
