"""segpets.export: ONNX and TorchScript files that compute what the checkpoint computes."""

import hashlib
import json
import os

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

import segpets
from segpets.checkpointing import load_trained, write_atomically
from segpets.data.oxford_pet import load_image
from segpets.errors import ConfigError, SegpetsError
from segpets.export import export
from segpets.predict import mask_at_size, predict
from tests.helpers import compose_train, run_segpets

# Consumers of the TorchScript file call torch.jit.load, deprecated since torch 2.9.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")

# (height, width): the traced size; one not traced and not a multiple of 32; odd sides,
# which the tiny UNet (stride 4) pads inside the graph.
SIZES = [(64, 64), (80, 48), (37, 53)]


def export_config(tmp_path, *overrides):
    overrides = list(overrides)
    return compose_train(tmp_path, overrides, config_name="export"), overrides


@pytest.fixture(scope="module")
def ckpt(tiny_run):
    return tiny_run / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    """Both formats of the tiny run, exported once for the module."""
    folder = tmp_path_factory.mktemp("exported")
    paths = {}
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        cfg, overrides = export_config(
            folder, f"ckpt_path={ckpt}", f"format={fmt}", f"output={folder / name}"
        )
        paths[fmt] = export(cfg, overrides)
    return paths


def run_onnx(path, images: np.ndarray) -> np.ndarray:
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": images})[0]


def run_torchscript(path, images: np.ndarray) -> np.ndarray:
    module = torch.jit.load(str(path))
    with torch.no_grad():
        return module(torch.from_numpy(images)).numpy()


RUNNERS = {"onnx": run_onnx, "torchscript": run_torchscript}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_logits_match_the_pytorch_model(fmt, exported, ckpt):
    model, run = load_trained(ckpt)
    mean = torch.tensor(list(run.data.mean)).view(1, 3, 1, 1)
    std = torch.tensor(list(run.data.std)).view(1, 3, 1, 1)
    generator = torch.Generator().manual_seed(0)
    for height, width in SIZES:
        images = torch.rand(2, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model((images - mean) / std).numpy()
        logits = RUNNERS[fmt](exported[fmt], images.numpy())
        assert logits.shape == (2, 1, height, width) and logits.dtype == np.float32
        assert np.abs(logits - expected).max() <= 1e-4


def test_onnx_predicts_the_mask_segpets_predict_writes(exported, ckpt, sample_root, tmp_path):
    photo = sample_root / "images" / "Abyssinian_1.jpg"
    contract = json.loads(exported["onnx"].with_name("model.onnx.json").read_text())
    size = contract["image_size"]
    # A consumer with only the file and its contract: resize, scale to [0, 1], run.
    image = load_image(photo)
    resized = A.Resize(size, size)(image=image)["image"]  # as data.transforms.eval_transform
    images = (resized.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    probs = torch.from_numpy(run_onnx(exported["onnx"], np.ascontiguousarray(images))).sigmoid()
    # The tiny model is unsure everywhere: its median makes a mask with both values.
    threshold = float(probs.median())
    mask = mask_at_size(probs[0], image.shape[0], image.shape[1], threshold)

    overrides = [
        f"ckpt_path={ckpt}",
        f"input={photo}",
        f"output_dir={tmp_path / 'out'}",
        f"threshold={threshold}",
        # The exported graph runs in float32; so must predict, not under the run's bf16 autocast.
        "trainer.precision=32-true",
    ]
    predict(compose_train(tmp_path, overrides, config_name="predict"), overrides)
    written = np.asarray(Image.open(tmp_path / "out" / "masks" / "Abyssinian_1.png"))
    assert written.shape == mask.shape
    assert 0.05 < (mask > 0).mean() < 0.95
    assert (written == mask).mean() >= 0.999


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_json_contract_says_everything_a_consumer_needs(fmt, exported, ckpt):
    path = exported[fmt]
    contract = json.loads(path.with_name(path.name + ".json").read_text())
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)["segpets_config"]
    assert contract["format"] == fmt and contract["file"] == path.name
    assert contract["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert contract["input"]["name"] == "images"
    assert contract["input"]["description"] == "float32 RGB in [0, 1], NCHW"
    assert (contract["input"]["layout"], contract["input"]["dtype"]) == ("NCHW", "float32")
    assert contract["input"]["range"] == [0.0, 1.0]
    assert contract["normalization"]["mean"] == checkpoint["data"]["mean"]
    assert contract["normalization"]["std"] == checkpoint["data"]["std"]
    assert contract["normalization"]["applied_inside"] is True
    assert contract["output"]["name"] == "logits"
    assert "sigmoid" in contract["output"]["meaning"]
    assert contract["threshold"] == checkpoint["module"]["threshold"]
    assert contract["image_size"] == checkpoint["data"]["image_size"] == 64
    assert contract["model"]["target"] == "segpets.models.UNet"
    assert contract["opset"] == (17 if fmt == "onnx" else None)
    assert contract["segpets_version"] == segpets.__version__
    assert contract["checkpoint"] == str(ckpt.resolve())
    assert contract["check"]["max_abs_diff"] <= 1e-4
    assert not list(path.parent.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("option", "error", "message"),
    [
        (
            "format=tflite",
            ConfigError,
            "format must be one of onnx, torchscript, folder, got 'tflite'",
        ),
        ("opset=9", ConfigError, "opset must be an integer from 11 to 20"),
    ],
)
def test_bad_export_options_are_named(option, error, message, ckpt, tmp_path):
    cfg, overrides = export_config(
        tmp_path, f"ckpt_path={ckpt}", f"output={tmp_path / 'm.onnx'}", option
    )
    with pytest.raises(error, match=message):
        export(cfg, overrides)
    assert not (tmp_path / "m.onnx").exists()


def test_refuses_to_overwrite_the_checkpoint(ckpt, tmp_path):
    cfg, overrides = export_config(tmp_path, f"ckpt_path={ckpt}", f"output={ckpt}")
    with pytest.raises(SegpetsError, match="is the checkpoint itself"):
        export(cfg, overrides)


def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.slow
def test_export_from_the_command_line(ckpt, tmp_path):
    output = tmp_path / "deploy" / "nested" / "pets.pt"  # folders that do not exist yet
    result = run_segpets(
        "export",
        f"ckpt_path={ckpt}",
        "format=torchscript",
        f"output={output}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"exported torchscript to {output}" in result.stdout
    assert "deprecated" not in result.stderr
    assert json.loads(output.with_name("pets.pt.json").read_text())["format"] == "torchscript"
    logits = run_torchscript(output, np.random.default_rng(0).random((1, 3, 37, 53), np.float32))
    assert logits.shape == (1, 1, 37, 53)
