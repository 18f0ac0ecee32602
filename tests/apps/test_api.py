"""The Python API: segpets.load, Segmenter, model folders and segpets.train."""

import json
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from PIL import Image, ImageOps

import segpets
from segpets.errors import ConfigError, SegpetsError
from segpets.export import export
from segpets.model_folder import CARD_METRICS, FILES, NOT_RECORDED
from tests.helpers import REPO_ROOT, TINY_UNET, compose_train, run_segpets, tiny_run_overrides

DOC = REPO_ROOT / "docs" / "python.md"
KINDS = ["path", "pil", "numpy", "list"]
EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def ckpt(tiny_run) -> Path:
    return tiny_run / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def segmenter(ckpt):
    return segpets.load(ckpt)


@pytest.fixture(scope="module")
def photos(synthetic_root, tmp_path_factory) -> Path:
    """One photo in each form the CLI reads: RGB JPEG, grayscale, RGBA, 16-bit, palette GIF,
    1x1, and a JPEG stored on its side with EXIF orientation 6 (turn 90 degrees clockwise)."""
    folder = tmp_path_factory.mktemp("api_photos")
    source = sorted((synthetic_root / "images").glob("*.jpg"))[0]
    shutil.copy(source, folder / "rgb.jpg")
    with Image.open(source) as image:
        rgb = image.convert("RGB")
    gray = rgb.convert("L")
    gray.save(folder / "gray.png")
    rgba = rgb.copy()
    rgba.putalpha(gray)
    rgba.save(folder / "rgba.png")
    deep = (np.asarray(gray).astype(np.uint16) * 3).astype(np.uint16)  # up to 765: clipped
    Image.fromarray(deep).save(folder / "deep.png")
    assert Image.open(folder / "deep.png").mode in {"I;16", "I"}
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.gif")
    rgb.crop((5, 5, 6, 6)).save(folder / "dot.png")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    rgb.crop((0, 0, rgb.width, rgb.height // 2)).save(folder / "turned.jpg", exif=exif)
    return folder


@pytest.fixture(scope="module")
def threshold(segmenter, photos) -> float:
    """A cut through the tiny model's probabilities, so that masks hold both classes."""
    return round(float(np.median(segmenter.probabilities(photos / "rgb.jpg"))), 4)


@pytest.fixture(scope="module")
def cli_masks(ckpt, photos, threshold, tmp_path_factory) -> dict[str, np.ndarray]:
    """The masks `python -m segpets.predict` writes for `photos`, by stem."""
    out = tmp_path_factory.mktemp("api_cli") / "out"
    result = run_segpets(
        "predict",
        f"ckpt_path={ckpt}",
        f"input={photos}",
        f"output_dir={out}",
        f"threshold={threshold}",
        cwd=out.parent,
    )
    assert result.returncode == 0, result.stderr
    masks = {path.stem: np.asarray(Image.open(path)) for path in (out / "masks").glob("*.png")}
    assert set(masks) == {path.stem for path in photos.iterdir()}
    assert 0 < (masks["rgb"] > 0).mean() < 1  # the comparison means something
    return masks


def as_kind(path: Path, kind: str):
    if kind == "pil":
        return Image.open(path)
    if kind == "numpy":  # the pixels as the photo is seen: EXIF orientation applied
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_predict_gives_the_masks_the_cli_writes(kind, segmenter, photos, threshold, cli_masks):
    paths = sorted(photos.iterdir())
    if kind == "list":
        masks = segmenter.predict([str(p) for p in paths], threshold=threshold)
        assert isinstance(masks, list) and len(masks) == len(paths)
    else:
        masks = [segmenter.predict(as_kind(p, kind), threshold=threshold) for p in paths]
    for path, mask in zip(paths, masks, strict=True):
        expected = cli_masks[path.stem]
        assert mask.dtype == np.uint8 and mask.shape == expected.shape, path.name
        assert np.array_equal(mask, expected), path.name


def test_exif_orientation_turns_the_photo_and_its_mask(cli_masks, photos):
    """A photo stored on its side is predicted upright, as a viewer shows it and as
    data=folder trains on it: its mask has the turned photo's size."""
    with Image.open(photos / "turned.jpg") as image:
        width, height = image.size
    assert cli_masks["turned"].shape == (width, height)  # (rows, columns) of the turned photo


@pytest.mark.parametrize("name", ["gray.png", "rgba.png", "deep.png", "dot.png"])
def test_raw_arrays_of_other_modes_read_as_the_cli_reads_files(
    name, segmenter, photos, threshold, cli_masks
):
    with Image.open(photos / name) as image:
        array = np.asarray(image)  # (H, W) uint8, (H, W, 4) uint8, (H, W) uint16, (1, 1, 3)
    assert np.array_equal(segmenter.predict(array, threshold=threshold), cli_masks[Path(name).stem])


def test_a_stack_and_a_tuple_are_batches(segmenter, photos, threshold, cli_masks):
    with Image.open(photos / "rgb.jpg") as image:
        rgb = np.asarray(image.convert("RGB"))
    masks = segmenter.predict(np.stack([rgb, rgb]), threshold=threshold, batch_size=1)
    assert len(masks) == 2 and all(np.array_equal(m, cli_masks["rgb"]) for m in masks)
    assert len(segmenter.predict((rgb,))) == 1


def test_probabilities_are_what_predict_thresholds(segmenter, photos):
    probs = segmenter.probabilities([photos / "rgb.jpg", photos / "dot.png"], tta="hflip")
    masks = segmenter.predict([photos / "rgb.jpg", photos / "dot.png"], tta="hflip")
    for prob, mask in zip(probs, masks, strict=True):
        assert prob.dtype == np.float32 and prob.shape == mask.shape
        assert ((prob >= 0) & (prob <= 1)).all()
        assert np.array_equal((prob >= segmenter.threshold).astype(np.uint8) * 255, mask)


def test_the_segmenter_says_how_it_predicts(segmenter, tiny_run):
    assert isinstance(segmenter, segpets.Segmenter)
    assert isinstance(segmenter.model, torch.nn.Module) and not segmenter.model.training
    assert segmenter.config.model._target_ == "segpets.models.UNet"
    assert segmenter.image_size == 64 and segmenter.device == torch.device("cpu")
    assert segmenter.precision == "32-true" and segmenter.threshold == 0.5
    assert segmenter.tta == "none" and segmenter.postprocess is None
    images = torch.rand(2, 3, 40, 56)
    assert segmenter.model(images).shape == (2, 1, 40, 56)  # logits
    assert "UNet" in repr(segmenter)


# ---------------------------------------------------------------------------- folders


@pytest.fixture(scope="module")
def folder(segmenter, tmp_path_factory) -> Path:
    return segmenter.save(tmp_path_factory.mktemp("api_folder") / "pets-unet")


def no_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("segpets.load reached for the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_a_saved_folder_round_trips_without_the_network(
    folder, segmenter, photos, threshold, cli_masks, monkeypatch
):
    assert sorted(path.name for path in folder.iterdir()) == sorted(FILES)
    no_network(monkeypatch)
    loaded = segpets.load(folder)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.model(images), segmenter.model(images))
    assert loaded.config == segmenter.config
    masks = loaded.predict(sorted(photos.iterdir()), threshold=threshold)
    for path, mask in zip(sorted(photos.iterdir()), masks, strict=True):
        assert np.array_equal(mask, cli_masks[path.stem])


def test_the_folder_states_its_input_contract(folder, segmenter):
    contract = json.loads((folder / "normalization.json").read_text())
    data = segmenter.config.data
    assert contract["normalization"]["mean"] == list(data.mean)
    assert contract["normalization"]["std"] == list(data.std)
    assert contract["normalization"]["applied_inside"] is False
    assert contract["image_size"] == 64 and contract["threshold"] == 0.5
    assert contract["input"]["channels"] == "RGB" and contract["output"]["name"] == "logits"


def card_value(card: str, label: str) -> str:
    match = re.search(rf"^\| {re.escape(label)} \| (.*) \|$", card, flags=re.MULTILINE)
    assert match, f"the card has no row {label!r}"
    return match.group(1)


def test_the_model_card_metrics_are_those_of_metrics_json(folder, tiny_run, segmenter):
    card = (folder / "README.md").read_text()
    recorded = json.loads((tiny_run / "metrics.json").read_text())
    scores = {**recorded["val"], **recorded["test"]}
    for key, label in CARD_METRICS.items():
        assert card_value(card, label) == f"{scores[key]:.4f}"
    assert card_value(card, "parameters") == f"{recorded['parameters']:,}"
    assert card_value(card, "precision") == "32-true"
    assert card_value(card, "test-time augmentation") == "none"
    assert card_value(card, "post-processing") == "none"
    assert card_value(card, "image size").startswith("64 x 64")
    assert "`segpets.models.UNet`" in card_value(card, "architecture")
    assert "widths=[4, 8, 16]" in card_value(card, "model options")
    assert "test.txt" in card_value(card, "split")
    assert card_value(card, "trained with") == NOT_RECORDED  # composed in a test: no .hydra/
    # Saved again from the loaded folder, the card keeps what it knew.
    again = segpets.load(folder).save(folder.parent / "again")
    assert (again / "README.md").read_text() == card


def test_a_checkpoint_without_its_run_dir_has_no_recorded_scores(ckpt, tmp_path):
    alone = tmp_path / "alone.ckpt"
    shutil.copy(ckpt, alone)
    card = (segpets.load(alone).save(tmp_path / "model") / "README.md").read_text()
    for label in CARD_METRICS.values():
        assert card_value(card, label) == NOT_RECORDED


def test_export_writes_the_same_folder(ckpt, segmenter, tmp_path):
    out = tmp_path / "exported"
    cfg = compose_train(
        tmp_path, [f"ckpt_path={ckpt}", "format=folder", f"output={out}"], config_name="export"
    )
    assert export(cfg, ["format=folder"]) == out
    loaded = segpets.load(out)
    images = torch.rand(1, 3, 48, 72)
    with torch.no_grad():
        assert torch.equal(loaded.model(images), segmenter.model(images))
    assert (out / "README.md").read_text() == (
        segmenter.save(tmp_path / "saved") / "README.md"
    ).read_text()


def test_export_refuses_a_file_as_the_folder(ckpt, tmp_path):
    (tmp_path / "model.onnx").write_text("x")
    cfg = compose_train(
        tmp_path,
        [f"ckpt_path={ckpt}", "format=folder", f"output={tmp_path / 'model.onnx'}"],
        config_name="export",
    )
    with pytest.raises(ConfigError, match="is a file; format=folder writes a folder"):
        export(cfg, [])


def test_saving_never_overwrites_files_of_another_kind(segmenter, tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "README.md").write_text("# my project\n")
    with pytest.raises(SegpetsError, match=r"README\.md"):
        segmenter.save(tmp_path / "repo")
    assert (tmp_path / "repo" / "README.md").read_text() == "# my project\n"
    (tmp_path / "file").write_text("x")
    with pytest.raises(SegpetsError, match="is a file"):
        segmenter.save(tmp_path / "file")


# ---------------------------------------------------------------------------- bad input


def test_load_a_missing_path(tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(SegpetsError, match="no such file or folder") as error:
        segpets.load(missing)
    assert str(missing) in str(error.value) and "checkpoint" in str(error.value)


def test_load_files_that_are_not_segpets_checkpoints(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint\n")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 0}, foreign)
    for path, expected in (
        (notes, "not a readable PyTorch checkpoint"),
        (plain, "not a Lightning checkpoint"),
        (foreign, "without a segpets config"),
    ):
        with pytest.raises(SegpetsError, match=expected) as error:
            segpets.load(path)
        assert str(path) in str(error.value)


def test_load_folders_that_are_not_model_folders(folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(SegpetsError, match=r"no model\.safetensors \(the weights\)") as error:
        segpets.load(broken)
    assert str(broken) in str(error.value) and "config.yaml" in str(error.value)
    (broken / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(SegpetsError, match="not a readable safetensors file"):
        segpets.load(broken)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegpetsError, match=r"no config\.yaml"):
        segpets.load(tmp_path / "empty")


def test_predict_refuses_what_it_cannot_read(segmenter, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    with pytest.raises(SegpetsError, match="not an image PIL can read") as error:
        segmenter.predict(notes)
    assert str(notes) in str(error.value)
    with pytest.raises(SegpetsError, match="no such image file"):
        segmenter.predict(tmp_path / "missing.jpg")
    with pytest.raises(SegpetsError, match=r"shape \(8, 8, 3\) and dtype float32"):
        segmenter.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(SegpetsError, match="cannot predict on a int"):
        segmenter.predict(3)
    with pytest.raises(ConfigError, match="tta must be one of"):
        segmenter.predict(np.zeros((8, 8, 3), np.uint8), tta="flip")
    with pytest.raises(ConfigError, match="threshold must be in"):
        segmenter.predict(np.zeros((8, 8, 3), np.uint8), threshold=1.5)
    assert segmenter.predict([]) == []


# ---------------------------------------------------------------------------- the package


def test_import_segpets_is_light():
    code = (
        "import sys, segpets; "
        "print([m for m in ('torch', 'lightning', 'hydra', 'PIL') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_doc_example_runs(ckpt, photos, tmp_path, monkeypatch):
    block = re.search(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.MULTILINE | re.DOTALL)
    assert block, "docs/python.md has no ```python block"
    code = block.group(1)
    placeholders = {
        '"logs/train/runs/<date>/<time>/checkpoints/best.ckpt"': repr(str(ckpt)),
        '"photo.jpg"': repr(str(photos / "rgb.jpg")),
    }
    for placeholder, value in placeholders.items():
        assert placeholder in code
        code = code.replace(placeholder, value)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {})
    assert (tmp_path / "pets-unet" / "model.safetensors").is_file()


def test_train_returns_the_metrics_it_writes(synthetic_root, tmp_path):
    import segpets.train  # the app module: segpets.train stays callable

    assert callable(segpets.train) and callable(segpets.train.train)
    overrides = [
        *tiny_run_overrides(synthetic_root),
        *TINY_UNET,
        "trainer.max_epochs=1",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
    ]
    metrics = segpets.train(overrides=overrides)
    run = Path(metrics["output_dir"])
    assert run.is_relative_to(tmp_path / "logs" / "train" / "runs")
    assert json.loads((run / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["overrides"] == overrides and metrics["choices"]["model"] == "unet"
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / ".hydra" / "overrides.yaml").is_file()
    assert not HydraConfig.initialized()  # Hydra's state is put back
    # The card names the command that trained it, from the run's .hydra/overrides.yaml.
    card = (segpets.load(metrics["best_checkpoint"]).save(tmp_path / "m") / "README.md").read_text()
    assert card_value(card, "trained with").startswith("`python -m segpets.train data=synthetic")
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch: no such option"):
        segpets.train(overrides=["trainer.max_epoch=1"])
    with pytest.raises(ConfigError, match="overrides must be a list"):
        segpets.train(overrides="model=unet")
