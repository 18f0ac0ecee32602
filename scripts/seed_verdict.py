"""The seed-level half of segpets.report's verdict, from per-seed test Dice alone.

For comparisons recorded as per-seed figures whose per-image score files are gone: the
seed-level test the report uses (paired t-test where both groups ran the same seeds,
Welch's otherwise), the seeds a group would need at the observed spread, and whether the
seed level supports a verdict on the configuration. The image level (the two-level
interval) needs the runs' test_per_image.csv files: run `python -m segpets.report` there.

    python scripts/seed_verdict.py --a 0.8398 0.8398 0.8362 --b 0.7995 0.8105 0.7917 --paired
"""

import argparse

from segpets import stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=float, nargs="+", required=True, help="group a, per seed")
    parser.add_argument("--b", type=float, nargs="+", required=True, help="group b, per seed")
    parser.add_argument(
        "--paired", action="store_true", help="a[i] and b[i] come from the same seed"
    )
    parser.add_argument(
        "--holm",
        type=int,
        default=1,
        help="comparisons in the family: p is multiplied by it (Bonferroni, Holm's bound for "
        "the smallest p; give every p of the family to segpets.stats.holm for the rest)",
    )
    args = parser.parse_args(argv)
    if args.paired and len(args.a) != len(args.b):
        parser.error(f"--paired needs as many a as b values, got {len(args.a)} and {len(args.b)}")
    difference = sum(args.a) / len(args.a) - sum(args.b) / len(args.b)
    test = stats.seed_test(args.a, args.b, args.paired)
    print(f"mean a - b over seeds: {difference:+.4f}")
    if test is None:
        print(
            "fewer than 2 seeds in a group: no seed-level test; a verdict on the trained models only"
        )
        return
    # Bonferroni: Holm's adjustment for the smallest p of the family, an upper bound otherwise.
    adjusted = min(1.0, test.p_value * args.holm)
    needed = stats.seeds_needed(difference, test.spread)
    level = (
        stats.CONFIGURATION
        if min(len(args.a), len(args.b)) >= stats.MIN_SEEDS
        else stats.TRAINED_MODELS
    )
    print(f"{test.test}: p = {test.p_value:.2g} (x{args.holm} comparisons: {adjusted:.2g})")
    print(
        f"seed spread: {', '.join(f'{s:.4f}' for s in test.spread)}; seeds a group needed: {needed}"
    )
    supported = adjusted < stats.ALPHA
    print(
        f"level: {level}; the seed level {'supports' if supported else 'does not support'} "
        f"a verdict{'' if level == stats.CONFIGURATION else ' (fewer than 3 seeds a group)'}"
    )


if __name__ == "__main__":
    main()
