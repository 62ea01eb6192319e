"""Uploads in, pictures out: validation, decoding, the geometry policy, and encoding.

Geometry policy (faces are square crops, and a student only knows its native size):
the upload is rotated upright (EXIF orientation), then the largest centred region with the
model's aspect ratio (a square for faces) is cropped and resized (bicubic) to the native size.
The response size is chosen by ``size``:

- ``native`` (default): the model's native size.
- ``crop``: the edited crop scaled back to the crop's size in the upload.
- ``original``: the upload's full size; the edited crop is pasted back over the centred region.

Models that expect FFHQ-aligned faces (manifest ``input.alignment: ffhq``) frame the upload in
:mod:`app.faces` instead: face detection, the FFHQ crop, and a feathered paste-back.

Every bad upload maps to a :class:`~app.errors.ServiceError` (4xx with a JSON reason), never a 500.
Pixel counts are checked from the header, before any pixel is decoded, so a tiny file declaring
huge dimensions (a decompression bomb) costs nothing. So is the result's size against the encoder's
limit (WebP 16383 px a side, JPEG 65535): a ``size=original`` answer that could not be encoded is a
422 ``output_too_large`` before any work is done, not a failure after it.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import ServiceError
from editing.pixels import to_rgb

FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
ACCEPTED = ("JPEG", "PNG", "WEBP")
MAX_SIDE = {"jpeg": 65535, "png": 2**31 - 1, "webp": 16383}  # the longest side each encoder can write
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


@dataclass(frozen=True)
class Decoded:
    """An upload decoded and cropped: ``pixels`` uint8 [H,W,3] at the model's native size, plus where it came from."""

    pixels: np.ndarray
    source_format: str
    original_size: tuple[int, int]  # (W, H) from the file header
    crop_box: tuple[int, int, int, int]  # (left, top, right, bottom) in the decoded, upright picture
    original: Image.Image | None  # the decoded, upright picture in RGB, kept for size="crop"/"original"


def sniff_format(data: bytes) -> str | None:
    """The container format from the first bytes (JPEG, PNG, WEBP, GIF, BMP, TIFF) or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    return None


def check_upload(data: bytes, max_bytes: int) -> str:
    """Refuse empty, oversized, non-image and unsupported uploads; return the format (JPEG, PNG or WEBP)."""
    if not data:
        raise ServiceError(400, "empty_file", "the uploaded file is empty; send a JPEG, PNG or WebP image")
    if len(data) > max_bytes:
        raise ServiceError(
            413, "file_too_large", f"the upload is {len(data)} bytes; the limit is {max_bytes}"
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise ServiceError(415, "not_an_image", "the upload is not a JPEG, PNG or WebP image")
    if fmt not in ACCEPTED:
        raise ServiceError(
            415, "unsupported_format", f"{fmt} images are not accepted; send JPEG, PNG or WebP"
        )
    return fmt


def check_output_size(width: int, height: int, fmt: str) -> None:
    """Refuse (422 ``output_too_large``, with the limit) a width x height result the ``fmt`` encoder cannot write."""
    limit = MAX_SIDE[fmt]
    if max(width, height) > limit:
        others = [f for f, side in MAX_SIDE.items() if side >= max(width, height)]
        raise ServiceError(
            422,
            "output_too_large",
            f"a {width}x{height} result is beyond the {fmt} encoder's limit of {limit} pixels a side; "
            f"ask for {' or '.join(f'format={f}' for f in others)}, or size=native or crop",
            limit=limit,
        )


def header_pixels(data: bytes) -> int:
    """width x height as the file header declares it, without decoding; 0 when the header cannot be read (the
    decoding refuses such a file with its reason)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except Exception:  # whatever Pillow raises on a bad header: decode() answers it as a 4xx
        return 0
    return width * height


def center_box(width: int, height: int, aspect: float) -> tuple[int, int, int, int]:
    """The largest centred (left, top, right, bottom) box of ``aspect`` = W/H inside a width x height picture."""
    if width / height > aspect:
        w, h = max(1, round(height * aspect)), height
    else:
        w, h = width, max(1, round(width / aspect))
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def open_upload(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    draft_hw: tuple[int, int] | None = None,
    output_format: str | None = None,
) -> tuple[Image.Image, str, tuple[int, int]]:
    """Validate and decode an upload, honour EXIF rotation: (upright RGB picture, format, (W, H) from the header).

    With ``draft_hw`` (H, W) a JPEG may be decoded at a reduced scale (libjpeg's DCT scaling), as long as a
    centred crop of that size still fits at full detail. With ``output_format`` the upload's size must be one
    that format can encode (the answer is the upload's size), checked from the header.
    """
    fmt = check_upload(data, max_bytes)
    try:
        with warnings.catch_warnings():  # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ServiceError(413, "too_many_pixels", f"{e}; the limit is {max_pixels} pixels") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ServiceError(400, "corrupt_image", f"the {fmt} file cannot be read: {e}") from e
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise ServiceError(
                413,
                "too_many_pixels",
                f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
            )
        if output_format is not None:
            check_output_size(width, height, output_format)
        if fmt == "JPEG" and draft_hw is not None:
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the crop stays at least native-sized
            # (whatever the EXIF rotation: the shorter side must cover the longer native side).
            scale = max(draft_hw) / min(width, height)
            im.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        try:
            im.load()
            rgb = to_rgb(ImageOps.exif_transpose(im))
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ServiceError(400, "corrupt_image", f"the {fmt} file is truncated or corrupt: {e}") from e
    return rgb, fmt, (width, height)


def decode(
    data: bytes,
    *,
    native_hw: tuple[int, int],
    max_bytes: int,
    max_pixels: int,
    keep_original: bool = False,
    output_format: str | None = None,
) -> Decoded:
    """Validate and decode an upload, honour EXIF rotation, centre-crop and resize to ``native_hw`` (H, W).

    ``keep_original`` keeps the full-resolution upright picture for :func:`restore_geometry`; without it a
    JPEG may be decoded at a reduced scale (libjpeg's DCT scaling), as long as the crop stays native-sized.
    ``output_format``: see :func:`open_upload`.
    """
    rgb, fmt, size = open_upload(
        data,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        draft_hw=None if keep_original else native_hw,
        output_format=output_format,
    )
    out_h, out_w = native_hw
    box = center_box(rgb.width, rgb.height, out_w / out_h)
    # Crop first: resizing with ``box=`` would let the filter see pixels outside the crop.
    pixels = np.asarray(rgb.crop(box).resize((out_w, out_h), Image.Resampling.BICUBIC, reducing_gap=3.0))
    return Decoded(pixels, fmt, size, box, rgb if keep_original else None)


def restore_geometry(edited: np.ndarray, decoded: Decoded, size: str) -> np.ndarray:
    """Apply the ``size`` policy to the model's output (uint8 [H,W,3] at native size)."""
    if size == "native":
        return edited
    if decoded.original is None:
        raise ValueError(f"size={size} needs decode(..., keep_original=True)")
    left, top, right, bottom = decoded.crop_box
    crop = Image.fromarray(edited).resize((right - left, bottom - top), Image.Resampling.BICUBIC)
    if size == "crop":
        return np.asarray(crop)
    canvas = decoded.original.copy()
    canvas.paste(crop, (left, top))
    return np.asarray(canvas)


def encode(pixels: np.ndarray, fmt: str, quality: int) -> bytes:
    """uint8 [H,W,3] -> JPEG/WebP (``quality``) or PNG (fast zlib level 1) bytes; 422 beyond the encoder's size."""
    check_output_size(pixels.shape[1], pixels.shape[0], fmt)
    buf = io.BytesIO()
    pil_format = FORMATS[fmt]
    options = {"compress_level": 1} if pil_format == "PNG" else {"quality": quality}
    Image.fromarray(pixels).save(buf, format=pil_format, **options)
    return buf.getvalue()
