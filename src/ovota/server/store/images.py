"""What a repository accepts as a build: names, OTA slot sizes, and the checks on an uploaded image.

Pure functions over bytes and strings (no database, no files), so the API, the console and the CLI refuse the
same uploads with the same one-line reasons.
"""

from __future__ import annotations

import re

from ovota.formats import FormatError
from ovota.formats.app_image import AppImage
from ovota.formats.signature import read_signatures
from ovota.formats.version_marker import image_version
from ovota.formats.versions import check_version, escape_text, strverscmp
from ovota.server.store.errors import RepositoryError

OLD_SLOT = 0x400000  # v3.x products: 4 MB OTA slots
NEW_SLOT = 0x700000  # v3.x-5 products: 7 MB OTA slots
SECTOR = 0x1000
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # whole strings only: use NAME.fullmatch
FIRST_NEW_LAYOUT_VERSION = "3.3.006"


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a usable product or tag name; RepositoryError otherwise."""
    if not NAME.fullmatch(value):
        raise RepositoryError(f"invalid {kind} name {value!r}: use letters, digits, '.', '_' and '-'")
    return value


def slot_size(product: str) -> int:
    return NEW_SLOT if product.endswith("-5") else OLD_SLOT


def default_product(version: str) -> str:
    """Builds from 3.3.006 on target the two-7 MB-slot layout (v3.3-5); older ones the 4 MB slots (v3.3)."""
    return "v3.3-5" if strverscmp(version, FIRST_NEW_LAYOUT_VERSION) >= 0 else "v3.3"


def fits(size: int, product: str) -> bool:
    """Whether an image of ``size`` bytes fits the product's OTA slot. ESP-IDF erases (size / 4096 + 1) sectors
    before writing, so that much must fit."""
    return (size // SECTOR + 1) * SECTOR <= slot_size(product)


def check_fits(size: int, product: str) -> None:
    """RepositoryError unless an image of ``size`` bytes fits the product's OTA slot."""
    slot = slot_size(product)
    if not fits(size, product):
        raise RepositoryError(
            f"image of {size} bytes does not fit the {slot // 0x100000} MB OTA slot of product {product}"
        )


def inspect_image(data: bytes) -> tuple[str, str]:
    """(version, project) of a valid app image; RepositoryError for anything else."""
    try:
        image = AppImage.parse(data)
    except FormatError as err:
        raise RepositoryError(f"not a valid firmware image: {err}") from None
    problem = image.verify().first_failure()
    if problem:
        raise RepositoryError(f"not a valid firmware image: {problem}")
    signatures = read_signatures(data, image.length)
    expected = image.length if signatures is None else signatures.end  # a signed file ends with its sector
    if expected != len(data):
        raise RepositoryError(f"firmware image is {expected} bytes but the upload has {len(data)}")
    desc = image.app_descriptor()
    # OVMS treats an empty marker like a missing one; the app descriptor then names the version.
    raw = image_version(data) or (desc.version.encode() if desc else b"")
    if not raw:
        raise RepositoryError("firmware image carries no version (no OVMS marker, no app descriptor)")
    try:
        version = check_version(raw)
    except FormatError as err:
        raise RepositoryError(f"firmware image has an unusable version: {err}") from None
    return version, escape_text(desc.project_name) if desc else ""
