"""Self-contained HTML pages (the run report, the contact sheet of images to label): pictures
embedded as base64 data URIs, so one file opens anywhere, mailed or copied, with nothing beside
it; small images are scaled up with crisp pixels rather than blurred."""

from __future__ import annotations

import base64
from html import escape

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222;
       padding: 0 16px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; font-size: 0.9em; margin: 8px 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.big { font-size: 2em; font-weight: 600; }
.note { color: #666; font-size: 0.9em; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.tile { text-align: center; font-size: 0.75em; width: 96px; }
.tile img { width: 88px; height: 88px; image-rendering: pixelated; border: 1px solid #ccc; }
img.figure { max-width: 100%; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes, alt: str, cls: str = "", width: int | None = None) -> str:
    """An <img> holding the PNG itself; width: shown this many CSS pixels wide (pixelated)."""
    klass = f' class="{cls}"' if cls else ""
    size = (f' style="width: {width}px; image-rendering: pixelated"' if width is not None
            else "")
    return f'<img{klass}{size} alt="{escape(alt)}" src="{data_uri(png)}">'


def tile(png: bytes, caption_lines: list[str], alt: str) -> str:
    """One small image with lines of caption under it."""
    caption = "<br>".join(escape(line) for line in caption_lines)
    return f'<div class="tile">{img(png, alt)}<div>{caption}</div></div>'


def gallery(tiles: list[str]) -> str:
    return f'<div class="gallery">{"".join(tiles)}</div>'


def table(header: list[str], rows: list[list], cls: str = "") -> str:
    """A table of text cells (escaped); floats with 4 digits after the point."""
    def cell(v) -> str:
        return escape(f"{v:.4f}" if isinstance(v, float) else str(v))

    klass = f' class="{cls}"' if cls else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table{klass}><tr>{head}</tr>{body}</table>"


def page(title: str, sections: list[str]) -> str:
    """The whole document."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")
