"""Post-processing and test-time augmentation as part of a run: the test after training,
eval, predict, segpets.load and model folders all predict as the run says."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

import segpets
from segpets.errors import ConfigError
from segpets.eval import evaluate
from segpets.inference import postprocessed
from segpets.postprocess import LargestRegion
from segpets.predict import predict
from segpets.train import train
from tests.helpers import TINY_UNET, compose_train, tiny_run_overrides

LARGEST = {"_target_": "segpets.postprocess.LargestRegion", "fill_holes": True}


def two_pets() -> np.ndarray:
    """A 64 px mask: a 30 px square with a 4 px hole, a 6 px square apart from it, and a
    pixel touching the big square at a corner only."""
    mask = np.zeros((64, 64), dtype=bool)
    mask[5:35, 5:35] = True
    mask[15:19, 15:19] = False  # the hole
    mask[45:51, 45:51] = True  # the second region
    mask[35, 35] = True  # diagonal neighbour of (34, 34)
    return mask


def test_largest_region_keeps_the_biggest_region_with_its_holes_filled():
    kept = LargestRegion()(torch.from_numpy(two_pets())).numpy()
    expected = np.zeros((64, 64), dtype=bool)
    expected[5:35, 5:35] = True
    expected[35, 35] = True  # 8-connected: a corner joins it to the region
    assert (kept == expected).all()
    unfilled = LargestRegion(fill_holes=False)(torch.from_numpy(two_pets())).numpy()
    assert not unfilled[15:19, 15:19].any() and not unfilled[45:51, 45:51].any()


def test_largest_region_works_per_mask_and_keeps_shape_dtype_and_empty_masks():
    masks = torch.zeros(3, 1, 64, 64, dtype=torch.bool)
    masks[0, 0] = torch.from_numpy(two_pets())
    masks[2, 0, :10, :10] = True
    kept = LargestRegion()(masks)
    assert kept.shape == masks.shape and kept.dtype == torch.bool
    assert kept[0, 0].sum() == 30 * 30 + 1
    assert not kept[1].any()  # empty stays empty
    assert (kept[2] == masks[2]).all()  # one region without holes: unchanged


def test_postprocessed_probabilities_threshold_to_the_postprocessed_mask():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 1, 64, 64, generator=generator) * 0.4  # background everywhere
    probs[:, :, 5:35, 5:35] += 0.5  # a pet at >= 0.5, whose hole ...
    probs[:, :, 15:19, 15:19] = 0.1
    probs[:, :, 45:51, 45:51] = 0.8  # ... and a speck
    out = postprocessed(probs, 0.5, LargestRegion())
    expected = LargestRegion()(probs >= 0.5)
    assert ((out >= 0.5) == expected).all()
    changed = expected != (probs >= 0.5)
    assert changed.any()
    assert (out[~changed] == probs[~changed]).all()  # the other pixels keep their value
    assert (out[changed & expected] == 1).all() and (out[changed & ~expected] == 0).all()


@pytest.fixture
def red_ckpt(tmp_path, tiny_run) -> Path:
    """A checkpoint whose network calls red pixels pet (a 1x1 convolution, R - G), whose run
    post-processes with LargestRegion; and a 64 px photo of two red squares, one with a hole."""
    config = torch.load(
        tiny_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True
    )["segpets_config"]
    config["model"] = {
        "_target_": "torch.nn.Conv2d",
        "in_channels": 3,
        "out_channels": 1,
        "kernel_size": 1,
    }
    config["postprocess"] = LARGEST
    state = {
        "model.weight": torch.tensor([4.0, -4.0, 0.0]).view(1, 3, 1, 1),
        "model.bias": torch.zeros(1),
    }
    path = tmp_path / "red.ckpt"
    torch.save({"state_dict": state, "segpets_config": config}, path)
    photo = np.zeros((64, 64, 3), dtype=np.uint8)
    photo[..., 1] = 200  # green: background
    photo[two_pets()] = (220, 20, 20)
    Image.fromarray(photo).save(tmp_path / "two.png")
    return path


def regions(mask: np.ndarray) -> int:
    return ndimage.label(mask > 0, structure=np.ones((3, 3)))[1]


def test_predict_and_segpets_load_post_process_as_the_run_did(red_ckpt, tmp_path):
    photo = tmp_path / "two.png"
    masks, summaries = {}, {}
    for name, extra in (("run", []), ("none", ["postprocess=none"])):
        overrides = [f"ckpt_path={red_ckpt}", f"input={photo}", f"output_dir={tmp_path / name}"]
        cfg = compose_train(tmp_path / f"cfg_{name}", [*overrides, *extra], config_name="predict")
        summaries[name] = predict(cfg, [*overrides, *extra])
        masks[name] = np.asarray(Image.open(tmp_path / name / "masks" / "two.png"))
    assert regions(masks["none"]) == 2 and not masks["none"][16, 16]
    assert regions(masks["run"]) == 1 and masks["run"][16, 16] == 255
    assert summaries["run"]["postprocess"] == "LargestRegion(fill_holes=True)"
    assert summaries["none"]["postprocess"] is None

    segmenter = segpets.load(red_ckpt)
    assert "postprocess=LargestRegion(fill_holes=True)" in repr(segmenter)
    assert (segmenter.predict(str(photo)) == masks["run"]).all()
    folder = segmenter.save(tmp_path / "folder")
    contract = json.loads((folder / "normalization.json").read_text())
    assert contract["prediction"]["postprocess"] == "LargestRegion(fill_holes=True)"
    assert "LargestRegion(fill_holes=True)" in (folder / "README.md").read_text()
    assert (segpets.load(folder).predict(str(photo)) == masks["run"]).all()


@pytest.mark.slow
def test_the_test_after_training_predicts_as_eval_does_with_the_runs_options(
    synthetic_root, tmp_path
):
    overrides = [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=1",
                 "trainer.precision=32-true", "tta=hflip", "postprocess=largest_region"]  # fmt: skip
    metrics = train(compose_train(tmp_path / "train", overrides))
    ckpt = metrics["best_checkpoint"]
    assert metrics["test_prediction"] == {
        "tta": "hflip",
        "postprocess": "LargestRegion(fill_holes=True)",
    }

    def scored(name, *options):
        args = [f"ckpt_path={ckpt}", *options]
        return evaluate(compose_train(tmp_path / name, args, "eval"), args)

    run = scored("eval")
    assert run["tta"] == "hflip" and run["postprocess"] == "LargestRegion(fill_holes=True)"
    assert run["dice"] == pytest.approx(metrics["test"]["test/dice"], abs=1e-6)
    bare = scored("bare", "tta=none", "postprocess=none")
    assert bare["tta"] == "none" and bare["postprocess"] is None


def test_a_bad_tta_is_named_before_training(synthetic_root, tmp_path):
    cfg = compose_train(tmp_path, [*tiny_run_overrides(synthetic_root), *TINY_UNET, "tta=flip"])
    with pytest.raises(
        ConfigError, match=r"tta must be one of \['d4', 'hflip', 'hflip_scales', 'none'\]"
    ):
        train(cfg)
