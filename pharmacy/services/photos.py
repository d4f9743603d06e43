"""Photo proof of delivery: checked by content, re-encoded without metadata, stored privately.

An upload is accepted only if Pillow decodes it fully as a JPEG, PNG or WebP image of sane
dimensions, whatever its name or declared type says. It is turned upright, shrunk to at most
``MAX_SIDE_PX`` and written anew in the same format, so EXIF (GPS position, camera, time) and
any bytes smuggled after the image are gone. Files live outside the web root under a random
name; only an authorised route serves them.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DomainError, InvalidRequest, NotFound

# Pillow format -> (file extension, media type)
FORMATS = {"JPEG": ("jpg", "image/jpeg"), "PNG": ("png", "image/png"),
           "WEBP": ("webp", "image/webp")}
MAX_PIXELS = 40_000_000  # a 48-megapixel phone photo is ~48M; anything bigger is refused
MAX_SIDE_PX = 2560
_NAME = re.compile(r"[0-9a-f]{32}\.(jpg|png|webp)")


class PhotoTooLarge(DomainError):
    status, code, title = 413, "photo_too_large", "Content Too Large"


def _refuse(detail: str) -> InvalidRequest:
    return InvalidRequest(detail, errors=[{"field": "photo", "message": detail}])


@dataclass(frozen=True)
class PhotoStore:
    """A private directory of proof-of-delivery photos."""

    directory: Path
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], instance_path: str) -> PhotoStore:
        """DELIVERY_PHOTO_DIR, or ``<instance>/delivery-photos`` (never under static/)."""
        directory = str(settings.get("DELIVERY_PHOTO_DIR") or "")
        return cls(Path(directory) if directory else Path(instance_path) / "delivery-photos",
                   int(settings["DELIVERY_PHOTO_MAX_BYTES"]))

    def save(self, data: bytes) -> str:
        """Check, clean and store one upload; returns its file name (a random id)."""
        if len(data) > self.max_bytes:
            raise PhotoTooLarge(f"The photo is too large (at most {self.max_bytes // 1_000_000}"
                                " MB).")
        if not data:
            raise _refuse("The photo is empty.")
        image, kind = _decode(data)
        extension, _ = FORMATS[kind]
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{secrets.token_hex(16)}.{extension}"
        # Exclusive create, readable by this user only.
        fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            _encode(image, kind, out)
        return name

    def path(self, name: str) -> Path:
        """The file of a stored photo; NotFound for a name this store never made."""
        if not _NAME.fullmatch(name):
            raise NotFound("No such photo.")
        path = self.directory / name
        if not path.is_file():
            raise NotFound("The photo file is missing.")
        return path

    def discard(self, name: str) -> None:
        """Remove a photo whose delivery record was not kept (or is past retention)."""
        if _NAME.fullmatch(name):
            (self.directory / name).unlink(missing_ok=True)

    def discard_unreferenced(self, referenced: Collection[str], *, older_than: timedelta,
                             now: datetime) -> int:
        """Remove stored photos no record names, written more than ``older_than`` ago (a
        photo whose record has not been committed yet is younger than that). Returns how
        many were removed."""
        if not self.directory.is_dir():
            return 0
        limit = (now - older_than).timestamp()
        removed = 0
        for path in self.directory.iterdir():
            if (_NAME.fullmatch(path.name) and path.name not in referenced
                    and path.stat().st_mtime < limit):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def media_type(name: str) -> str:
    extension = name.rpartition(".")[2]
    return next(mime for ext, mime in FORMATS.values() if ext == extension)


def _decode(data: bytes) -> tuple[Image.Image, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
            kind = probe.format or ""
            if kind not in FORMATS:
                raise _refuse("The photo must be a JPEG, PNG or WebP image.")
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise _refuse("The photo has too many pixels.")
            probe.load()  # decodes everything: a truncated or corrupt file fails here
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _refuse("The photo has too many pixels.") from None
    except UnidentifiedImageError:
        raise _refuse("The photo must be a JPEG, PNG or WebP image.") from None
    except (OSError, SyntaxError, ValueError):
        raise _refuse("The photo could not be read; take it again.") from None
    image = ImageOps.exif_transpose(probe)  # upright, as the camera meant it
    image.thumbnail((MAX_SIDE_PX, MAX_SIDE_PX))
    return image, kind


def _encode(image: Image.Image, kind: str, out: io.BufferedIOBase | object) -> None:
    # A fresh image from the pixels alone: no EXIF, XMP, comments or ICC profile survive.
    if kind == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    elif image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    clean = Image.new(image.mode, image.size)
    clean.paste(image)
    by_kind: dict[str, dict[str, object]] = {"JPEG": {"quality": 85, "optimize": True},
                                             "PNG": {"optimize": True},
                                             "WEBP": {"quality": 85}}
    options = by_kind[kind]
    clean.save(out, format=kind, **options)  # type: ignore[arg-type]
