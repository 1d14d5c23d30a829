"""The emulator's eyes: decode data-URL images and read the simple pictures the vision suite draws.

It really looks at the pixels (so a suite that sends the wrong image, or a fault that drops it, is
seen): the colour is the palette colour nearest to the mean of the non-white pixels; the shape comes
from how much of its bounding box the figure fills (square ~1, circle ~0.79, triangle ~0.5); a digit
is matched against the ten digits drawn with Pillow's default font.
"""

from __future__ import annotations

import base64
import binascii
import io
from functools import lru_cache

from PIL import Image, ImageColor, ImageDraw, ImageFont

PALETTE = ("red", "green", "blue", "yellow", "orange", "purple", "black", "gray", "cyan", "magenta", "brown")
_BACKGROUND_DISTANCE = 60  # a pixel this far from white belongs to the figure
_GLYPH = (20, 28)


class ImageError(ValueError):
    """An image the emulator cannot read (not a data URL, not base64, not an image)."""


def decode_data_url(url: str) -> bytes:
    if not url.startswith("data:") or "," not in url:
        raise ImageError("the emulator reads only data URLs (data:image/png;base64,...); it has no network")
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise ImageError("image data URL must be base64-encoded")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"invalid base64 in image data URL: {exc}") from None
    try:
        Image.open(io.BytesIO(data)).verify()
    except Exception as exc:  # Pillow raises many types for a broken file
        raise ImageError(f"cannot identify image file: {exc}") from None
    return data


def _figure_mask(image: Image.Image) -> tuple[Image.Image, list[tuple[int, int, int]]]:
    rgb = image.convert("RGB")
    raw = rgb.tobytes()
    bits = bytearray(rgb.width * rgb.height)
    figure = []
    for i in range(len(bits)):
        r, g, b = raw[3 * i], raw[3 * i + 1], raw[3 * i + 2]
        if 765 - r - g - b > _BACKGROUND_DISTANCE:
            figure.append((r, g, b))
            bits[i] = 255
    return Image.frombytes("L", rgb.size, bytes(bits)), figure


def colour_of(data: bytes) -> str:
    _, figure = _figure_mask(Image.open(io.BytesIO(data)))
    if not figure:
        return "white"
    mean = tuple(sum(p[i] for p in figure) / len(figure) for i in range(3))

    def distance(name: str) -> float:
        ref = ImageColor.getrgb(name)
        return sum((a - b) ** 2 for a, b in zip(mean, ref, strict=False))
    return min(PALETTE, key=distance)


def shape_of(data: bytes) -> str:
    mask, figure = _figure_mask(Image.open(io.BytesIO(data)))
    box = mask.getbbox()
    if not box:
        return "nothing"
    area = (box[2] - box[0]) * (box[3] - box[1])
    fill = len(figure) / area
    if fill > 0.9:
        return "square" if abs((box[2] - box[0]) - (box[3] - box[1])) <= 2 else "rectangle"
    if fill > 0.65:
        return "circle"
    return "triangle"


def _glyph(mask: Image.Image) -> list[int]:
    box = mask.getbbox()
    if not box:
        return [0] * (_GLYPH[0] * _GLYPH[1])
    return [1 if v > 127 else 0 for v in mask.crop(box).resize(_GLYPH).tobytes()]


@lru_cache(maxsize=1)
def _digit_templates() -> dict[str, list[int]]:
    font = ImageFont.load_default(size=96)
    templates = {}
    for digit in "0123456789":
        canvas = Image.new("L", (128, 128), 0)
        ImageDraw.Draw(canvas).text((16, 8), digit, fill=255, font=font)
        templates[digit] = _glyph(canvas)
    return templates


def digit_of(data: bytes) -> str:
    mask, _ = _figure_mask(Image.open(io.BytesIO(data)))
    glyph = _glyph(mask)
    return max(_digit_templates().items(), key=lambda kv: sum(a == b for a, b in zip(glyph, kv[1], strict=False)))[0]


def describe(data: bytes, question: str) -> str:
    """One word about one image, chosen by what the question asks (colour, digit, shape; else colour)."""
    q = question.lower()
    if "colour" in q or "color" in q:
        return colour_of(data)
    if "digit" in q or "number" in q:
        return digit_of(data)
    if "shape" in q:
        return shape_of(data)
    return colour_of(data)
