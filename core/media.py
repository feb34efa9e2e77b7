"""Evidence files: hashed on receipt, type sniffed, and an image preview stripped of metadata.

The original is only ever kept sealed (by the caller); what this module returns for previews
is a re-encoded copy of the pixels alone: no EXIF (GPS, device), no XMP or IPTC, no embedded
thumbnail of an uncropped original (SECURITY.md R16). Decoding is limited to an allowlist of
formats and a pixel budget, so a decompression bomb is refused before it is decoded.

A preview is a convenience for the desk; the original is the evidence. Whatever a decoder or
Pillow's EXIF code raises (struct.error, SyntaxError, TypeError on odd tags…) means no preview,
never a lost file.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

MAX_BYTES = 20 * 1024 * 1024  # Telegram's getFile limit, applied to every channel
MAX_PIXELS = 40_000_000
PREVIEW_EDGE = 1600
IMAGE_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF"})
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
_SIGNATURES = (
    (b"%PDF-", "application/pdf"),
    (b"OggS", "audio/ogg"),
    (b"PK\x03\x04", "application/zip"),
)


@dataclass(frozen=True)
class Evidence:
    sha256: str  # of the original as received
    size: int
    content_type: str  # sniffed from the bytes, not taken from the sender
    preview: bytes | None  # metadata-free JPEG for images, else None


def sniff(data: bytes) -> str:
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return content_type
    image_format = _image_format(data)
    return _MIME[image_format] if image_format else "application/octet-stream"


def _image_format(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            return im.format if im.format in IMAGE_FORMATS else None
    except Exception:  # any header Pillow cannot read is not an image we take
        return None


def preview(data: bytes) -> bytes | None:
    """A metadata-free JPEG of the image, or None if it is not an allowed, sane image."""
    if len(data) > MAX_BYTES:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=sorted(IMAGE_FORMATS)) as im:
                width, height = im.size
                if width * height > MAX_PIXELS:
                    return None
                im.draft("RGB", (PREVIEW_EDGE, PREVIEW_EDGE))  # JPEG: decode at lower size
                upright = ImageOps.exif_transpose(im).convert("RGB")
            upright.thumbnail((PREVIEW_EDGE, PREVIEW_EDGE))
            # A new image from the pixels alone carries no info dict: nothing of the
            # original's EXIF, XMP, IPTC, ICC profile or embedded thumbnail survives.
            clean = Image.frombytes("RGB", upright.size, upright.tobytes())
            out = io.BytesIO()
            clean.save(out, "JPEG", quality=85, optimize=True)
    except Exception:  # no preview; the caller still seals the original
        return None
    return out.getvalue()


def inspect(data: bytes) -> Evidence:
    content_type = sniff(data)
    is_image = content_type.startswith("image/")
    return Evidence(
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        content_type=content_type,
        preview=preview(data) if is_image else None,
    )
