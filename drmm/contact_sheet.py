"""Contact sheets of the images `drmm suggest` picks: each image with its row number in the CSV
and the class the model predicts, so that a person labels them by eye, built-in data sets too
(whose rows name training-set indices, not files).

    to_label.png    a grid of tiles, row number and predicted class under each image
    to_label.html   the same tiles in a page (images embedded), with each row's `image` entry

Images are shown as the run decoded them (a folder's files resized as in training), scaled up
by whole pixels so that small images stay crisp. Both files are written atomically.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from drmm import html_page
from drmm.figures import png_bytes
from drmm.files import atomic_write

TILE = 96  # pixels an image is scaled up to (at most; whole multiples of its size)
CAPTION = 34  # pixels of caption under each tile: two lines
COLUMNS = 10  # tiles per row of the PNG
FONT_SIZE = 13


def tile_size(h: int, w: int) -> tuple[int, int]:
    """An image's size scaled up by a whole factor to at most TILE pixels a side (at least 1x)."""
    zoom = max(1, TILE // max(h, w))
    return h * zoom, w * zoom


def sheet_png(pixels: np.ndarray, captions: list[tuple[str, str]]) -> Image.Image:
    """uint8 images (n, H, W, C) in a grid of COLUMNS, each with two caption lines under it."""
    n, h, w = pixels.shape[:3]
    th, tw = tile_size(h, w)
    cell_w, cell_h = max(tw, TILE) + 8, th + CAPTION + 8
    cols = min(COLUMNS, n)
    sheet = Image.new("RGB", (cols * cell_w, -(-n // cols) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=FONT_SIZE)
    for i, (img, lines) in enumerate(zip(pixels, captions, strict=True)):
        left, top = (i % cols) * cell_w + 4, (i // cols) * cell_h + 4
        im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        sheet.paste(im.convert("RGB").resize((tw, th), Image.Resampling.NEAREST),
                    (left + (cell_w - 8 - tw) // 2, top))
        for j, line in enumerate(lines):
            draw.text((left, top + th + 2 + j * (FONT_SIZE + 2)), line, fill="black", font=font)
    return sheet


def write_contact_sheets(csv_path: Path, pixels: np.ndarray, names: list[str],
                         predicted: list[str]) -> tuple[Path, Path]:
    """CSV_STEM.png and CSV_STEM.html beside the CSV: row i (from 1) is names[i - 1], shown
    with its predicted class. pixels: uint8 (n, H, W, C)."""
    captions = [(f"row {i}", f"predicted {p}") for i, p in enumerate(predicted, start=1)]
    png_path, html_path = csv_path.with_suffix(".png"), csv_path.with_suffix(".html")
    sheet = sheet_png(pixels, captions)
    atomic_write(png_path, lambda f: sheet.save(f, format="PNG"))
    tiles = [html_page.tile(png_bytes(p), [*c, name], f"{c[0]}: {name}")
             for p, c, name in zip(pixels, captions, names, strict=True)]
    text = html_page.page(f"{csv_path.name}: images to label", [
        f"<h1>Images to label: {escape(csv_path.name)}</h1>"
        "<p>Fill each row's <code>label</code> column of the CSV with the image's class (leave"
        " it empty to skip the image); for a folder:DIR run, <code>drmm label"
        f" {escape(csv_path.name)} --folder DIR</code> then moves each image into"
        " DIR/labeled/&lt;label&gt;/.</p>",
        html_page.gallery(tiles)])
    atomic_write(html_path, lambda f: f.write(text.encode()))
    return png_path, html_path
