"""The plain PyTorch loop that `experiment=budget` is measured against (issue 15's baseline).

ResNet34-UNet from scratch, 128 px, batch 8, Adam at a constant 1e-3, BCE + Dice, float32,
no augmentation, no validation: epochs over the train split until the time budget is
spent (checked after every step), then the last weights are scored on the test split.
It reads the data and computes the scores with segpets' own dataset and metrics, so its
test set, resizing and Dice are exactly those of `python -m segpets.train` at 128 px.

    python scripts/plain_loop.py --data-root DIR --minutes 10 --seed 1 --out RUN_DIR

RUN_DIR gets metrics.json and test_per_image.csv in the layout of a training run, so
`python -m segpets.report` groups and pairs it with segpets runs on the same test set.
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from segpets.cost import forward_gflops
from segpets.data import OxfordPetDataModule
from segpets.losses import BCELoss, DiceLoss, WeightedSum
from segpets.metrics import BinarySegmentationMetrics, per_image_scores
from segpets.models import ResNetUNet
from segpets.precision import machine
from segpets.scores import TEST_SCORES, write_scores

IMAGE_SIZE, BATCH_SIZE, LR = 128, 8, 1e-3


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(model, loader, minutes: float) -> tuple[int, int, float]:
    """Epochs of plain training until `minutes` have passed; (epochs, steps, seconds)."""
    terms = {"bce": BCELoss(), "dice": DiceLoss(smooth=1.0)}
    loss_fn = WeightedSum(terms, {"bce": 1.0, "dice": 1.0})
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    started, steps, epochs = time.perf_counter(), 0, 0
    model.train()
    while time.perf_counter() - started < minutes * 60:
        for batch in loader:
            loss = loss_fn(model(batch["image"]), batch["mask"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - started >= minutes * 60:
                break
        else:
            epochs += 1
            print(f"epoch {epochs}: {steps} steps, {time.perf_counter() - started:.0f} s")
    return epochs, steps, time.perf_counter() - started


@torch.no_grad()
def test(model, loader) -> tuple[dict[str, float], list[dict]]:
    """Dataset-level metrics and per-image rows of the test split (threshold 0.5)."""
    model.eval()
    metric, rows = BinarySegmentationMetrics(threshold=0.5), []
    for batch in loader:
        logits = model(batch["image"])
        metric.update(logits, batch["mask"])
        scores = {k: v.tolist() for k, v in per_image_scores(logits, batch["mask"]).items()}
        for index, name in enumerate(batch["name"]):
            rows.append({"name": name, **{k: v[index] for k, v in scores.items()}})
    results = {f"test/{name}": float(value) for name, value in metric.compute().items()}
    return results, sorted(rows, key=lambda row: row["name"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True, help="Oxford-IIIT Pet layout")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True, help="the run folder to write")
    args = parser.parse_args()

    seed_everything(args.seed)
    root = str(Path(args.data_root).resolve())
    data = OxfordPetDataModule(root, image_size=IMAGE_SIZE, batch_size=BATCH_SIZE, num_workers=0)
    train_loader = DataLoader(data.dataset("train"), batch_size=BATCH_SIZE, shuffle=True)
    test_loader = DataLoader(data.dataset("test"), batch_size=BATCH_SIZE)
    model = ResNetUNet(encoder="resnet34")

    epochs, steps, seconds = train(model, train_loader, args.minutes)
    results, rows = test(model, test_loader)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_scores(out / TEST_SCORES, rows)
    metrics = {
        "seed": args.seed,
        "precision": "32-true",
        "machine": machine(),
        "choices": {"recipe": "plain_loop"},
        "overrides": [
            "recipe=plain_loop",
            f"data.root={root}",
            f"minutes={args.minutes:g}",
            f"seed={args.seed}",
        ],
        "parameters": sum(p.numel() for p in model.parameters()),
        "gflops_forward": round(forward_gflops(model, IMAGE_SIZE), 3),
        "train_seconds": round(seconds, 2),
        "epochs_trained": epochs,
        "global_step": steps,
        "test": results,
        "test_data": {
            "dataset": "segpets.data.OxfordPetDataModule",
            "root": root,
            "split": "test",
            "boundary": "foreground",
            "images": len(rows),
        },
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"test Dice (mean per image) {results['test/dice']:.4f} after {epochs} epochs, {steps} steps"
    )


if __name__ == "__main__":
    main()
