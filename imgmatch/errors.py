"""The errors imgmatch raises on purpose; each says what went wrong and what the user can do."""

from __future__ import annotations


class ImgmatchError(Exception):
    """Base of every error imgmatch raises on purpose."""


class InvalidImageError(ImgmatchError, ValueError):
    """The input cannot be used as an image."""

    reason = "invalid image"


class EmptyImageError(InvalidImageError):
    reason = "empty file"


class FileTooLargeError(InvalidImageError):
    reason = "file too large"


class UnsupportedFormatError(InvalidImageError):
    reason = "unsupported format"


class CorruptImageError(InvalidImageError):
    reason = "corrupt image"


class TruncatedImageError(CorruptImageError):
    reason = "truncated image"


class ImageTooLargeError(InvalidImageError):
    """Too many pixels: refused from the header, before decoding (decompression bombs)."""

    reason = "too many pixels"


class DecodedTooLargeError(ImageTooLargeError):
    """Its pixels would take too much memory once decoded (pixels times bytes per pixel)."""

    reason = "decoded image too large"


class ImageTooSmallError(InvalidImageError):
    reason = "image too small"


class BlankImageError(InvalidImageError):
    """Nearly uniform: nothing to compare, and a blank listing must never match anything."""

    reason = "blank image"


class IndistinctImageError(InvalidImageError):
    """Too little detail to tell it from other images (a gradient, a pattern, a plain ground
    with a line): as a reference it would match every listing as plain as itself."""

    reason = "too little detail"


class OutputError(ImgmatchError):
    """An output file (a report, a summary) cannot be written where it was asked."""


class CatalogError(ImgmatchError):
    """The catalog cannot do what was asked (missing reference, unreadable database, ...)."""


class CatalogDamagedError(CatalogError):
    """A catalog file is damaged, lost or not what it should be; the message names the file and
    what to do (`imgmatch catalog verify`, `imgmatch catalog rebuild`, restore from a backup)."""


class ReferenceNotFoundError(CatalogError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "reference not found"


class MetadataError(CatalogError):
    """A reference metadata CSV is malformed."""
