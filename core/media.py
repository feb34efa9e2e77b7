"""Evidence files: hashed on receipt, type sniffed, and an image preview stripped of metadata.

The original is only ever kept sealed (by the caller); what this module returns for previews
is a re-encoded copy of the pixels alone: no EXIF (GPS, device), no XMP or IPTC, no embedded
thumbnail of an uncropped original (SECURITY.md R16). Decoding is limited to an allowlist of
formats and two pixel budgets, so a decompression bomb is refused before it is decoded: one on
the size the file declares, one on what would really be decoded. Only JPEG decodes at a reduced
size (``draft``); a lossless WebP, PNG or GIF is decoded whole, and 1.6 kB of WebP can declare
40 Mpx (640 MB, a second of CPU), so what is really decoded stops at 16 Mpx (about 140 MB).

A preview is a convenience for the desk; the original is the evidence. Whatever a decoder or
Pillow's EXIF code raises (struct.error, SyntaxError, TypeError on odd tags…) means no preview,
never a lost file. ``examine`` runs all this off the event loop, two files at a time at most.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image, ImageOps

MAX_BYTES = 20 * 1024 * 1024  # Telegram's getFile limit, applied to every channel
MAX_PIXELS = 40_000_000  # declared in the header, checked before anything is decoded
# Really decoded: 16 Mpx RGBA peaks at about 140 MB. Enough for a phone photo JPEG cannot
# reduce for a 1600 px preview (a short side under 3,200 px: 4032x3024, 5120x2880).
MAX_DECODED_PIXELS = 16_000_000
PREVIEW_EDGE = 1600
# "MPO": a JPEG followed by more pictures (Ultra HDR's gain map, on Pixel and Samsung phones).
# The first picture is the photo, and is what is decoded: it is a JPEG like any other.
IMAGE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF"})
# The openers Pillow may try: it has none named MPO (its JPEG opener returns those), and naming
# one it lacks raises for every file tried before the right opener is reached.
_OPENERS = sorted(IMAGE_FORMATS - {"MPO"})
_MIME = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
# Decoding costs up to a few hundred ms of CPU and ~140 MB: never on the event loop, and no
# more than two at once, so a burst of photos from several people cannot add up.
_DECODER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="amparo-media")
# Pillow warns of a bomb (over 89 Mpx declared) before it refuses one (179 Mpx): an error here.
# Set once for the process, as warnings.catch_warnings is not safe in threads (and only this
# module decodes images).
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
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
        with Image.open(io.BytesIO(data), formats=_OPENERS) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                return None
            im.draft("RGB", (PREVIEW_EDGE, PREVIEW_EDGE))  # JPEG: decode at lower size
            width, height = im.size  # what will be decoded (smaller only for JPEG)
            if width * height > MAX_DECODED_PIXELS:
                return None
            upright = ImageOps.exif_transpose(im).convert("RGB")
        upright.thumbnail((PREVIEW_EDGE, PREVIEW_EDGE))
        # A new image from the pixels alone carries no info dict: nothing of the original's
        # EXIF, XMP, IPTC, ICC profile or embedded thumbnail survives.
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


async def examine(data: bytes) -> Evidence:
    """``inspect`` in the decoder's threads: the event loop keeps serving panics meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(_DECODER, inspect, data)
