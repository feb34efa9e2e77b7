from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.media import MAX_BYTES, inspect, preview, sniff

GPS_IFD = 0x8825
ROOT = Path(__file__).resolve().parents[2]


def exif_block(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A big-endian EXIF block with one IFD of (tag, type, count, value) entries."""
    ifd = struct.pack(">H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack(">HHI", tag, kind, count) + value.ljust(4, b"\0")
    return b"Exif\x00\x00MM\x00*" + struct.pack(">I", 8) + ifd + b"\0\0\0\0"


# A phone held upright (Orientation 6) plus a tag stored with another type than Pillow expects
# (Threshholding as ASCII): exif_transpose writes the EXIF back and raises struct.error.
MISTYPED_EXIF = exif_block([(0x0107, 2, 2, b"X\0"), (0x0112, 3, 1, struct.pack(">H", 6))])
# A damaged TIFF header ("MMB*"): reading the EXIF raises SyntaxError.
BROKEN_EXIF = b"Exif\x00\x00MMB*\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00"


def image_with_exif(exif: bytes, image_format: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (9, 9, 9)).save(out, image_format, exif=exif)
    return out.getvalue()


def jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "CANARY-CAMERA-MAKER"  # Make
    exif[0x0131] = "CANARY-SOFTWARE"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 18.0)})
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">CANARY-XMP</x:xmpmeta>'
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes(), xmp=xmp, comment=b"CANARY-COMMENT")
    return out.getvalue()


def test_it_strips_gps_exif_and_xmp_from_the_preview() -> None:
    original = jpeg_with_gps()
    assert b"CANARY-CAMERA-MAKER" in original and b"CANARY-XMP" in original  # the fixture is real
    with Image.open(io.BytesIO(original)) as im:
        assert im.getexif().get_ifd(GPS_IFD)
    clean = preview(original)
    assert clean is not None
    for canary in (b"CANARY-CAMERA-MAKER", b"CANARY-SOFTWARE", b"CANARY-XMP", b"CANARY-COMMENT"):
        assert canary not in clean
    with Image.open(io.BytesIO(clean)) as im:
        assert im.format == "JPEG" and im.size == (64, 48)
        assert not im.getexif()
        assert "xmp" not in im.info and "exif" not in im.info


def test_it_hashes_the_original_as_received() -> None:
    original = jpeg_with_gps()
    evidence = inspect(original)
    assert evidence.sha256 == hashlib.sha256(original).hexdigest()
    assert (evidence.size, evidence.content_type) == (len(original), "image/jpeg")
    assert evidence.preview is not None


def test_it_refuses_a_pixel_bomb_without_decoding_it() -> None:
    out = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(out, "PNG")  # 400 Mpx in a few kB
    bomb = out.getvalue()
    assert len(bomb) < 200_000
    assert preview(bomb) is None
    assert inspect(bomb).preview is None


def test_it_sniffs_instead_of_trusting_names() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("evil.txt", "x")
    renamed_zip = archive.getvalue()  # arrives as "photo.jpg"
    assert sniff(renamed_zip) == "application/zip"
    assert preview(renamed_zip) is None
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    assert sniff(svg) == "application/octet-stream"
    assert preview(svg) is None
    assert sniff(b"%PDF-1.7 ...") == "application/pdf"
    polyglot = jpeg_with_gps() + b"<html><script>alert(1)</script></html>"
    clean = preview(polyglot)
    assert clean is not None and b"<script>" not in clean


def test_it_refuses_oversized_files() -> None:
    assert preview(b"\xff\xd8" + bytes(MAX_BYTES)) is None


@pytest.mark.parametrize(
    ("exif", "image_format"),
    [
        (MISTYPED_EXIF, "JPEG"),
        (MISTYPED_EXIF, "PNG"),
        (MISTYPED_EXIF, "WEBP"),
        (BROKEN_EXIF, "WEBP"),
    ],
    ids=["mistyped-jpeg", "mistyped-png", "mistyped-webp", "broken-header-webp"],
)
def test_odd_exif_means_no_preview_at_worst_never_an_error(exif: bytes, image_format: str) -> None:
    data = image_with_exif(exif, image_format)
    clean = preview(data)
    assert clean is None or clean.startswith(b"\xff\xd8")
    evidence = inspect(data)
    assert evidence.sha256 == hashlib.sha256(data).hexdigest()


def test_a_tiny_file_cannot_cost_hundreds_of_megabytes() -> None:
    """1.6 kB of lossless WebP declaring 6324x6324 px (under MAX_PIXELS) was decoded whole:
    ~640 MB and a second of CPU. Measured in a fresh process, where the peak is preview's."""
    out = io.BytesIO()
    Image.new("RGBA", (6324, 6324)).save(out, "WEBP", lossless=True)
    tiny = out.getvalue()
    assert len(tiny) < 4096
    child = (
        "import resource, sys\n"
        "from core.media import preview\n"
        "data = sys.stdin.buffer.read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "made = preview(data)\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(made is None, grown // 1024)\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", child], input=tiny, capture_output=True, check=True, cwd=ROOT
    ).stdout.split()
    assert answer[0] == b"True"
    assert int(answer[1]) < 100, f"preview() grew by {int(answer[1])} MB for {len(tiny)} bytes"


def test_what_is_really_decoded_is_bounded_not_only_what_is_declared() -> None:
    # Formats decoded whole: up to MAX_DECODED_PIXELS.
    for width, height, made in ((4000, 4000, True), (4000, 4001, False)):
        out = io.BytesIO()
        Image.new("1", (width, height)).save(out, "PNG")
        assert (preview(out.getvalue()) is not None) is made, (width, height)
    # A JPEG decodes at a reduced size when both sides allow it (here to 3650x2738)...
    out = io.BytesIO()
    Image.new("RGB", (7300, 5475)).save(out, "JPEG", quality=10)
    assert preview(out.getvalue()) is not None
    # ...but a panorama cannot be reduced below 1600 px high: decoded whole, so refused.
    out = io.BytesIO()
    Image.new("RGB", (26_000, 800)).save(out, "JPEG", quality=10)
    assert preview(out.getvalue()) is None


def test_a_multi_picture_jpeg_is_a_jpeg_with_a_preview_of_its_first_picture() -> None:
    """Pillow opens an Ultra HDR photo as "MPO": it was sniffed as application/octet-stream
    and had no preview, so the desk could only open the original, GPS and all."""
    exif = Image.open(io.BytesIO(jpeg_with_gps())).getexif().tobytes()
    photo, gain_map = Image.new("RGB", (64, 48), (200, 0, 0)), Image.new("RGB", (32, 24))
    out = io.BytesIO()
    photo.save(out, "MPO", save_all=True, append_images=[gain_map], exif=exif)
    found = inspect(out.getvalue())
    assert found.content_type == "image/jpeg" and found.preview is not None
    assert b"CANARY-CAMERA-MAKER" in out.getvalue()
    assert b"CANARY-CAMERA-MAKER" not in found.preview
    with Image.open(io.BytesIO(found.preview)) as im:
        assert im.format == "JPEG" and im.size == (64, 48) and not im.getexif()
        assert im.getpixel((10, 10))[0] > 150  # the photo, not the gain map


@pytest.mark.parametrize("image_format", ["PNG", "WEBP", "GIF", "JPEG"])
def test_every_allowed_format_gets_a_preview(image_format: str) -> None:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 120, 0)).save(out, image_format)
    assert preview(out.getvalue()) is not None
