"""`python -m segpets.audit RUNS_DIR [KEY=VALUE ...]`: labels that trained models contradict.

Ranks the images whose label disagrees most with a confident consensus of the trained
models. Options: split=auto, top=12, device=auto, batch_size=8 (below).

RUNS_DIR is a multirun dir or any folder of training runs of one dataset. Each run's tested
checkpoint (metrics.json's scored/best checkpoint, else the one in its checkpoints/)
predicts pet probabilities, as eval does (the run's size, normalisation, autocast,
test-time augmentation and post-processing):

- fold runs (data.folds, with splits/folds.csv): each fold's model predicts its own val
  fold's images, out-of-fold, so every train+val image is predicted by the models that
  never trained on it (one per seed), images left out with data.exclude included;
- other runs (several seeds): every model predicts the same split, `split=` (test unless
  named; train, val or test; fold runs take one too instead of out-of-fold).

An optimized_metric=oof/dice job's RUN/fold_k folders are fold runs; RUN itself (no
metrics.json) is listed as left out.

Per image, the consensus is the mean probability over the models that predicted it, and
each label is scored against it (segpets/consensus.py: Dice, confidence, score = (1 - Dice)
* confidence, and the kind of disagreement: inverted, shifted, missing part, extra region,
other), at the first run's image size. Writes into RUNS_DIR: audit.csv (every image, the
highest score first) and audit.png (the `top` highest, 0 for none: photo, label and
consensus overlaid), and prints the top entries; `device` and `batch_size` are where and in
how many images at a time the models predict. Its stems can go to `data.exclude=FILE`
(segpets/data/folds.py) to train without them.

Exit status 2, with one message: no runs under RUNS_DIR, a run without a checkpoint, runs of
different datasets (both named), fold runs mixed with other runs, a bad option.
"""

import csv
import heapq
import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segpets.checkpointing import write_atomically
from segpets.cli import USER_ERROR, check_runs_folder, runs_folder_command
from segpets.consensus import COLUMNS, Disagreement, audit_image, rank
from segpets.errors import SegpetsError
from segpets.runs import find_runs
from segpets.studies import read_folds, read_val_scores
from segpets.trained import TrainedModel, load_for_inference
from segpets.visual import denormalize, overlay, panel_rows, to_uint8

OPTIONS = {"split": "auto", "top": "12", "device": "auto", "batch_size": "8"}
SPLITS = ("auto", "train", "val", "test")
PRINTED = 10
CSV_NAME = "audit.csv"
PNG_NAME = "audit.png"


# --- Runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRun:
    """A finished training run: its tested checkpoint, its dataset and, with data.folds, its
    fold and the fold of every train+val stem."""

    path: Path
    checkpoint: Path
    dataset: str | None
    """metrics.json's test_data dataset and root; None where it has none (test=false): the
    checkpoint's run config says them once loaded."""
    root: str | None
    fold: int | None = None
    folds: dict[str, int] | None = None

    @property
    def is_fold_run(self) -> bool:
        return self.fold is not None and self.folds is not None


def _checkpoint(run: Path, metrics: dict[str, Any]) -> Path:
    """The checkpoint train tested (metrics.json's scored, then best one: the file of that name
    in the run's checkpoints/, so that a moved or copied run uses its own, else the path
    named), else the last in name order of checkpoints/ other than last.ckpt."""
    folder = run / "checkpoints"
    for key in ("scored_checkpoint", "best_checkpoint"):
        if metrics.get(key):
            named = Path(metrics[key])
            for candidate in (folder / named.name, named):
                if candidate.is_file():
                    return candidate
    found = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    found = [path for path in found if path.name != "last.ckpt"] or found
    if not found:
        raise SegpetsError(
            f"{run} has no checkpoint (metrics.json names "
            f"{metrics.get('scored_checkpoint') or metrics.get('best_checkpoint')}, and "
            f"{folder} holds no .ckpt): the audit needs each run's trained model to predict. "
            "Point it at a folder of runs trained with checkpoints"
        )
    return found[-1]


def _config(run: Path) -> Any:
    path = run / ".hydra" / "config.yaml"
    return OmegaConf.load(path) if path.is_file() else None


def read_run(run: Path) -> AuditRun | None:
    """The run at `run`, or None where it is not a finished training run (no metrics.json,
    or eval's output: metrics.json without best_checkpoint)."""
    metrics_file = run / "metrics.json"
    if not metrics_file.is_file():
        return None
    metrics = json.loads(metrics_file.read_text())
    if "best_checkpoint" not in metrics and not (run / "checkpoints").is_dir():
        return None
    config = _config(run)
    test_data = metrics.get("test_data") or {}
    root = test_data.get("root")
    fold = OmegaConf.select(config, "data.fold", default=None) if config is not None else None
    folds = read_folds(run)
    if fold is None and folds is not None:
        fold = next((f for _, f in (read_val_scores(run) or {}).values()), None)
    return AuditRun(
        path=run,
        checkpoint=_checkpoint(run, metrics),
        dataset=test_data.get("dataset"),
        root=None if root is None else os.path.abspath(str(root)),
        fold=fold,
        folds=folds,
    )


def read_runs(root: Path) -> tuple[list[AuditRun], list[Path]]:
    """The finished training runs under root, and the run folders left out (unfinished)."""
    runs, left_out = [], []
    for path in find_runs(root):
        run = read_run(path)
        if run is None:
            left_out.append(path)
        else:
            runs.append(run)
    if not runs:
        raise SegpetsError(
            f"{root} holds no finished training run (a folder with metrics.json and "
            "checkpoints/, as python -m segpets.train leaves it): give a multirun dir or a "
            "folder of runs"
        )
    kinds = {run.is_fold_run for run in runs}
    if len(kinds) > 1:
        folded = next(run for run in runs if run.is_fold_run)
        plain = next(run for run in runs if not run.is_fold_run)
        raise SegpetsError(
            f"fold runs mixed with other runs: {folded.path} (data.fold={folded.fold}) and "
            f"{plain.path} (no folds); audit each kind's folder apart"
        )
    return runs, left_out


# --- Predicting --------------------------------------------------------------------------


@dataclass
class Model:
    """A run's trained model with its datamodule (for its transform and the source)."""

    run: AuditRun
    trained: TrainedModel
    datamodule: Any

    def inputs(self, image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        return self.datamodule.eval_transform(image=image, mask=mask)

    @torch.no_grad()
    def probabilities(self, batch: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """Pet probabilities (B, H, W) at `size`, float32."""
        trained = self.trained
        with trained.autocast():
            probs = trained.probabilities(batch.to(trained.device)).float()
        if tuple(probs.shape[-2:]) != size:
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        return probs[:, 0].cpu().numpy()


def load_models(runs: Sequence[AuditRun], device: str) -> list[Model]:
    """Each run's model; runs of different datasets (metrics.json's test_data, else the run
    config's data target and root) are an error naming two of them."""
    models: list[Model] = []
    for run in runs:
        config = OmegaConf.create(
            {"ckpt_path": str(run.checkpoint), "device": device, "threshold": None}
        )
        trained = load_for_inference(config)
        data = trained.run_config.data
        run = replace(
            run,
            dataset=run.dataset or str(data.get("_target_")),
            root=run.root or os.path.abspath(str(data.root)),
        )
        if models and (run.dataset, run.root) != (models[0].run.dataset, models[0].run.root):
            first = models[0].run
            raise SegpetsError(
                f"runs of different datasets: {first.path} ({first.dataset} at {first.root}) "
                f"and {run.path} ({run.dataset} at {run.root}); the audit compares models on "
                "the same images: give a folder of runs of one dataset"
            )
        datamodule = instantiate(data, augment=None)
        datamodule.prepare_data()
        models.append(Model(run, trained, datamodule))
    return models


def plan(models: Sequence[Model], split: str) -> dict[str, tuple[list[int], str]]:
    """{image: (the models that predict it, where)}: out-of-fold for fold runs with
    split=auto, else every model on `split` (auto: test)."""
    planned: dict[str, tuple[list[int], str]] = {}
    for index, model in enumerate(models):
        run = model.run
        if split == "auto" and run.is_fold_run:
            names = sorted(stem for stem, fold in run.folds.items() if fold == run.fold)
            where = f"fold {run.fold}"
        else:
            names = model.datamodule.dataset("test" if split == "auto" else split).names
            where = "test" if split == "auto" else split
        source = model.datamodule.source
        for name in names:
            if source.check(name) is None:
                planned.setdefault(name, ([], where))[0].append(index)
    return planned


def audit_images(
    models: Sequence[Model], planned: dict[str, tuple[list[int], str]], batch_size: int, top: int
) -> tuple[list[Disagreement], dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Every planned image's Disagreement, and for the `top` highest scores the pictures
    (photo RGB uint8, label, consensus) at the first model's size."""
    reference = models[0]
    source = reference.datamodule.source
    size = (reference.datamodule.image_size, reference.datamodule.image_size)
    by_models: dict[tuple[int, ...], list[str]] = {}
    for name, (indices, _) in sorted(planned.items()):
        by_models.setdefault(tuple(indices), []).append(name)
    entries: list[Disagreement] = []
    kept: list[tuple[float, str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
    for indices, names in by_models.items():
        for start in range(0, len(names), batch_size):
            chunk = names[start : start + batch_size]
            raw = [(source.load_image(name), source.native_mask(name)) for name in chunk]
            shown = [reference.inputs(image, mask) for image, mask in raw]
            predicted = []
            for index in indices:
                model = models[index]
                batch = torch.stack([model.inputs(image, mask)["image"] for image, mask in raw])
                predicted.append(model.probabilities(batch, size))
            for position, name in enumerate(chunk):
                label = shown[position]["mask"].numpy().astype(np.uint8)
                probabilities = [probs[position] for probs in predicted]
                entry = audit_image(name, label, probabilities, planned[name][1])
                entries.append(entry)
                photo = to_uint8(
                    denormalize(
                        shown[position]["image"][None].float(),
                        reference.datamodule.mean,
                        reference.datamodule.std,
                    )[0]
                )
                item = (entry.score, name, (photo, label, np.mean(probabilities, axis=0)))
                if len(kept) < top:
                    heapq.heappush(kept, item)
                elif top:
                    heapq.heappushpop(kept, item)
    return rank(entries), {name: pictures for _, name, pictures in kept}


# --- Writing -----------------------------------------------------------------------------


def write_csv(path: Path, entries: Sequence[Disagreement]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["rank", *COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows({"rank": number, **entry.row()} for number, entry in enumerate(entries, 1))
    write_atomically(path, text.getvalue().encode())


def write_png(
    path: Path,
    entries: Sequence[Disagreement],
    pictures: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    rows = []
    for number, entry in enumerate(entries, 1):
        if entry.name not in pictures:
            continue
        photo, label, mean = pictures[entry.name]
        caption = (
            f"{number}. {entry.name}  Dice {entry.dice:.2f}  confidence {entry.confidence:.2f}  "
            f"{entry.kind}"
        )
        rows.append((caption, [photo, overlay(photo, label == 1), overlay(photo, mean >= 0.5)]))
    picture = panel_rows(rows, ("photo", "label", "consensus of the models"))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    write_atomically(path, buffer.getvalue())


def summary(entries: Sequence[Disagreement], runs: Sequence[AuditRun], shown: int) -> str:
    """What the audit prints: the models, the kinds found, the top entries."""
    folds = sorted({run.fold for run in runs if run.is_fold_run})
    how = (
        f"out-of-fold over {len(folds)} folds" if folds and entries[0].where.startswith("fold")
        else f"on the {entries[0].where} split"
    )  # fmt: skip
    kinds: dict[str, int] = {}
    for entry in entries:
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    lines = [
        f"label audit: {len(entries)} images, {len(runs)} models {how}",
        "kinds: " + ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())),
        f"{'rank':>4}  {'image':<28} {'Dice':>6} {'conf':>6} {'score':>6}  kind",
    ]
    lines += [
        f"{number:>4}  {entry.name:<28} {entry.dice:>6.3f} {entry.confidence:>6.3f} "
        f"{entry.score:>6.3f}  {entry.kind}"
        for number, entry in enumerate(entries[:shown], 1)
    ]
    return "\n".join(lines)


def audit(
    root: str | Path,
    split: str = "auto",
    top: int = 12,
    device: str = "auto",
    batch_size: int = 8,
) -> dict[str, Any]:
    """Audit the runs under `root`; returns {"entries", "csv", "png", "summary"}."""
    root = Path(root)
    if split not in SPLITS:
        raise SegpetsError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    runs, left_out = read_runs(root)
    models = load_models(runs, device)
    planned = plan(models, split)
    if not planned:
        raise SegpetsError(f"the runs under {root} give no image to predict")
    entries, pictures = audit_images(models, planned, batch_size, top)
    write_csv(root / CSV_NAME, entries)
    written = {"csv": root / CSV_NAME, "png": None}
    if pictures:
        write_png(root / PNG_NAME, entries, pictures)
        written["png"] = root / PNG_NAME
    text = summary(entries, runs, PRINTED)
    if left_out:
        text += "\nleft out (unfinished or not a training run): " + ", ".join(map(str, left_out))
    return {"entries": entries, **written, "summary": text}


def _options(given: Sequence[str]) -> dict[str, Any]:
    options = dict(OPTIONS)
    for option in given:
        key, equals, value = option.partition("=")
        if not equals or key not in OPTIONS:
            raise SegpetsError(
                f"{option}: not an option of the audit; it takes "
                + ", ".join(f"{k}={v}" for k, v in OPTIONS.items())
            )
        options[key] = value
    for key in ("top", "batch_size"):
        minimum = 0 if key == "top" else 1
        if not options[key].isdigit() or int(options[key]) < minimum:
            raise SegpetsError(f"{key} must be an integer >= {minimum}, got {options[key]!r}")
        options[key] = int(options[key])
    return options


def main(argv: list[str] | None = None) -> None:
    folder, options = runs_folder_command(
        __doc__,
        "python -m segpets.audit",
        "KEY=VALUE",
        "split=auto|train|val|test (auto: out-of-fold for fold runs, else test), "
        "top=12 (images in audit.png), device=auto, batch_size=8",
        argv,
    )
    try:
        check_runs_folder(folder)
        result = audit(folder, **_options(options))
    except SegpetsError as error:
        print(f"segpets: error: {error}", file=sys.stderr)
        raise SystemExit(USER_ERROR) from None
    print(result["summary"])
    print("written: " + ", ".join(str(p) for p in (result["csv"], result["png"]) if p))


if __name__ == "__main__":
    sys.exit(main())
