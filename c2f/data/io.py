"""Robust image and mask IO shared by training, batch segmentation and the HTTP service.

Every reader returns plain numpy arrays in one canonical form (HxWx3 uint8 RGB for images, HxW uint8
for masks) so that downstream code never has to care about PNG modes, EXIF orientation or bit depth,
and every failure is reported as :class:`ImageReadError` carrying the offending path: a corrupt file
in a folder of thousands must be reportable and skippable, never an anonymous crash.

Every writer goes through one atomic helper (write to a temporary file in the target folder, then
``os.replace``) so that a process killed mid-write never leaves a half-written image behind, which a
later run would otherwise mistake for a finished result.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

# The one list of readable image types, shared by batch segmentation, data sets and HTTP uploads:
# Pillow format name -> the file extensions that name it. Files are picked by extension, and every
# reader checks the decoded format too, so a ``.jpg`` that is really a PPM is refused everywhere
# alike. Multi-frame files (animated GIF and WebP, multi-page TIFF) are read as their first frame.
# MPO is how Pillow names a camera JPEG that carries extra frames; it is a JPEG to the user.
IMAGE_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg"),
    "MPO": (),
    "PNG": (".png",),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
    "WEBP": (".webp",),
    "GIF": (".gif",),
}
IMAGE_EXTENSIONS: frozenset[str] = frozenset(ext for exts in IMAGE_FORMATS.values() for ext in exts)
SUPPORTED_TYPES = "JPEG, PNG, BMP, TIFF, WebP, GIF (first frame)"
"""The readable types in words, for error messages."""

# What _save_atomic names its temporary files: ``.<target name>.<32 hex digits>.tmp``.
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")

# 80 megapixels: far above any photograph we segment, far below what exhausts memory when decoded.
# Pillow refuses above 2 * Image.MAX_IMAGE_PIXELS (~179 MP) by itself; a larger max_pixels needs
# that raised as well.
DEFAULT_MAX_PIXELS = 80_000_000

_EXIF_ORIENTATION_TAG = 274
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # transposes/rotations by 90 or 270 degrees
_JPEG_QUALITY = 95


class ImageReadError(ValueError):
    """An image or mask could not be read; ``path`` names it (file path or upload name)."""

    def __init__(self, path: str | os.PathLike[str] | None, reason: str) -> None:
        self.path: str | None = None if path is None else os.fspath(path)
        self.reason = reason
        where = "" if self.path is None else f" {self.path!r}"
        super().__init__(f"cannot read image{where}: {reason}")


def _decode(
    source: str | os.PathLike[str] | BinaryIO,
    label: str | None,
    max_pixels: int,
    to_array: Callable[[Image.Image], np.ndarray],
) -> np.ndarray:
    """Open, size-check, fully decode, EXIF-orient and convert an image; failures -> ImageReadError.

    The pixel-count check runs on the header, before decoding, which is what makes it a defence
    against decompression bombs. ``load()`` forces the full decode so that truncated files fail here
    and not later in the middle of a training step.
    """
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check replaces Pillow's global bomb warning; palette-transparency
            # warnings are irrelevant because alpha is dropped anyway.
            warnings.simplefilter("ignore")
            with Image.open(source) as img:
                if img.format not in IMAGE_FORMATS:
                    raise ImageReadError(
                        label, f"{img.format} is not a supported image type; supported: {SUPPORTED_TYPES}"
                    )
                width, height = img.size
                if width <= 0 or height <= 0:
                    raise ImageReadError(label, f"zero-size image ({width}x{height})")
                if width * height > max_pixels:
                    raise ImageReadError(
                        label, f"{width}x{height} pixels exceeds the limit of {max_pixels} pixels"
                    )
                img.load()
                ImageOps.exif_transpose(img, in_place=True)
                return to_array(img)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(label, "no such file") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(label, "not a recognised image format") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as exc:
        raise ImageReadError(label, str(exc) or type(exc).__name__) from exc


def _scale_high_depth(arr: np.ndarray) -> np.ndarray:
    """Map 16/32-bit integer or float pixels to uint8.

    Integer data is assumed to use the 16-bit range (what 16-bit PNG/TIFF store) and is shifted by
    8 bits: a fixed mapping keeps brightness comparable across images, unlike per-image max scaling.
    Float data in [0, 1] is scaled by 255, otherwise clipped to [0, 255].
    """
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.clip(arr.astype(np.int64) >> 8, 0, 255).astype(np.uint8)


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to HxWx3 uint8 RGB; alpha is dropped, not composited.

    Dropping alpha keeps the colours the photographer stored; compositing on a fixed colour would
    invent a background the segmentation model then has to learn to ignore.
    """
    if img.mode in ("I", "F") or img.mode.startswith("I;"):
        gray = _scale_high_depth(np.asarray(img))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)  # a writable copy: Pillow's buffer view is read-only


def file_identity(path: str | os.PathLike[str]) -> list[int] | None:
    """(size, mtime) of a file, or None when it is missing: the cheap change detector of every cache."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """BLAKE2b-128 of a file's bytes (hex), or None when it cannot be read.

    The content check behind :func:`file_identity`: a copied, restored or touched file has a new
    mtime but the same digest, so a cache keyed on both can still be reused.
    """
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def read_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read any supported image file as HxWx3 uint8 RGB, EXIF orientation applied.

    Raises:
        ImageReadError: missing, empty, truncated, non-image or oversized file.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ImageReadError(path, "empty file")
    return _decode(path, os.fspath(path), max_pixels, _to_rgb)


def decode_image(
    data: bytes, name: str = "upload", *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode image bytes (an HTTP upload) like :func:`read_image`; ``name`` labels errors."""
    if not data:
        raise ImageReadError(name, "empty file")
    return _decode(io.BytesIO(data), name, max_pixels, _to_rgb)


def image_shape(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) of an image as :func:`read_image` would return it, from the header only.

    Cheap enough to call per sample when comparing ground-truth masks against their images.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(path, str(exc) or type(exc).__name__) from exc
    if orientation in _SWAPPING_ORIENTATIONS:
        return width, height
    return height, width


def _to_mask(img: Image.Image) -> np.ndarray:
    if img.mode in ("P", "L"):
        return np.array(img, dtype=np.uint8)
    if img.mode in ("I", "F") or img.mode.startswith("I;"):
        arr = np.asarray(img)
        if arr.size and arr.min() >= 0 and arr.max() <= 255:
            return arr.astype(np.uint8)
        return _scale_high_depth(arr)
    if img.mode in ("1", "LA", "PA"):
        return np.array(img.convert("L"), dtype=np.uint8)
    rgb = _to_rgb(img)
    if np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2]):
        return np.ascontiguousarray(rgb[:, :, 0])
    return np.array(Image.fromarray(rgb).convert("L"), dtype=np.uint8)


def read_mask(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a mask/label file as HxW uint8.

    Palette PNGs give their palette indices (VOC class ids), gray files their values, colour files
    their first channel when all channels agree (gray saved as RGB) and their luminance otherwise.
    16-bit masks keep their values when they fit in 0..255 (class ids) and are shifted by 8 bits
    otherwise (0/65535 binary masks).
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ImageReadError(path, "empty file")
    return _decode(path, os.fspath(path), max_pixels, _to_mask)


def voc_palette() -> np.ndarray:
    """The (256, 3) uint8 PASCAL VOC colour map (index bits interleaved; 255 -> 224,224,192)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        code, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((code >> 0) & 1) << (7 - bit)
            green |= ((code >> 1) & 1) << (7 - bit)
            blue |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette[index] = (red, green, blue)
    return palette


def _save_atomic(path: str | os.PathLike[str], image: Image.Image, **save_options: object) -> Path:
    """Save ``image`` to ``path`` via a temporary sibling file and ``os.replace``.

    The format comes from the target's extension. The temporary file lives in the same folder so
    the final rename never crosses filesystems and therefore stays atomic. It is created with
    ``os.open(..., 0o666)`` so the result gets the usual umask permissions rather than the 0600 of
    ``tempfile``. This guards against killed processes, not power loss (no fsync: slow per file).
    """
    target = Path(path)
    image_format = Image.registered_extensions().get(target.suffix.lower())
    if image_format is None:
        raise ValueError(f"cannot tell the image format from the extension of {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as handle:
            image.save(handle, format=image_format, **save_options)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of writes that a killed process left under ``folder``; return them.

    :func:`_save_atomic` removes its temporary file on any exception, but not on SIGKILL or power
    loss. Only names of its exact pattern are touched, so no user file is ever removed. Call it when
    no other process is writing into ``folder`` (its in-flight temporaries would go too).
    """
    stale = [p for p in Path(folder).rglob(".*.tmp") if _TEMPORARY.match(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _jpeg_options(path: str | os.PathLike[str]) -> dict[str, object]:
    return {"quality": _JPEG_QUALITY} if Path(path).suffix.lower() in (".jpg", ".jpeg") else {}


def _require_uint8(array: np.ndarray, shape: str, what: str) -> None:
    """Reject arrays whose dtype or layout would silently produce a wrong file."""
    expected = {"HxW": (2, None), "HxWx3": (3, 3), "HxWx4": (3, 4)}[shape]
    ok = array.dtype == np.uint8 and array.ndim == expected[0]
    if ok and expected[1] is not None:
        ok = array.shape[2] == expected[1]
    if not ok:
        raise ValueError(f"{what} must be a uint8 {shape} array, got {array.dtype} {array.shape}")


def write_label_png(
    path: str | os.PathLike[str], label: np.ndarray, palette: np.ndarray | None = None
) -> Path:
    """Write an HxW uint8 class-index map as an indexed PNG (VOC palette by default), atomically.

    Indexed PNGs keep the raw class ids (readable back with :func:`read_mask`) while image viewers
    show them in colour, exactly like VOC's SegmentationClass files.
    """
    _require_uint8(label, "HxW", "label")
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"label maps must be written as .png, got {path}")
    colours = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    if colours.ndim != 2 or colours.shape[1] != 3 or not 1 <= colours.shape[0] <= 256:
        raise ValueError(f"palette must have shape (N<=256, 3), got {colours.shape}")
    image = Image.fromarray(np.ascontiguousarray(label))
    image.putpalette(colours.reshape(-1).tolist())
    return _save_atomic(path, image)


def write_mask_png(path: str | os.PathLike[str], mask: np.ndarray) -> Path:
    """Write a binary mask as a single-channel 0/255 PNG, atomically; non-zero is foreground."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or not (mask.dtype == np.bool_ or mask.dtype == np.uint8):
        raise ValueError(f"mask must be an HxW bool or uint8 array, got {mask.dtype} {mask.shape}")
    return _save_atomic(path, Image.fromarray(np.where(mask != 0, 255, 0).astype(np.uint8)))


def write_rgb(path: str | os.PathLike[str], image_rgb: np.ndarray) -> Path:
    """Write an HxWx3 uint8 RGB image, atomically (PNG or JPEG quality 95, by extension)."""
    _require_uint8(image_rgb, "HxWx3", "image_rgb")
    return _save_atomic(
        path, Image.fromarray(np.ascontiguousarray(image_rgb)), **_jpeg_options(path)
    )


def write_rgba(path: str | os.PathLike[str], image_rgba: np.ndarray) -> Path:
    """Write an HxWx4 uint8 RGBA image (e.g. a cut-out), atomically; the format must keep alpha."""
    _require_uint8(image_rgba, "HxWx4", "image_rgba")
    if Path(path).suffix.lower() in (".jpg", ".jpeg", ".bmp"):
        raise ValueError(
            f"{Path(path).suffix} cannot store an alpha channel: use .png or .webp for {path}"
        )
    return _save_atomic(path, Image.fromarray(np.ascontiguousarray(image_rgba)))
