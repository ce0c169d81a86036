"""Contact sheets: size, order of rows and variants, unreadable tiles, bad manifests, fonts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from pipeline.cli import contact_sheet
from pipeline.cli.contact_sheet import (
    PAD,
    PLACEHOLDER,
    Tile,
    augment_sheet,
    caption_font,
    caption_height,
    sheet_size,
    tile_sheet,
)
from pipeline.core.errors import UserError
from pipeline.core.images import encode_png
from pipeline.core.manifest import write_manifest


def solid(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(np.full((40, 30, 3), value, np.uint8)))
    return path


def tile_centre(sheet: np.ndarray, row: int, col: int, thumb: int) -> tuple[int, ...]:
    top = PAD + row * (thumb + caption_height(thumb) + PAD)
    left = PAD + col * (thumb + PAD)
    return tuple(int(v) for v in sheet[top + thumb // 2, left + thumb // 2])


def test_augment_sheet_size_and_order(in_tmp: Path) -> None:
    rows = []
    # Three sources written in reverse order, four variants each, listed shuffled.
    for s, parent in enumerate(["c.jpg", "b.jpg", "a.jpg"]):
        for variant in (2, 0, 3, 1):
            value = 10 * (s + 1) + variant  # c=10.., b=20.., a=30..
            solid(in_tmp / "out" / f"{parent}_{variant}.png", value)
            path = f"out/{parent}_{variant}.png"
            rows.append({"path": path, "label": "cls", "parent": parent, "variant": str(variant)})
    write_manifest(in_tmp / "manifest.csv", rows)

    augment_sheet(in_tmp / "manifest.csv", in_tmp / "sheet.png", n_sources=2, thumb=32)
    sheet = np.asarray(Image.open(in_tmp / "sheet.png").convert("RGB"))
    assert (sheet.shape[1], sheet.shape[0]) == sheet_size(2, 4, 32) == (148, 102)
    assert [tile_centre(sheet, 0, c, 32)[0] for c in range(4)] == [30, 31, 32, 33]  # a.jpg
    assert [tile_centre(sheet, 1, c, 32)[0] for c in range(4)] == [20, 21, 22, 23]  # b.jpg
    assert not list(in_tmp.glob("*.tmp"))


def test_unreadable_tile_is_a_placeholder(tmp_path: Path) -> None:
    """What a rejects sheet needs: a broken file still gets its tile and caption."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    good = solid(tmp_path / "good.png", 90)
    sheet = tile_sheet([[Tile(broken, "unreadable")], [Tile(good, "ok"), Tile(good, "ok")]], 24)
    assert (sheet.shape[1], sheet.shape[0]) == sheet_size(2, 2, 24)
    assert tile_centre(sheet, 0, 0, 24) == PLACEHOLDER
    assert tile_centre(sheet, 1, 1, 24) == (90, 90, 90)


def test_not_an_augment_manifest(tmp_path: Path) -> None:
    write_manifest(tmp_path / "faces.csv", [{"path": "a.jpg", "label": "x"}])
    with pytest.raises(UserError, match="not an augment manifest"):
        augment_sheet(tmp_path / "faces.csv", tmp_path / "sheet.png")


NOTDEF = "\U0010fffd"  # a private-use code point no font covers: drawn as the missing glyph


def glyph(char: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> np.ndarray:
    canvas = Image.new("L", (40, 40), 0)
    ImageDraw.Draw(canvas).text((4, 4), char, fill=255, font=font)
    return np.asarray(canvas)


def test_captions_draw_non_latin_letters(tmp_path: Path) -> None:
    """Pillow's default font draws Ë, Å, Д, Σ as its missing-glyph box: the caption font
    gives each its own glyph, and a sheet captioned "Ångström" differs from one captioned
    with a missing glyph in the place of Å."""
    font = caption_font(16)
    assert isinstance(font, ImageFont.FreeTypeFont) and font.getname()[0] == "DejaVu Sans"
    box = glyph(NOTDEF, font)
    for char in "ëÅöДмитийΣωκράης":
        drawn = glyph(char, font)
        assert drawn.any() and not np.array_equal(drawn, box), char
    image = solid(tmp_path / "a.png", 128)
    sheets = [
        tile_sheet([[Tile(image, caption)]], 96) for caption in ("Ångström", f"{NOTDEF}ngström")
    ]
    assert not np.array_equal(*sheets)


def test_missing_caption_font_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(contact_sheet, "CAPTION_FONT", ("matplotlib", "no/such/font.ttf"))
    contact_sheet._caption_font_file.cache_clear()
    contact_sheet.caption_font.cache_clear()
    try:
        font = contact_sheet.caption_font(12)
        assert not isinstance(font, ImageFont.FreeTypeFont) or font.getname()[0] != "DejaVu Sans"
        assert "DejaVu Sans (matplotlib's) not found" in capsys.readouterr().err
    finally:
        contact_sheet._caption_font_file.cache_clear()
        contact_sheet.caption_font.cache_clear()
