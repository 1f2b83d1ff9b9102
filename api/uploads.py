"""One check for every uploaded image (MCIs for cases, ICIs for the synchronous classifier):
size, format, pixel count (decompression bombs), a full decode (a truncated file is refused
here, not later in a worker) and some contrast (a uniform image holds no chromosome, whatever
its stain). Each failure is an HTTP 4xx with the
file's name and the reason; nothing is stored before every file of a request has passed."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
from fastapi import HTTPException, UploadFile
from PIL import Image, UnidentifiedImageError

from api.errors import invalid_field
from api.fields import column_length, text_problem
from db.models import CaseImage
from karyoflow.straighten import FOREGROUND_LEVEL

FORMATS = {"PNG": ("image/png", ".png"), "JPEG": ("image/jpeg", ".jpg"), "TIFF": ("image/tiff", ".tif"),
           "BMP": ("image/bmp", ".bmp")}  # fmt: skip


@dataclass
class CheckedImage:
    filename: str
    data: bytes
    content_type: str
    suffix: str
    width: int
    height: int
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()

    def grey(self) -> np.ndarray:
        from karyoflow.pipeline import grey_from_bytes  # torch: the ICI classifier's; intake never needs it

        return grey_from_bytes(self.data)


@dataclass(frozen=True)
class UploadedImage:
    """An uploaded file's name and bytes, read from the request (no decode yet): what crosses to
    the intake process (api.intake)."""

    filename: str
    data: bytes


def read_upload(upload: UploadFile, position: int, *, max_bytes: int) -> UploadedImage:
    """The file's name and bytes, refused when the name does not fit the column it is stored in
    or holds a control character (the name is not repeated in that refusal), or when the file is
    over `max_bytes`. `position`: the file's index in the request's `files`. Blocking (a file
    read): call it from a sync handler."""
    name = upload.filename or "upload"
    problem = text_problem(name, column_length(CaseImage.filename))
    if problem is not None:
        raise invalid_field(("body", "files", position, "filename"), f"file {position}'s name: {problem}")
    data = upload.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(413, f"{name}: larger than {max_bytes} bytes")
    return UploadedImage(name, data)


def check_image(upload: UploadedImage, *, max_pixels: int, min_side: int, kind: str) -> CheckedImage:
    """The image decoded in full and checked; `kind` names what the image should be ("a
    metaphase image") in the too-small message. Blocking (a full decode): never on the event
    loop."""
    name, data = upload.filename, upload.data
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
            width, height = image.size
            if image_format not in FORMATS:
                raise HTTPException(415, f"{name}: {image_format} images are not accepted (PNG, JPEG, TIFF or BMP)")
            if width * height > max_pixels:
                raise HTTPException(413, f"{name}: {width}x{height} pixels is over the limit of {max_pixels}")
            image.load()
            darkest, brightest = image.convert("L").getextrema()
            if brightest - darkest <= FOREGROUND_LEVEL:
                raise HTTPException(422, f"{name}: the image is empty (uniform grey, no chromosome)")
    except Image.DecompressionBombError as error:  # PIL's own guard, far above ours
        raise HTTPException(413, f"{name}: too many pixels ({error})") from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise HTTPException(422, f"{name}: not a readable PNG, JPEG, TIFF or BMP image ({error})") from error
    if min(width, height) < min_side:
        raise HTTPException(422, f"{name}: {width}x{height} is too small for {kind}")
    content_type, suffix = FORMATS[image_format]
    return CheckedImage(name, data, content_type, suffix, width, height)
