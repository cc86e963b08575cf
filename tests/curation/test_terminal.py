from __future__ import annotations

import io

import pytest
from PIL import Image
from rich.console import Console

from curation import render_halfblocks


def test_halfblocks_colours_upper_and_lower_pixels():
    img = Image.new("RGB", (4, 2), (255, 0, 0))
    img.paste((0, 0, 255), (0, 1, 4, 2))  # lower pixel row blue
    text = render_halfblocks(img, width=4)

    assert text.plain == "▀▀▀▀"
    spans = {(s.style.color.get_truecolor(), s.style.bgcolor.get_truecolor()) for s in text.spans}
    ((fg, bg),) = spans
    assert tuple(fg) == (255, 0, 0) and tuple(bg) == (0, 0, 255)


def test_halfblocks_size_follows_aspect_ratio_and_renders():
    img = Image.new("RGBA", (100, 50), (10, 200, 30, 255))
    text = render_halfblocks(img, width=20)
    lines = text.plain.split("\n")
    assert len(lines) == 5 and all(len(line) == 20 for line in lines)
    out = io.StringIO()
    Console(file=out, color_system="truecolor", width=80).print(text)
    assert "\x1b[38;2;10;200;30" in out.getvalue()


def test_halfblocks_rejects_bad_input():
    with pytest.raises(TypeError):
        render_halfblocks(b"not an image")
    with pytest.raises(ValueError, match="width"):
        render_halfblocks(Image.new("RGB", (2, 2)), width=0)
