"""The download path up to the network call: tarballs built here stand in for the archives."""

import hashlib
import shutil
import tarfile
from pathlib import Path
from urllib.error import URLError

import pytest
from torchvision.datasets import OxfordIIITPet

from segpets.data import OxfordPetDataModule, OxfordPetDataset
from segpets.data import download as download_module
from segpets.data.download import ARCHIVES, Archive, download_oxford_pet
from segpets.errors import DataError

URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data"


@pytest.fixture
def served(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Official-layout tarballs of the tiny synthetic set, fetched by a stub download_url;
    returns the URLs it was asked for."""
    tarballs = {}
    for folder in ("images", "annotations"):
        path = tmp_path / "served" / f"{folder}.tar.gz"
        path.parent.mkdir(exist_ok=True)
        with tarfile.open(path, "w:gz") as tar:
            tar.add(synthetic_root / folder, arcname=folder)
        tarballs[f"{URL}/{folder}.tar.gz"] = path
    archives = tuple(
        Archive(url, hashlib.md5(path.read_bytes()).hexdigest(), folder)
        for (url, path), folder in zip(tarballs.items(), ("images", "annotations"), strict=True)
    )
    monkeypatch.setattr(download_module, "ARCHIVES", archives)
    requested = []

    def fake_download_url(url: str, root: Path, filename: str, **_) -> None:
        requested.append(url)
        shutil.copy(tarballs[url], Path(root) / filename)

    monkeypatch.setattr(download_module, "download_url", fake_download_url)
    return requested


def test_archives_are_torchvisions():
    assert [(a.url, a.md5) for a in ARCHIVES] == [tuple(r) for r in OxfordIIITPet._RESOURCES]


def test_prepare_data_downloads_verifies_and_extracts(served: list[str], tmp_path: Path):
    root = tmp_path / "oxford-iiit-pet"
    datamodule = OxfordPetDataModule(str(root), image_size=32, num_workers=0, download=True)
    datamodule.prepare_data()
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "images"]  # nothing else
    assert (root / "annotations" / "trimaps").is_dir()
    datamodule.setup("fit")
    assert len(datamodule.dataset("train")) == 27
    datamodule.prepare_data()  # already there: nothing fetched again
    assert served == [f"{URL}/images.tar.gz", f"{URL}/annotations.tar.gz"]


def test_without_download_nothing_is_fetched(served: list[str], tmp_path: Path):
    OxfordPetDataModule(str(tmp_path / "pets")).prepare_data()
    assert served == [] and not (tmp_path / "pets").exists()


def test_wrong_checksum_deletes_the_archive(served: list[str], tmp_path: Path):
    good = download_module.ARCHIVES[1]
    bad = good._replace(md5="0" * 32)
    with pytest.raises(DataError) as error:
        download_oxford_pet(tmp_path, [bad])
    message = str(error.value)
    assert good.url in message and "md5" in message and "0" * 32 in message
    assert list(tmp_path.iterdir()) == [tmp_path / "served"]  # no archive, no half folder


@pytest.mark.parametrize("failure", [URLError("[Errno -3] no network"), TimeoutError("timed out")])
def test_offline_says_what_to_do(failure: OSError, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def offline(url: str, root: Path, filename: str, **_) -> None:
        (Path(root) / filename).write_bytes(b"half an archi")
        raise failure

    monkeypatch.setattr(download_module, "download_url", offline)
    root = tmp_path / "oxford-iiit-pet"
    with pytest.raises(DataError) as error:
        download_oxford_pet(root)
    message = str(error.value)
    assert f"{URL}/images.tar.gz" in message and str(root) in message
    assert "by hand" in message and "data=synthetic" in message
    assert list(root.iterdir()) == []


def test_an_archive_fetched_by_hand_is_not_downloaded_again(served: list[str], tmp_path: Path):
    root = tmp_path / "oxford-iiit-pet"
    root.mkdir()
    shutil.copy(tmp_path / "served" / "images.tar.gz", root)
    download_oxford_pet(root)
    assert served == [f"{URL}/annotations.tar.gz"]
    OxfordPetDataset(root, "test")
