"""Image/mask reading in every mode we meet in the wild, failure reporting, and atomic writers."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from c2f.data.io import (
    ImageReadError,
    decode_image,
    image_shape,
    read_image,
    read_mask,
    remove_stale_temporaries,
    voc_palette,
    write_label_png,
    write_mask_png,
    write_rgb,
    write_rgba,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 17, 3), dtype=np.uint8)


def _save(path: Path, image: Image.Image, **options: object) -> Path:
    image.save(path, **options)
    return path


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_rgb_png_reads_exactly(tmp_path: Path) -> None:
    path = _save(tmp_path / "a.png", Image.fromarray(RGB))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (12, 17, 3)
    assert out.flags.writeable and read_mask(path).flags.writeable  # callers modify in place
    np.testing.assert_array_equal(out, RGB)


def test_gray_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = RGB[:, :, 0]
    out = read_image(_save(tmp_path / "g.png", Image.fromarray(gray)))
    assert out.shape == (12, 17, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[:, :, channel], gray)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_dropped_not_composited(tmp_path: Path, mode: str) -> None:
    rgba = np.dstack(
        [RGB, np.zeros((12, 17), np.uint8)]
    )  # fully transparent: compositing would change it
    image = Image.fromarray(rgba).convert(mode)
    expected = np.asarray(image.convert("RGB"))
    out = read_image(_save(tmp_path / "t.png", image))
    np.testing.assert_array_equal(out, expected)


def test_16bit_png_is_scaled_by_8_bits(tmp_path: Path) -> None:
    deep = (np.arange(12 * 17, dtype=np.uint16).reshape(12, 17) * 300).astype(np.uint16)
    path = _save(tmp_path / "d.png", Image.fromarray(deep))
    assert Image.open(path).mode.startswith("I")
    out = read_image(path)
    np.testing.assert_array_equal(out[:, :, 1], (deep >> 8).astype(np.uint8))


def test_palette_png_reads_colours_and_mask_reads_indices(tmp_path: Path) -> None:
    indices = (np.arange(12 * 17).reshape(12, 17) % 5).astype(np.uint8)
    indices[0, 0] = 255
    path = write_label_png(tmp_path / "p.png", indices)
    np.testing.assert_array_equal(read_image(path), voc_palette()[indices])
    np.testing.assert_array_equal(read_mask(path), indices)


def test_cmyk_is_converted(tmp_path: Path) -> None:
    path = _save(tmp_path / "c.tif", Image.new("CMYK", (5, 4), (0, 255, 255, 0)))
    out = read_image(path)
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((20, 30, 3), np.uint8)
    stored[:8] = (255, 0, 0)  # red top band
    stored[8:] = (0, 0, 255)
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(tmp_path / "o.jpg", Image.fromarray(stored), exif=exif, quality=95)
    out = read_image(path)
    assert out.shape == (30, 20, 3)
    assert image_shape(path) == (30, 20)
    expected = np.rot90(stored, k=-1)  # the top band ends up on the right
    assert np.abs(out.astype(int) - expected).mean() < 8
    assert out[15, -2, 0] > 200 and out[15, 2, 2] > 200


def _truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


@pytest.mark.parametrize(
    ("make", "reason_part"),
    [
        (lambda p: _truncated_jpeg(p), "truncated"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("this is not an image\n"), "not a recognised image"),
        (lambda p: None, "no such file"),
    ],
    ids=["truncated", "empty", "text", "missing"],
)
def test_unreadable_files_raise_with_path(tmp_path: Path, make, reason_part: str) -> None:
    path = tmp_path / "broken.jpg"
    make(path)
    for reader in (read_image, read_mask):
        with pytest.raises(ImageReadError) as info:
            reader(path)
        assert info.value.path == str(path)
        assert str(path) in str(info.value) and reason_part in str(info.value)
        assert isinstance(info.value, ValueError)


def test_decompression_bomb_guard(tmp_path: Path) -> None:
    path = _save(tmp_path / "big.png", Image.fromarray(RGB))
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        read_image(path, max_pixels=100)
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        decode_image(path.read_bytes(), max_pixels=100)


def test_decode_image_bytes(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(RGB).save(buffer, format="PNG")
    np.testing.assert_array_equal(decode_image(buffer.getvalue()), RGB)
    with pytest.raises(ImageReadError, match="cannot read image 'photo.jpg'") as info:
        decode_image(b"\x00\x01garbage" * 10, name="photo.jpg")
    assert info.value.path == "photo.jpg"
    with pytest.raises(ImageReadError, match="empty"):
        decode_image(b"")


def test_read_mask_variants(tmp_path: Path) -> None:
    gray = (RGB[:, :, 0] > 127).astype(np.uint8) * 255
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "l.png", Image.fromarray(gray))), gray)
    as_rgb = np.dstack([gray] * 3)
    np.testing.assert_array_equal(
        read_mask(_save(tmp_path / "rgb.png", Image.fromarray(as_rgb))), gray
    )
    colour = read_mask(_save(tmp_path / "colour.png", Image.fromarray(RGB)))
    np.testing.assert_array_equal(colour, np.asarray(Image.fromarray(RGB).convert("L")))
    ids16 = (np.arange(12 * 17).reshape(12, 17) % 7).astype(np.uint16)
    np.testing.assert_array_equal(
        read_mask(_save(tmp_path / "i16.png", Image.fromarray(ids16))), ids16
    )


def test_voc_palette_known_colours() -> None:
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[13].tolist() == [192, 0, 128]  # horse
    assert palette[15].tolist() == [192, 128, 128]  # person
    assert palette[255].tolist() == [224, 224, 192]
    assert len({tuple(colour) for colour in palette}) == 256


def test_label_png_round_trip_keeps_indices_and_palette(tmp_path: Path) -> None:
    label = RNG.integers(0, 21, (9, 11), dtype=np.uint8)
    label[2:4, 3:5] = 255
    path = write_label_png(tmp_path / "deep" / "dir" / "label.png", label)
    with Image.open(path) as image:
        assert image.mode == "P"
        stored = np.array(image.getpalette()[: 256 * 3], np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(stored, voc_palette())
    np.testing.assert_array_equal(read_mask(path), label)
    custom = np.array([[0, 0, 0], [10, 20, 30]], np.uint8)
    path = write_label_png(tmp_path / "custom.png", (label % 2).astype(np.uint8), palette=custom)
    with Image.open(path) as image:
        assert image.getpalette()[3:6] == [10, 20, 30]


def test_mask_png_is_single_channel_0_255(tmp_path: Path) -> None:
    as_bool = RGB[:, :, 0] > 100
    for mask in (as_bool, as_bool.astype(np.uint8)):
        path = write_mask_png(tmp_path / "m.png", mask)
        with Image.open(path) as image:
            assert image.mode == "L"
        np.testing.assert_array_equal(read_mask(path), np.where(as_bool, 255, 0))


def test_rgb_and_rgba_writers(tmp_path: Path) -> None:
    np.testing.assert_array_equal(read_image(write_rgb(tmp_path / "x.png", RGB)), RGB)
    smooth = np.full((16, 16, 3), (40, 120, 200), np.uint8)
    assert np.abs(read_image(write_rgb(tmp_path / "x.jpg", smooth)).astype(int) - smooth).max() <= 3
    rgba = np.dstack([RGB, RGB[:, :, 0]])
    with Image.open(write_rgba(tmp_path / "cut.png", rgba)) as image:
        assert image.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(image), rgba)
    with pytest.raises(ValueError, match="alpha"):
        write_rgba(tmp_path / "cut.jpg", rgba)
    with pytest.raises(ValueError, match="uint8"):
        write_rgb(tmp_path / "f.png", RGB.astype(np.float32))
    with pytest.raises(ValueError, match="extension"):
        write_rgb(tmp_path / "noext", RGB)
    assert _leftovers(tmp_path) == []


def test_failed_write_leaves_no_temp_and_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    target = write_rgb(tmp_path / "keep.png", RGB)
    before = target.read_bytes()

    def crash(self, handle, *args, **kwargs):  # a partial write, then the process "dies"
        handle.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        write_rgb(target, RGB[::-1])
    with pytest.raises(OSError, match="disk full"):
        write_mask_png(tmp_path / "new.png", RGB[:, :, 0] > 0)
    assert target.read_bytes() == before
    assert not (tmp_path / "new.png").exists()
    assert _leftovers(tmp_path) == []


def test_temporary_file_of_a_killed_write_is_what_the_next_run_removes(tmp_path: Path) -> None:
    """A process killed mid-write (no cleanup runs) leaves its temporary file; only such files go."""
    code = textwrap.dedent("""
        import os, sys
        import numpy as np
        from PIL import Image
        from c2f.data.io import write_rgb

        def killed(self, handle, *args, **kwargs):
            handle.write(b"half a PNG")
            handle.flush()
            os._exit(9)

        Image.Image.save = killed
        write_rgb(sys.argv[1], np.zeros((4, 4, 3), np.uint8))
    """)
    target = tmp_path / "sub" / "x.png"
    assert subprocess.run([sys.executable, "-c", code, str(target)]).returncode == 9
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(left) == 1 and left[0].name.startswith(".x.png.") and not target.exists()
    mine = [tmp_path / "sub" / ".mine.tmp", tmp_path / ".x.png.notahexnumber0000000000000000000.tmp"]
    for path in mine:
        path.write_text("the user's")
    assert remove_stale_temporaries(tmp_path) == left
    assert not left[0].exists() and all(path.exists() for path in mine)
