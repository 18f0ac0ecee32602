"""Augmentation presets and data configs: they build, and masks stay aligned and clean."""

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image, ImageFilter

from segpets.constants import IGNORE_INDEX
from segpets.data import OxfordPetDataModule, SyntheticPets
from segpets.data.augment import augment_preset
from segpets.data.oxford_pet import load_trimap, trimap_to_mask
from segpets.data.transforms import FastElasticTransform, train_transform

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
PRESETS = sorted(p.stem for p in (CONFIG_DIR / "augment").glob("*.yaml"))


def test_presets_exist():
    assert PRESETS == ["basic", "none", "strong"]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_outputs_the_training_size(name: str):
    transform = train_transform(augment_preset(name, 48), 48)
    for height, width in [(30, 70), (200, 90)]:
        out = transform(
            image=np.zeros((height, width, 3), np.uint8), mask=np.zeros((height, width), np.uint8)
        )
        assert out["image"].shape == (3, 48, 48) and out["mask"].shape == (48, 48)


def interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood is all pet or all background: away from the outline,
    where linear (image) and nearest (mask) interpolation legitimately differ."""
    image = Image.fromarray(mask)
    low = np.asarray(image.filter(ImageFilter.MinFilter(3)))
    high = np.asarray(image.filter(ImageFilter.MaxFilter(3)))
    return (low == high) & (mask != IGNORE_INDEX)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("pet", ["Abyssinian_1", "Abyssinian_10"])
def test_preset_keeps_image_and_mask_aligned(name: str, pet: str, sample_root: Path):
    """A white pet on black, made from a real trimap, must still match its mask afterwards."""
    trimap = load_trimap(sample_root / "annotations" / "trimaps" / f"{pet}.png")
    mask = trimap_to_mask(trimap, "ignore")
    image = np.repeat((trimap_to_mask(trimap, "foreground") * 255)[..., None], 3, axis=2)
    transforms = augment_preset(name, 64)

    def agreement(image_seed: int, mask_seed: int) -> float:
        out_image = A.Compose(transforms, seed=image_seed)(image=image, mask=mask)["image"]
        out_mask = A.Compose(transforms, seed=mask_seed)(image=image, mask=mask)["mask"]
        assert out_mask.dtype == np.uint8 and out_mask.shape == (64, 64)
        assert set(np.unique(out_mask).tolist()) <= {0, 1, IGNORE_INDEX}
        judged = interior(out_mask)
        return ((out_image.mean(axis=2) > 127) == (out_mask == 1))[judged].mean()

    for seed in range(6):
        assert agreement(seed, seed) > 0.99, f"{name}, seed {seed}: image and mask disagree"
    if name != "none":  # the check has teeth: unrelated draws do not pass it
        assert np.mean([agreement(seed, seed + 1) for seed in range(6)]) < 0.97


def displacement_stats(
    transform: A.ElasticTransform, height: int, width: int, lag: int
) -> tuple[float, float, bool]:
    """Over 20 seeded draws, away from the borders: the mean std of the x and y
    displacements, their mean correlation with themselves `lag` pixels along, and whether
    x and y displacements were always equal."""
    transform.set_random_seed(0)
    margin = 4 * lag
    sizes, correlations, same = [], [], True
    for _ in range(20):
        maps = transform.get_params_dependent_on_data({"shape": (height, width)}, {})
        dx = (maps["map_x"] - np.arange(width))[margin:-margin, margin:-margin]
        dy = (maps["map_y"] - np.arange(height)[:, None])[margin:-margin, margin:-margin]
        same &= np.allclose(dx, dy, atol=1e-4)
        sizes += [dx.std(), dy.std()]
        correlations += [
            np.corrcoef(dx[:, :-lag].ravel(), dx[:, lag:].ravel())[0, 1],
            np.corrcoef(dy[:-lag].ravel(), dy[lag:].ravel())[0, 1],
        ]
    return float(np.mean(sizes)), float(np.mean(correlations)), same


@pytest.mark.parametrize(
    ("height", "width", "alpha", "sigma", "options"),
    [
        (256, 256, 50, 5, {}),  # the strong preset at the default size
        (200, 300, 80, 8, {}),
        (256, 192, 30, 3, {"same_dxdy": True}),
        (256, 256, 50, 5, {"noise_distribution": "uniform"}),
    ],
)
def test_fast_elastic_draws_the_field_albumentations_draws(
    height: int, width: int, alpha: float, sigma: int, options: dict
):
    """FastElasticTransform displaces pixels as far and as smoothly as albumentations'
    ElasticTransform with the same options (the strong preset swapped one for the other)."""
    ours = displacement_stats(
        FastElasticTransform(alpha=alpha, sigma=sigma, p=1, **options), height, width, sigma
    )
    theirs = displacement_stats(
        A.ElasticTransform(alpha=alpha, sigma=sigma, p=1, **options), height, width, sigma
    )
    assert ours[0] == pytest.approx(theirs[0], rel=0.1)
    assert ours[1] == pytest.approx(theirs[1], abs=0.03)
    assert ours[2] == theirs[2] == bool(options.get("same_dxdy"))


def test_fast_elastic_warps_image_and_mask_reproducibly():
    """The same seed warps the same way; the mask keeps its values and follows the image."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = 255
    mask = (image[..., 0] // 255).astype(np.uint8)
    mask[0] = IGNORE_INDEX

    def warp(seed: int) -> dict[str, np.ndarray]:
        elastic = FastElasticTransform(alpha=300, sigma=4, p=1)
        return A.Compose([elastic], seed=seed)(image=image, mask=mask)

    first, again, other = warp(0), warp(0), warp(1)
    assert np.array_equal(first["image"], again["image"])
    assert np.array_equal(first["mask"], again["mask"])
    assert not np.array_equal(first["mask"], other["mask"])
    assert not np.array_equal(first["mask"], mask)  # it moved pixels
    assert set(np.unique(first["mask"]).tolist()) <= {0, 1, IGNORE_INDEX}
    judged = interior(first["mask"])
    assert ((first["image"][..., 0] > 127) == (first["mask"] == 1))[judged].mean() > 0.99


def test_geometric_fills_of_the_mask_are_background():
    """Rotating an all-pet square must uncover background (0), never another value."""
    mask = np.ones((64, 64), np.uint8)
    image = np.full((64, 64, 3), 200, np.uint8)
    rotate = A.Compose([A.Affine(rotate=(40, 40), p=1)], seed=0)
    out = rotate(image=image, mask=mask)
    assert set(np.unique(out["mask"]).tolist()) == {0, 1}
    assert out["mask"][0, 0] == 0 and np.all(out["image"][0, 0] == 0)


def test_eval_splits_are_not_augmented(synthetic_root: Path):
    datamodule = OxfordPetDataModule(
        str(synthetic_root), image_size=32, num_workers=0, augment=augment_preset("strong", 32)
    )
    val = datamodule.dataset("val")
    assert torch.equal(val[0]["image"], val[0]["image"])
    assert [type(t).__name__ for t in val.transform.transforms] == [
        "Resize",
        "Normalize",
        "ToTensorV2",
    ]


def synthetic_data(tmp_path: Path, augment: str, *overrides: str):
    """The composed config and the fit-ready data module of data=synthetic at 32 px."""
    overrides = (
        "+data=synthetic",
        f"+augment={augment}",
        f"+paths.data_dir={tmp_path}",
        "data.image_size=32",
        "data.num_workers=0",
        "data.synthetic.num_trainval=20",
        "data.synthetic.num_test=5",
        *overrides,
    )
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(overrides=list(overrides))
    datamodule = instantiate(cfg.data, augment=cfg.augment.train)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return cfg, datamodule


def test_data_configs_compose_and_build(tmp_path: Path):
    cfg, datamodule = synthetic_data(tmp_path, "basic")
    assert cfg.data.val_every == 10 and cfg.data.boundary == "foreground"  # from oxford_pet
    assert isinstance(datamodule.synthetic, SyntheticPets)
    assert datamodule.root == tmp_path / "synthetic-pets-seed0-n20-5"
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape[1:] == (3, 32, 32) and batch["mask"].dtype == torch.uint8


@pytest.mark.parametrize("name", PRESETS)
def test_train_size_sets_the_training_crops_and_eval_stays_at_image_size(name: str, tmp_path: Path):
    _, datamodule = synthetic_data(tmp_path, name, "data.train_size=24")
    assert next(iter(datamodule.train_dataloader()))["image"].shape[1:] == (3, 24, 24)
    assert next(iter(datamodule.val_dataloader()))["mask"].shape[1:] == (1, 32, 32)


def test_oxford_pet_config_points_at_the_data_dir(tmp_path: Path):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(overrides=["+data=oxford_pet", f"+paths.data_dir={tmp_path}"])
    datamodule = instantiate(cfg.data)
    assert datamodule.root == tmp_path / "oxford-iiit-pet"
    assert (datamodule.image_size, datamodule.batch_size, datamodule.download) == (256, 16, False)
    assert datamodule.std == (0.229, 0.224, 0.225)
