"""Image and attachment token estimates (pure; no IO, no image libraries).

Images are not text, so their cost comes from the providers' published size rules, not from a
tokenizer. The size is known only for inline (base64) images, read from the file header; URL
images get a stated default. Every value returned here is at most ``MAX_MEDIA_TOKENS``, which
``tokens.may_exceed`` relies on.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct

# OpenAI tile rule (gpt-4o family, "Calculating costs" in the vision guide).
OPENAI_LOW_DETAIL_TOKENS = 85
OPENAI_TILE_TOKENS = 170
OPENAI_BASE_TOKENS = 85
# Unknown size, detail high/auto: a square image costs 4 tiles (765). The rule's maximum is 1445
# (a 2048x768 image: 4x2 tiles).
OPENAI_IMAGE_DEFAULT_TOKENS = 765
# Anthropic: tokens ~= width * height / 750 after the image is scaled to a long edge of at most
# 1568 px and about 1.15 megapixels; the vision guide lists ~1600 as the ceiling.
ANTHROPIC_IMAGE_MAX_TOKENS = 1600
# Files/documents (PDF) are not parsed: each page costs text + a page image, and the page count
# is not readable cheaply. One default per attachment; a real multi-page PDF costs more.
DOCUMENT_DEFAULT_TOKENS = 1600
MAX_MEDIA_TOKENS = max(1445, ANTHROPIC_IMAGE_MAX_TOKENS, DOCUMENT_DEFAULT_TOKENS)

_HEADER_B64_CHARS = 1 << 16  # enough for a JPEG's SOF marker after typical EXIF/ICC segments


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, GIF, WebP or JPEG header; None when not recognised."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the marker segments up to the first start-of-frame (SOF0..SOF15, not DHT/JPG/DAC)."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers have no length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        i += 2 + length
    return None


def base64_image_size(b64: str) -> tuple[int, int] | None:
    """Size of a base64 image, decoding only a bounded prefix (cheap for multi-MB images)."""
    head = b64[:_HEADER_B64_CHARS].strip()
    head = head[: len(head) - len(head) % 4]
    try:
        return image_size(base64.b64decode(head, validate=False))
    except (binascii.Error, ValueError, struct.error):
        return None


def data_url_image_size(url: str) -> tuple[int, int] | None:
    """Size of a ``data:image/...;base64,`` URL image; None for remote URLs."""
    if not url.startswith("data:"):
        return None
    _, sep, payload = url.partition(",")
    return base64_image_size(payload) if sep else None


def openai_image_tokens(detail: str | None, size: tuple[int, int] | None) -> int:
    """OpenAI tile rule; "auto" is treated as "high" (the larger of the two)."""
    if detail == "low":
        return OPENAI_LOW_DETAIL_TOKENS
    if size is None or min(size) <= 0:
        return OPENAI_IMAGE_DEFAULT_TOKENS
    width, height = float(size[0]), float(size[1])
    if max(width, height) > 2048:
        scale = 2048 / max(width, height)
        width, height = width * scale, height * scale
    if min(width, height) > 768:
        scale = 768 / min(width, height)
        width, height = width * scale, height * scale
    tiles = math.ceil(width / 512) * math.ceil(height / 512)
    return OPENAI_TILE_TOKENS * tiles + OPENAI_BASE_TOKENS


def anthropic_image_tokens(size: tuple[int, int] | None) -> int:
    """Anthropic's width*height/750 after downscaling, capped at the documented ceiling."""
    if size is None or min(size) <= 0:
        return ANTHROPIC_IMAGE_MAX_TOKENS
    width, height = float(size[0]), float(size[1])
    if max(width, height) > 1568:
        scale = 1568 / max(width, height)
        width, height = width * scale, height * scale
    return min(ANTHROPIC_IMAGE_MAX_TOKENS, math.ceil(width * height / 750))
