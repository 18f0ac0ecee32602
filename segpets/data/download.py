"""Fetching the official Oxford-IIIT Pet archives (the ones torchvision's OxfordIIITPet uses).

Each archive holds one top-level folder (`images/` or `annotations/`). It is checked
against its md5, unpacked into a temporary folder beside it and only then moved into
place, so a folder that exists under root is always complete and is never fetched again.
The archive is deleted once unpacked (it would double the 800 MB on disk).
"""

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from torchvision.datasets.utils import check_integrity, download_url, extract_archive

from segpets.errors import DataError


class Archive(NamedTuple):
    url: str
    md5: str
    folder: str  # the top-level folder it unpacks to


ARCHIVES = (
    Archive(
        "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
        "5c4f3ee8e5d25df40f4fd59a7f44e54c",
        "images",
    ),
    Archive(
        "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
        "95a8c909bbe2e81eed6a22bccdf3f68f",
        "annotations",
    ),
)


def download_oxford_pet(root: str | Path, archives: Sequence[Archive] | None = None) -> None:
    """Download, check and unpack each archive (default: the official two) not yet in root."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for archive in ARCHIVES if archives is None else archives:
        if not (root / archive.folder).is_dir():
            _fetch(archive, root)


def _fetch(archive: Archive, root: Path) -> None:
    path = root / archive.url.rsplit("/", 1)[-1]
    if not check_integrity(path, archive.md5):
        path.unlink(missing_ok=True)  # else download_url would take a partial file as done
        try:
            download_url(archive.url, root, filename=path.name)
        except OSError as error:  # URLError, HTTPError, timeouts, full disk
            path.unlink(missing_ok=True)
            raise DataError(
                f"could not download {archive.url} into {root} ({error}). Download it by "
                f"hand into that folder and run again, or use data=synthetic, which needs "
                "no download."
            ) from error
        if not check_integrity(path, archive.md5):
            path.unlink(missing_ok=True)
            raise DataError(
                f"{archive.url} downloaded to {path} but its md5 is not {archive.md5}: the "
                "transfer was corrupted or the file changed upstream. The file was deleted; "
                "run again to retry."
            )
    staging = root / f".{archive.folder}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        extract_archive(path, staging)
        if not (staging / archive.folder).is_dir():
            raise DataError(f"{path} has no top-level {archive.folder}/ folder")
        (staging / archive.folder).rename(root / archive.folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    path.unlink()
