"""The corruption benchmark: `python -m segpets.eval ckpt_path=... corruptions=standard`."""

import csv
import itertools
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from segpets.corruptions import (
    CLEAN,
    CorruptedDataset,
    CorruptionSuite,
    build_corruptions,
    read_table,
)
from segpets.errors import ConfigError
from segpets.eval import evaluate
from tests.helpers import compose_train, run_segpets


def eval_config(tmp_path, ckpt, *overrides):
    overrides = [f"ckpt_path={ckpt}", *overrides]
    return compose_train(tmp_path, overrides, config_name="eval"), overrides


@pytest.fixture(scope="module")
def standard(tmp_path_factory) -> CorruptionSuite:
    cfg, _ = eval_config(tmp_path_factory.mktemp("cfg"), "x.ckpt", "corruptions=standard")
    return build_corruptions(cfg.corruptions)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A photo-like 120x160 RGB image: smooth shading, a bright disc, texture at 1-8 px."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:120, :160]
    shade = 60 + 0.5 * x + 0.3 * y
    disc = ((x - 90) ** 2 + (y - 60) ** 2 < 36**2) * 70.0
    texture = sum(
        cv2.resize(
            rng.normal(0, 12, (120 // step, 160 // step)).astype(np.float32),
            (160, 120),
            interpolation=cv2.INTER_CUBIC,
        )
        for step in (1, 2, 4, 8)
    )
    image = np.stack([shade + disc + texture, shade * 0.9 + texture, shade * 0.8 + disc], -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def _high_frequency(image: np.ndarray, cutoff: float = 0.05) -> float:
    """The grey image's spectral energy above `cutoff` cycles per pixel (Hann-windowed, so
    the borders add none); a uint8 image's rounding noise is far below it."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    window = np.outer(np.hanning(grey.shape[0]), np.hanning(grey.shape[1]))
    power = np.abs(np.fft.fft2((grey - grey.mean()) * window)) ** 2
    fy, fx = np.meshgrid(
        np.fft.fftfreq(grey.shape[0]), np.fft.fftfreq(grey.shape[1]), indexing="ij"
    )
    return float(power[np.hypot(fy, fx) > cutoff].sum() / power.size)


def _difference(clean: np.ndarray, image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) - clean.astype(np.float64)


# Each corruption's statistic, signed so that it grows with the severity.
STATISTICS = {
    "gaussian_noise": lambda clean, image: _difference(clean, image).std(),
    "shot_noise": lambda clean, image: _difference(clean, image).std(),
    "gaussian_blur": lambda clean, image: -_high_frequency(image),
    "motion_blur": lambda clean, image: -_high_frequency(image),
    "downscale": lambda clean, image: -_high_frequency(image),
    "jpeg": lambda clean, image: np.abs(_difference(clean, image)).mean(),
    "brightness": lambda clean, image: image.mean(),
    "contrast": lambda clean, image: -image.std(),
    "fog": lambda clean, image: image.mean(),
    "occlusion": lambda clean, image: ((image == 0).all(-1) & (clean != 0).any(-1)).mean(),
}


def test_the_standard_suite_has_ten_corruptions_at_five_severities(standard):
    assert len(standard.names) >= 10
    assert set(standard.names) == set(STATISTICS)
    assert all(corruption.severities == 5 for corruption in standard.corruptions.values())
    assert len(standard.conditions()) == 5 * len(standard.names)


def test_severity_zero_is_the_identity(standard, photo):
    for name in standard.names:
        assert np.array_equal(standard.corrupt(photo, name, 0, "a"), photo), name


def test_severities_are_monotone_in_an_image_statistic(standard, photo):
    for name in standard.names:
        values = [
            STATISTICS[name](photo, standard.corrupt(photo, name, severity, "a"))
            for severity in range(6)
        ]
        assert all(a < b for a, b in itertools.pairwise(values)), (name, values)


def test_occlusion_covers_the_configured_share(standard, photo):
    shares = [
        STATISTICS["occlusion"](photo, standard.corrupt(photo, "occlusion", severity, "a"))
        for severity in range(1, 6)
    ]
    assert shares == pytest.approx([0.04, 0.09, 0.16, 0.25, 0.36], abs=0.01)


def test_the_same_seed_gives_the_same_corrupted_images(standard, photo):
    other_seed = CorruptionSuite(standard.corruptions, seed=standard.seed + 1)
    for name in standard.names:
        first = standard.corrupt(photo, name, 3, "a")
        assert np.array_equal(first, standard.corrupt(photo, name, 3, "a")), name
    noisy = standard.corrupt(photo, "gaussian_noise", 3, "a")
    assert not np.array_equal(noisy, other_seed.corrupt(photo, "gaussian_noise", 3, "a"))
    assert not np.array_equal(noisy, standard.corrupt(photo, "gaussian_noise", 3, "b"))


class _Photos(torch.utils.data.Dataset):
    """The eval dataset's interface: `names`, `transform(image=, mask=)`, items by index."""

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = images
        self.names = [f"img{i}" for i in range(len(images))]
        self.transform = lambda image, mask: {"image": image, "mask": mask}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = self.images[index]
        out = self.transform(image=image, mask=np.ones(image.shape[:2], np.uint8))
        return {**out, "name": self.names[index]}


def test_the_dataset_corrupts_images_only_whatever_the_order(standard, photo):
    photos = _Photos([photo, photo[::-1].copy(), photo[:, ::-1].copy()])
    corrupted = CorruptedDataset(photos, standard, "occlusion", 4)
    forward = [corrupted[i] for i in range(3)]
    backward = [corrupted[i] for i in reversed(range(3))][::-1]
    for a, b, clean in zip(forward, backward, photos.images, strict=True):
        assert np.array_equal(a["image"], b["image"])
        assert not np.array_equal(a["image"], clean)
        assert np.array_equal(a["mask"], np.ones(clean.shape[:2], np.uint8))
    assert all(np.array_equal(photos[i]["image"], photos.images[i]) for i in range(3))


def test_the_eval_dataset_is_corrupted_before_its_resize_and_masks_are_kept(
    standard, synthetic_root
):
    from segpets.data.datamodule import OxfordPetDataModule

    test = OxfordPetDataModule(root=str(synthetic_root), image_size=64).dataset("test")
    clean = test[0]
    same = CorruptedDataset(test, standard, "occlusion", 0)[0]
    occluded = CorruptedDataset(test, standard, "occlusion", 5)[0]
    assert torch.equal(same["image"], clean["image"])
    assert occluded["image"].shape == clean["image"].shape == (3, 64, 64)
    assert not torch.equal(occluded["image"], clean["image"])
    assert torch.equal(occluded["mask"], clean["mask"]) and occluded["name"] == clean["name"]
    assert torch.equal(test[0]["image"], clean["image"])  # the split's own dataset untouched


def test_an_unknown_corruption_is_a_config_error_listing_the_names(tmp_path):
    cfg, _ = eval_config(tmp_path, "x.ckpt", "corruptions=standard", "corruptions.select=[fogg]")
    with pytest.raises(ConfigError, match=r"unknown corruption 'fogg'.*gaussian_noise, shot_noise"):
        build_corruptions(cfg.corruptions)


def test_robustness_csv_clean_row_equals_evals_metrics(tiny_run, tmp_path):
    ckpt = tiny_run / "checkpoints" / "best.ckpt"
    # The tiny model's probabilities stay below 0.5: a lower threshold scores some pet.
    plain_cfg, overrides = eval_config(tmp_path / "plain", ckpt, "worst=0", "threshold=0.4")
    plain = evaluate(plain_cfg, overrides)
    cfg, overrides = eval_config(
        tmp_path / "bench", ckpt, "worst=0", "threshold=0.4", "corruptions=standard"
    )
    report = evaluate(cfg, overrides)
    assert plain["dice"] > 0
    run = tmp_path / "bench" / "run"

    table = read_table(run / "robustness.csv")
    assert table[0] == {
        "corruption": CLEAN,
        "severity": 0,
        "dice": pytest.approx(plain["dice"], abs=1e-12),
        "iou": pytest.approx(plain["iou"], abs=1e-12),
        "images": plain["images"],
    }
    assert report["dice"] == plain["dice"] and report["iou"] == plain["iou"]
    names = report["corruptions"]["names"]
    assert len(names) == 10 and len(table) == 1 + 5 * len(names)
    assert {(row["corruption"], row["severity"]) for row in table[1:]} == {
        (name, severity) for name in names for severity in range(1, 6)
    }
    assert all(row["images"] == 10 for row in table)

    corrupted = [row["dice"] for row in table[1:]]
    mean = sum(corrupted) / len(corrupted)
    assert report["mean_corruption_dice"] == pytest.approx(mean)
    assert report["relative_robustness"] == pytest.approx(mean / plain["dice"])
    assert set(report["corruption_dice"]) == set(names)
    assert json.loads((run / "metrics.json").read_text()) == report

    with open(run / "robustness_per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["name", "corruption", "severity", "dice", "iou"]
    assert len(rows) == 10 * len(table)
    for summary in table:
        dice = [
            float(row["dice"])
            for row in rows
            if row["corruption"] == summary["corruption"]
            and int(row["severity"]) == summary["severity"]
        ]
        assert sum(dice) / len(dice) == pytest.approx(summary["dice"], abs=1e-6)
    with Image.open(run / "robustness.png") as plot:
        assert plot.width > 400


def test_the_same_seed_gives_the_same_robustness_table(tiny_run, tmp_path):
    ckpt = tiny_run / "checkpoints" / "best.ckpt"
    tables = []
    for name, batch in (("a", 3), ("b", 2)):  # other batches: seeds follow the images
        select = "corruptions.select=[gaussian_noise,motion_blur,occlusion]"
        cfg, overrides = eval_config(
            tmp_path / name, ckpt, "split=val", "worst=0", "corruptions=standard", select,
            f"data.batch_size={batch}",
        )  # fmt: skip
        evaluate(cfg, overrides)
        tables.append((tmp_path / name / "run" / "robustness_per_image.csv").read_text())
    assert tables[0] == tables[1]


def test_an_unknown_corruption_exits_2_with_the_valid_names(tiny_run, tmp_path):
    result = run_segpets(
        "eval",
        f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}",
        "corruptions=standard",
        "corruptions.select=[gaussian_noise,snow]",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("segpets: error")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "'snow'" in errors[0]
    assert all(name in errors[0] for name in STATISTICS)
    assert "Traceback" not in result.stderr
