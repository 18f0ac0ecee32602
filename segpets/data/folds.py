"""K-fold cross-validation and learning-curve subsets over any source's splits.

`data.folds=K data.fold=k`: the train+val pool (Oxford: trainval.txt; a folder: its train
and val stems) is split into K folds by `stratified_split` (segpets/data/folder.py), the
same seeded, foreground-share-stratified helper as a folder's split: stems ordered by their
mask's foreground share (ties by name), fold labels interleaved along that order and
shuffled with `data.fold_seed` among neighbours. Fold k is val, the others train; fold
sizes differ by at most one, and the test split is never read. The foreground share is
the source's `foreground_shares`: a folder's scan already holds it; for Oxford it is one
pass over the trainval trimaps (pet and border against all pixels, so the folds do not
depend on data.boundary); seconds on the 3,680 real ones. Unreadable samples (share
unknown) are spread over the folds as a stratum of their own and left out as always.

`data.train_fraction=f`: train on the first max(1, round(f * n)) of the n train stems
ordered by one permutation drawn with `data.train_fraction_seed` over the sorted stems, so
for one seed the 25 % subset lies inside the 50 % one. Val and test are untouched.

`data.exclude=FILE` (one stem a line; blank lines and lines starting with # are skipped;
the image column of `python -m segpets.audit`'s audit.csv, say): those stems leave the
train split and the val split (a wrong label would misguide checkpoint selection and early
stopping, and its val Dice, out-of-fold ones included, would measure the label), applied
last, so that folds and train-fraction subsets are drawn as without it. The test split is
never changed: listed test stems stay and are counted (`excluded()`, which train records in
metrics.json). FILE is read when train or val is first needed, so that eval and predict of
the test split run where FILE is not.

Nothing depends on file-system order or hash randomisation: stems are sorted before any
draw, and draws use numpy's seeded generator.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segpets.data.dataset import Source
from segpets.data.folder import stratified_split
from segpets.errors import ConfigError

UNKNOWN_SHARE = -1.0  # unreadable samples: a stratum of their own, before the empty masks


@dataclass(frozen=True)
class Resplit:
    """The data.folds / data.fold / data.train_fraction options, checked on creation."""

    folds: int | None = None
    fold: int | None = None
    fold_seed: int = 0
    train_fraction: float = 1.0
    train_fraction_seed: int = 0
    exclude: str | None = None

    def __post_init__(self) -> None:
        folds, fold = self.folds, self.fold
        for option, value in (
            ("data.fold_seed", self.fold_seed),
            ("data.train_fraction_seed", self.train_fraction_seed),
        ):
            if not _is_int(value):
                raise ConfigError(f"{option} must be an integer, got {value!r}")
        if folds is not None and (not _is_int(folds) or folds < 2):
            raise ConfigError(
                "data.folds must be an integer >= 2 (the number of folds) or null (the "
                f"layout's own train/val split), got {folds!r}"
            )
        if folds is None and fold is not None:
            raise ConfigError(
                f"data.fold={fold} needs data.folds, the number of folds (e.g. data.folds=5 "
                f"data.fold={fold}); or drop data.fold"
            )
        if folds is not None and fold is None:
            raise ConfigError(
                f"data.folds={folds} needs data.fold, the fold to validate on (0..{folds - 1})"
            )
        if folds is not None and (not _is_int(fold) or not 0 <= fold < folds):
            raise ConfigError(
                f"data.fold must be one of 0..{folds - 1} (the fold to validate on, of "
                f"data.folds={folds}), got {fold!r}"
            )
        fraction = self.train_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 < fraction <= 1
        ):
            raise ConfigError(
                "data.train_fraction must be a number in (0, 1] (the share of the train split "
                f"to train on; 1: all of it), got {fraction!r}"
            )
        if self.exclude is not None and (not isinstance(self.exclude, str) or not self.exclude):
            raise ConfigError(
                "data.exclude must be the path of a text file of stems to leave out of train "
                f"and val, one a line, or null, got {self.exclude!r}"
            )

    @property
    def active(self) -> bool:
        """Whether the options change the layout's splits at all."""
        return self.folds is not None or self.train_fraction != 1 or self.exclude is not None

    def describe(self) -> str:
        """The options in words, for split origins and messages."""
        parts = []
        if self.folds is not None:
            parts.append(
                f"fold {self.fold} of data.folds={self.folds} as val (data.fold_seed={self.fold_seed})"
            )
        if self.train_fraction != 1:
            parts.append(
                f"data.train_fraction={self.train_fraction:g} of train "
                f"(data.train_fraction_seed={self.train_fraction_seed})"
            )
        if self.exclude is not None:
            parts.append(f"without the stems of data.exclude={self.exclude}")
        return ", ".join(parts)


def read_stems(path: str) -> list[str]:
    """The stems of a data.exclude file, in order, once each."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise ConfigError(
            f"data.exclude={path}: cannot read it ({error.strerror or error}); give a text "
            "file of the stems to leave out of train and val, one a line"
        ) from None
    stems = (line.strip() for line in lines)
    return list(dict.fromkeys(stem for stem in stems if stem and not stem.startswith("#")))


def fold_assignment(shares: dict[str, float], folds: int, seed: int) -> dict[str, int]:
    """{stem: fold} over every stem of `shares`, stratified by share; sizes differ by <= 1."""
    total = len(shares)
    counts = [total // folds + (index < total % folds) for index in range(folds)]
    labels = [str(index) for index in range(folds)]
    split = stratified_split(shares, [1 / folds] * folds, seed, labels, counts=counts)
    return {stem: int(label) for label in labels for stem in split[label]}


def nested_subset(names: list[str], fraction: float, seed: int) -> list[str]:
    """The first max(1, round(fraction * n)) of `names` in one seeded order of the sorted
    names, kept in their given order: for one seed, a smaller fraction is a subset."""
    ordered = sorted(set(names))
    order = np.random.default_rng(seed).permutation(len(ordered))
    keep = max(1, round(fraction * len(ordered)))
    chosen = {ordered[index] for index in order[:keep]}
    return [name for name in names if name in chosen]


class ResplitSource(Source):
    """A layout's `Source` with train and val re-drawn by a `Resplit` (module docstring);
    everything else, test included, is the layout's."""

    def __init__(self, layout: Source, resplit: Resplit) -> None:
        self.layout = layout
        self.resplit = resplit
        self.root = Path(layout.root)
        self.kind = layout.kind
        self._splits: dict[str, list[str]] | None = None
        self._folds: dict[str, int] = {}
        self._excluded: dict[str, int] = {}

    def splits(self) -> dict[str, list[str]]:
        """{"train": stems, "val": stems} (computed once)."""
        if self._splits is None:
            self._splits = self._draw()
        return self._splits

    def fold_of(self) -> dict[str, int]:
        """{stem: fold} over the whole pool; empty without data.folds."""
        self.splits()
        return dict(self._folds)

    def _draw(self) -> dict[str, list[str]]:
        resplit = self.resplit
        train, val = self.layout.split_names("train"), self.layout.split_names("val")
        if resplit.folds is not None:
            pool = sorted(set(train) | set(val))
            if len(pool) < resplit.folds:
                raise ConfigError(
                    f"data.folds={resplit.folds} needs at least {resplit.folds} train+val images "
                    f"to split, but {self.layout.split_origin('train')} and its val split list "
                    f"{len(pool)}: lower data.folds"
                )
            known = self.layout.foreground_shares(pool)
            shares = {stem: known.get(stem, UNKNOWN_SHARE) for stem in pool}
            self._folds = fold_assignment(shares, resplit.folds, resplit.fold_seed)
            train = [stem for stem in pool if self._folds[stem] != resplit.fold]
            val = [stem for stem in pool if self._folds[stem] == resplit.fold]
        if resplit.train_fraction != 1:
            train = nested_subset(train, resplit.train_fraction, resplit.train_fraction_seed)
        if resplit.exclude is not None:
            stems = set(read_stems(resplit.exclude))
            self._excluded = {
                "listed": len(stems),
                "train": sum(stem in stems for stem in train),
                "val": sum(stem in stems for stem in val),
            }
            train = [stem for stem in train if stem not in stems]
            val = [stem for stem in val if stem not in stems]
        return {"train": train, "val": val}

    def excluded(self) -> dict[str, Any] | None:
        """With data.exclude: {"file", "listed", "train", "val", "test_kept"}: the stems the
        file lists, those left out of train and of val, and those kept in test. Else None."""
        if self.resplit.exclude is None:
            return None
        self.splits()
        stems = set(read_stems(self.resplit.exclude))
        test = self.layout.split_names("test")
        return {
            "file": self.resplit.exclude,
            **self._excluded,
            "test_kept": sum(stem in stems for stem in test),
        }

    # ---------------------------------------------------------------- Source methods

    def split_names(self, split: str) -> list[str]:
        if split == "test":
            return self.layout.split_names(split)
        if split not in self.splits():
            return self.layout.split_names(split)  # the layout's error for a bad split
        return list(self.splits()[split])

    def split_origin(self, split: str) -> str:
        origin = self.layout.split_origin(split)
        return origin if split == "test" else f"{origin}, {self.resplit.describe()}"

    def check(self, name: str) -> str | None:
        return self.layout.check(name)

    def image_path(self, name: str) -> Path:
        return self.layout.image_path(name)

    def mask_path(self, name: str) -> Path:
        return self.layout.mask_path(name)

    def load_image(self, name: str) -> np.ndarray:
        return self.layout.load_image(name)

    def raw_mask(self, name: str) -> np.ndarray:
        return self.layout.raw_mask(name)

    def to_mask(self, raw: np.ndarray) -> np.ndarray:
        return self.layout.to_mask(raw)

    def native_mask(self, name: str) -> np.ndarray:
        return self.layout.native_mask(name)

    def foreground_shares(self, names: list[str]) -> dict[str, float]:
        return self.layout.foreground_shares(names)

    def cached_names(self) -> list[str]:
        return self.layout.cached_names()

    def cache_key(self) -> dict[str, Any]:
        return self.layout.cache_key()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
