from __future__ import annotations

import hashlib
import io
import zipfile

from PIL import Image

from core.media import MAX_BYTES, inspect, preview, sniff

GPS_IFD = 0x8825


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
