"""Image preview in a terminal with half-block characters."""

from __future__ import annotations

from PIL import Image
from rich.color import Color
from rich.style import Style
from rich.text import Text

__all__ = ["render_halfblocks"]

UPPER_HALF_BLOCK = "\u2580"


def render_halfblocks(image: Image.Image, *, width: int = 48) -> Text:
    """`image` as rich Text, two pixels per cell: "▀" with fg = upper pixel, bg = lower pixel.

    Terminal cells are about twice as tall as wide, so each cell shows a square pair of pixels.
    Colours are truecolor; rich downgrades them on terminals with fewer colours.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image, got {type(image).__name__}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    rgb = _flatten(image)
    height = max(2, round(width * rgb.height / rgb.width))
    height += height % 2
    pixels = rgb.resize((width, height), Image.BILINEAR).load()
    text = Text(no_wrap=True, overflow="crop")
    styles: dict[tuple, Style] = {}
    for y in range(0, height, 2):
        for x in range(width):
            pair = (pixels[x, y], pixels[x, y + 1])
            style = styles.get(pair)
            if style is None:
                style = Style(color=Color.from_rgb(*pair[0]), bgcolor=Color.from_rgb(*pair[1]))
                styles[pair] = style
            text.append(UPPER_HALF_BLOCK, style)
        if y + 2 < height:
            text.append("\n")
    return text


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
