"""segpets.predict on real sample photos, mixed with files it must skip."""

import csv
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from segpets import cli
from segpets.checkpointing import load_trained
from segpets.data.oxford_pet import load_image
from segpets.data.transforms import eval_transform
from segpets.errors import ConfigError, SegpetsError
from segpets.inference import predict_probabilities
from segpets.models import UNet
from segpets.predict import mask_at_size, output_names, predict
from segpets.trained import load_for_inference
from tests.helpers import compose_train, run_segpets

GOOD = ["Abyssinian_1", "Abyssinian_10", "Abyssinian_34", "Abyssinian_5"]  # 34: GIF, 5: RGBA PNG
BAD = ["Abyssinian_100.mat", "broken.jpg", "notes.txt"]


def predict_config(tmp_path, *overrides):
    overrides = list(overrides)
    return compose_train(tmp_path, overrides, config_name="predict"), overrides


def checksums(root: Path) -> dict[str, str]:
    """Contents of every file under `root` (through symlinks), by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def photos(tmp_path, sample_root) -> Path:
    """Symlinks to real photos (a GIF and an RGBA PNG among them), a .mat file, a truncated
    JPEG and a text file; nothing of the sample is copied."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in [*(f"{n}.jpg" for n in GOOD), "Abyssinian_100.mat"]:
        (folder / name).symlink_to(sample_root / "images" / name)
    (folder / "broken.jpg").write_bytes(
        (sample_root / "images" / "Abyssinian_1.jpg").read_bytes()[:100]
    )
    (folder / "notes.txt").write_text("not an image\n")
    return folder


@pytest.fixture(scope="module")
def ckpt(tiny_run) -> Path:
    return tiny_run / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def threshold(ckpt, sample_root) -> float:
    """The tiny model's median probability on a photo, so its masks hold both values."""
    model, run = load_trained(ckpt)
    transform = eval_transform(run.data.image_size, run.data.mean, run.data.std)
    image = transform(image=load_image(sample_root / "images" / "Abyssinian_1.jpg"))["image"]
    return float(predict_probabilities(model, image[None]).median())


@pytest.fixture
def pointwise_ckpt(ckpt, tmp_path) -> Path:
    """A checkpoint whose network is a 1x1 convolution: flip- and rotation-equivariant."""
    config = torch.load(ckpt, map_location="cpu", weights_only=True)["segpets_config"]
    config["model"] = {
        "_target_": "torch.nn.Conv2d",
        "in_channels": 3,
        "out_channels": 1,
        "kernel_size": 1,
    }
    state = {
        "model.weight": torch.tensor([4.0, -4.0, 0.0]).view(1, 3, 1, 1),
        "model.bias": torch.zeros(1),
    }
    path = tmp_path / "pointwise.ckpt"
    torch.save({"state_dict": state, "segpets_config": config}, path)
    return path


@pytest.mark.slow
def test_cli_predicts_the_readable_photos_and_reports_the_rest(
    photos, ckpt, threshold, sample_root, tmp_path
):
    out = tmp_path / "out"
    before = {"tmp": sorted(p.name for p in tmp_path.iterdir()), "photos": checksums(photos)}
    trimaps = sample_root / "annotations" / "trimaps"
    result = run_segpets(
        "predict",
        f"ckpt_path={ckpt}",
        "input=photos",
        "output_dir=out",
        f"trimaps={trimaps}",
        f"threshold={threshold}",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "predicted 4 images into out; skipped 3 files" in result.stdout
    for name in BAD:
        assert f"skipped {photos / name}: " in result.stderr
    assert "Traceback" not in result.stderr

    both_values = False
    for name in GOOD:
        with Image.open(sample_root / "images" / f"{name}.jpg") as source:
            size = source.size
        with Image.open(out / "masks" / f"{name}.png") as mask_file:
            assert mask_file.mode == "L" and mask_file.size == size
            values = set(np.unique(np.asarray(mask_file)).tolist())
        assert values <= {0, 255}
        both_values |= values == {0, 255}
        with Image.open(out / "overlays" / f"{name}.jpg") as overlay:
            assert overlay.size == size
        with Image.open(out / "triptychs" / f"{name}.png") as triptych:
            assert triptych.width >= 3 * size[0] and triptych.height > size[1]  # + caption
    assert both_values
    assert not list((out / "masks").glob("broken*")) and not list((out / "masks").glob("notes*"))
    with open(out / "predictions.csv") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == GOOD
    assert rows["Abyssinian_5"]["width"] == "200" and rows["Abyssinian_5"]["height"] == "150"
    assert all(0 <= float(row["dice"]) <= 1 for row in rows.values())

    # Only output_dir was written to (Hydra's files included); the inputs are intact.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before["tmp"], "out"])
    assert checksums(photos) == before["photos"]


def test_trimaps_are_found_in_the_dataset_layout(ckpt, sample_root, tmp_path):
    pattern = str(sample_root / "images" / "Abyssinian_3[34].jpg")
    cfg, overrides = predict_config(
        tmp_path,
        f"ckpt_path={ckpt}",
        f"input='{pattern}'",  # quoted: Hydra reads [34] as a list
        f"output_dir={tmp_path / 'out'}",
    )
    summary = predict(cfg, overrides)
    expected = sorted(Path(p).stem for p in sample_root.glob("images/Abyssinian_3[34].jpg"))
    assert summary["predicted"] == summary["with_truth"] == len(expected) == 2
    assert sorted(p.stem for p in (tmp_path / "out" / "triptychs").iterdir()) == expected
    assert 0 <= summary["mean_dice"] <= 1


def test_no_trimap_no_triptych(photos, ckpt, tmp_path):
    cfg, overrides = predict_config(
        tmp_path,
        f"ckpt_path={ckpt}",
        f"input=[{photos}/Abyssinian_1.jpg,{photos}/Abyssinian_5.jpg]",
        f"output_dir={tmp_path / 'out'}",
    )
    summary = predict(cfg, overrides)
    assert summary["predicted"] == 2 and summary["skipped"] == [] and summary["mean_dice"] is None
    assert not (tmp_path / "out" / "triptychs").exists()
    with open(tmp_path / "out" / "predictions.csv") as f:
        assert [row["dice"] for row in csv.DictReader(f)] == ["", ""]


def test_inputs_with_one_stem_get_their_own_outputs(sample_root, ckpt, tmp_path):
    folder = tmp_path / "same_stem"
    folder.mkdir()
    (folder / "cat.jpg").symlink_to(sample_root / "images" / "Abyssinian_1.jpg")
    (folder / "cat.png").symlink_to(sample_root / "images" / "Abyssinian_5.jpg")
    out = tmp_path / "out"
    cfg, overrides = predict_config(
        tmp_path, f"ckpt_path={ckpt}", f"input={folder}", f"output_dir={out}"
    )
    assert predict(cfg, overrides)["predicted"] == 2
    with (
        Image.open(out / "masks" / "cat.png") as first,
        Image.open(out / "masks" / "cat_2.png") as second,
    ):
        assert (first.size, second.size) == ((600, 400), (200, 150))
    with open(out / "predictions.csv") as f:
        assert {row["name"]: Path(row["path"]).name for row in csv.DictReader(f)} == {
            "cat": "cat.jpg",
            "cat_2": "cat.png",
        }


def test_output_names_never_reuse_a_stem():
    paths = [Path("x/a.jpg"), Path("y/a.png"), Path("a_2.jpg"), Path("z/a.gif")]
    assert output_names(paths) == ["a", "a_3", "a_2", "a_4"]


def test_refuses_an_output_dir_that_holds_the_inputs(photos, ckpt, tmp_path):
    before = checksums(photos)
    for output_dir in (photos, tmp_path):
        cfg, overrides = predict_config(
            tmp_path, f"ckpt_path={ckpt}", f"input={photos}", f"output_dir={output_dir}"
        )
        with pytest.raises(SegpetsError, match="holds the input"):
            predict(cfg, overrides)
    assert checksums(photos) == before
    assert not (photos / "masks").exists() and not (tmp_path / "masks").exists()


def test_refuses_an_output_that_is_a_symlink_to_an_input(photos, ckpt, tmp_path):
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "Abyssinian_1.png").symlink_to(photos / "Abyssinian_1.jpg")
    cfg, overrides = predict_config(
        tmp_path, f"ckpt_path={ckpt}", f"input={photos}/Abyssinian_1.jpg", f"output_dir={out}"
    )
    with pytest.raises(SegpetsError, match="would overwrite that input"):
        predict(cfg, overrides)


def test_refuses_an_output_dir_that_is_a_file_before_loading_the_model(tmp_path):
    (tmp_path / "out.png").write_bytes(b"")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "masks").write_text("")
    cases = {
        tmp_path / "out.png": r"out.png is a file, not a folder: predict writes masks/",
        tmp_path / "out.png" / "sub": r"sub is not a folder \(.*out.png is a file\)",
        tmp_path / "out": r"masks is a file, where predict writes a folder",
    }
    for output_dir, message in cases.items():
        cfg, overrides = predict_config(  # the checkpoint is never read: the check comes first
            tmp_path,
            f"ckpt_path={tmp_path / 'none.ckpt'}",
            "input=x.jpg",
            f"output_dir={output_dir}",
        )
        with pytest.raises(ConfigError, match=message):
            predict(cfg, overrides)


@pytest.mark.slow
def test_cli_output_dir_a_file_exits_2_with_one_line(tmp_path):
    (tmp_path / "out.png").write_bytes(b"")
    result = run_segpets(
        "predict", "ckpt_path=none.ckpt", "input=x.jpg", "output_dir=out.png", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("segpets: error: output_dir=out.png is a file, not a folder")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_output_dir_a_file_is_named_also_when_ckpt_path_has_the_same_value(
    tmp_path, monkeypatch, capsys
):
    import segpets.predict

    file = tmp_path / "out.png"
    file.write_text("")
    argv = ["segpets.predict", f"ckpt_path={file}", "input=x.jpg", f"output_dir={file}"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # cli.run sets it; undone after the test
    with pytest.raises(SystemExit) as exit_:
        cli.run(segpets.predict.main)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"segpets: error: output_dir={file} is a file, not a folder: the run writes its files "
        "into it. Choose another\n"
    )


def test_no_matching_input_names_the_pattern(ckpt, tmp_path):
    cfg, overrides = predict_config(
        tmp_path, f"ckpt_path={ckpt}", f"input={tmp_path}/*.png", f"output_dir={tmp_path / 'out'}"
    )
    with pytest.raises(SegpetsError, match=r"no file matches .*\*\.png"):
        predict(cfg, overrides)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("tta=d8", "tta must be one of"),
        ("threshold=1.5", "threshold must be in"),
        ("batch_size=0", "batch_size must be an integer"),
        ("trimaps=/nowhere", "trimaps=/nowhere: no such folder"),
        ("device=tpu", "device must be"),
    ],
)
def test_bad_predict_options_are_named(option, message, ckpt, tmp_path):
    cfg, overrides = predict_config(
        tmp_path, f"ckpt_path={ckpt}", "input=x.jpg", f"output_dir={tmp_path}", option
    )
    with pytest.raises(ConfigError, match=message):
        predict(cfg, overrides)


def test_a_device_this_machine_lacks_exits_2_with_the_fix(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # any machine: no CUDA
    monkeypatch.setattr(cli, "_task_started", False)
    cfg, overrides = predict_config(
        tmp_path, f"ckpt_path={ckpt}", "input=x.jpg", f"output_dir={tmp_path}", "device=cuda"
    )
    with pytest.raises(ConfigError, match="device=cuda: not available on this machine"):
        load_for_inference(cfg, overrides)
    with pytest.raises(SystemExit) as exit_:
        cli.exit_on_user_error(lambda cfg: predict(cfg, overrides))(cfg)
    assert exit_.value.code == cli.USER_ERROR == 2
    assert "device=cuda: not available on this machine; use device=auto or cpu" in (
        capsys.readouterr().err
    )


def test_load_for_inference_settles_device_precision_and_threshold(ckpt, tmp_path):
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)["segpets_config"]
    cfg, overrides = predict_config(tmp_path, f"ckpt_path={ckpt}", "device=cpu")
    trained = load_for_inference(cfg, overrides)
    assert trained.device == torch.device("cpu")
    assert trained.threshold == stored["module"]["threshold"]
    assert trained.precision == stored["trainer"]["precision"]
    assert trained.ckpt_path == str(ckpt) and trained.checkpoints == [str(ckpt)]
    assert not trained.model.training
    assert all(p.device.type == "cpu" for p in trained.model.parameters())

    cfg, overrides = predict_config(
        tmp_path, f"ckpt_path={ckpt}", "threshold=0.25", "trainer.precision=bf16-mixed"
    )
    trained = load_for_inference(cfg, overrides, device="cpu")  # as export: whatever cfg.device
    assert trained.threshold == 0.25 and trained.precision == "bf16-mixed"
    assert trained.run_config.trainer.precision == "bf16-mixed"


def test_load_for_inference_of_an_ensemble_names_its_members(tiny_run, tmp_path):
    best, last = (tiny_run / "checkpoints" / name for name in ("best.ckpt", "last.ckpt"))
    cfg, overrides = predict_config(
        tmp_path, "model=ensemble", f"model.checkpoints=[{best},{last}]", "device=cpu"
    )
    trained = load_for_inference(cfg, overrides)
    assert trained.ckpt_path is None
    assert trained.checkpoints == [str(best), str(last)]
    assert len(trained.model.members) == 2


def test_mask_at_size_resizes_probabilities_then_thresholds():
    probs = torch.tensor([[0.2, 0.4, 0.6, 0.8]]).expand(4, 4)[None]  # rising left to right
    mask = mask_at_size(probs, height=3, width=8, threshold=0.5)
    assert mask.shape == (3, 8) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 255}
    assert (mask[:, :4] == 0).all() and (mask[:, 4:] == 255).all()


def test_tta_with_an_equivariant_model_changes_nothing(pointwise_ckpt, sample_root, tmp_path):
    half = load_image(sample_root / "images" / "Abyssinian_1.jpg")[:, :300]
    symmetric = tmp_path / "symmetric.png"
    Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1)).save(symmetric)
    masks = {}
    for tta in ("none", "hflip", "d4"):
        out = tmp_path / tta
        cfg, overrides = predict_config(
            tmp_path,
            f"ckpt_path={pointwise_ckpt}",
            f"input={symmetric}",
            f"output_dir={out}",
            f"tta={tta}",
        )
        predict(cfg, overrides)
        masks[tta] = np.asarray(Image.open(out / "masks" / "symmetric.png"))
    assert 0.05 < (masks["none"] > 0).mean() < 0.95
    for tta in ("hflip", "d4"):
        assert (masks[tta] == masks["none"]).mean() >= 0.9999


def test_hflip_makes_any_model_mirror_symmetric_on_a_symmetric_photo(
    ckpt, threshold, sample_root, tmp_path
):
    half = load_image(sample_root / "images" / "Abyssinian_1.jpg")[:, :300]
    symmetric = tmp_path / "symmetric.png"
    Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1)).save(symmetric)
    cfg, overrides = predict_config(
        tmp_path,
        f"ckpt_path={ckpt}",
        f"input={symmetric}",
        f"output_dir={tmp_path / 'out'}",
        "tta=hflip",
        f"threshold={threshold}",
    )
    predict(cfg, overrides)
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "symmetric.png"))
    assert 0.05 < (mask > 0).mean() < 0.95
    assert (mask == mask[:, ::-1]).mean() >= 0.999


def test_d4_averages_the_eight_views_computed_by_hand():
    torch.manual_seed(0)
    model = UNet(widths=[4, 8, 16]).eval()
    images = torch.rand(2, 3, 24, 40)  # not square: rotated views change shape
    # Each view and the map that brings its prediction back, written out one by one.
    views = [
        (lambda x: x, lambda y: y),
        (lambda x: x.rot90(1, (2, 3)), lambda y: y.rot90(-1, (2, 3))),
        (lambda x: x.rot90(2, (2, 3)), lambda y: y.rot90(2, (2, 3))),
        (lambda x: x.rot90(3, (2, 3)), lambda y: y.rot90(1, (2, 3))),
        (lambda x: x.flip(3), lambda y: y.flip(3)),
        (lambda x: x.flip(2), lambda y: y.flip(2)),
        (lambda x: x.transpose(2, 3), lambda y: y.transpose(2, 3)),
        (lambda x: x.transpose(2, 3).flip(2, 3), lambda y: y.flip(2, 3).transpose(2, 3)),
    ]
    with torch.no_grad():
        expected = sum(back(model(view(images)).sigmoid()) for view, back in views) / 8
    assert torch.allclose(predict_probabilities(model, images, "d4"), expected, atol=1e-6)
    pointwise = nn.Conv2d(3, 1, 1)
    for tta in ("hflip", "d4"):
        assert torch.allclose(
            predict_probabilities(pointwise, images, tta),
            predict_probabilities(pointwise, images, "none"),
            atol=1e-6,
        )


def test_hflip_scales_averages_six_views_computed_by_hand_at_the_photos_size():
    torch.manual_seed(0)
    model = UNet(widths=[4, 8, 16]).eval()
    images = torch.rand(2, 3, 32, 48)

    def view(scale: float, flip: bool) -> torch.Tensor:
        size = (round(32 * scale), round(48 * scale))
        x = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        y = model(x.flip(3) if flip else x).sigmoid()
        y = y.flip(3) if flip else y
        return F.interpolate(y, size=(32, 48), mode="bilinear", align_corners=False)

    with torch.no_grad():
        expected = sum(view(s, f) for s in (0.75, 1.0, 1.25) for f in (False, True)) / 6
    probs = predict_probabilities(model, images, "hflip_scales")
    assert probs.shape == (2, 1, 32, 48)
    assert torch.allclose(probs, expected, atol=1e-6)
    # A photo of one colour looks the same at every size and mirrored: nothing changes.
    flat = torch.full((1, 3, 32, 48), 0.3)
    pointwise = nn.Conv2d(3, 1, 1)
    assert torch.allclose(
        predict_probabilities(pointwise, flat, "hflip_scales"),
        predict_probabilities(pointwise, flat, "none"),
        atol=1e-6,
    )
