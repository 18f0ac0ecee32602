"""The docs agree with the code: every table of measurements names its machine, and every
`key=value` of a `python -m segpets.<app>` command in README.md and docs/*.md composes."""

import re
import shlex
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MEASUREMENTS = ["docs/results.md", "docs/performance.md", "docs/budget.md"]

MACHINE = re.compile(
    r"\b(AMD EPYC|EPYC|Intel Xeon|Xeon|Ryzen|Core i[3579]|Apple M\d|NVIDIA|H100|H200|A100|"
    r"L4|T4|GPU)\b"
)
"""A CPU or GPU by name. Figures whose machine is unknown are re-measured or removed: the word
`unverified` does not name a machine."""
DECIMAL = re.compile(r"\d\.\d")


def tables(path: Path) -> list[tuple[int, list[str]]]:
    """(line index of the first row, the rows) of each Markdown table outside code blocks."""
    found: list[tuple[int, list[str]]] = []
    fenced = False
    lines = path.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("|"):
            if found and found[-1][0] + len(found[-1][1]) == index:
                found[-1][1].append(line)
            else:
                found.append((index, [line]))
    return found


def machine_lines(lines: list[str], start: int) -> list[str]:
    """What may name the machine of a table starting at line `start`: the heading above it
    at each level (its section, the section that holds that...) and the lines of its own
    section before it."""
    named: list[str] = []
    own_section = True
    level = 7
    for line in reversed(lines[:start]):
        heading = re.match(r"(#{1,6})\s", line)
        if heading and len(heading.group(1)) < level:
            level = len(heading.group(1))
            named.append(line)
            own_section = False
        elif own_section:
            named.append(line)
    return named


def measurement_tables() -> list[tuple[str, int, list[str]]]:
    """(file, line number, rows) of each table whose body holds a decimal figure."""
    found = []
    for name in MEASUREMENTS:
        for start, rows in tables(REPO_ROOT / name):
            if any(DECIMAL.search(row) for row in rows[2:]):
                found.append((name, start + 1, rows))
    return found


def test_the_rule_finds_the_tables_and_their_machines(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Results\n\n## AMD EPYC, 2 cores\n\n### Quickstart\n\n| a | b |\n|---|---|\n"
        "| 1.5 | 2 |\n\n## Elsewhere\n\nText.\n\n| a |\n|---|\n| 0.9 |\n\n"
        "```bash\n| not a table 1.0 |\n```\n"
    )
    assert [(start, len(rows)) for start, rows in tables(doc)] == [(6, 3), (14, 3)]
    lines = doc.read_text().splitlines()
    assert "## AMD EPYC, 2 cores" in machine_lines(lines, 6)
    assert not any(MACHINE.search(line) for line in machine_lines(lines, 14))
    assert not MACHINE.search("## 2-core x86-64 CPU (unverified: the model name was not recorded)")


TABLES = measurement_tables()


@pytest.mark.parametrize(
    ("name", "line", "rows"), TABLES, ids=[f"{name}:{line}" for name, line, _ in TABLES]
)
def test_every_table_of_measurements_names_its_machine(name, line, rows):
    """A table's machine is named in the table (a machine column), in the headings above it
    at each level, or in the lines of its own section above it."""
    lines = (REPO_ROOT / name).read_text(encoding="utf-8").splitlines()
    assert any(MACHINE.search(text) for text in [*rows, *machine_lines(lines, line - 1)]), (
        f"{name}:{line}: a table of figures with no CPU or GPU named in it, in its headings or "
        "in its section above it (re-measure or remove figures whose machine is unknown)"
    )


DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"python3? -m segpets\.(\w+)(.*)")
FLAGS_WITH_A_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn"}


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of the code blocks of a Markdown file, `\\`-continued lines
    joined onto the first, and of the code spans in its text that hold a whole command."""
    found: list[tuple[int, str]] = []
    fenced = continued = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif fenced and continued:
            found[-1] = (found[-1][0], found[-1][1] + " " + line.strip().removesuffix("\\"))
        elif fenced:
            found.append((number, line.removesuffix("\\")))
        else:
            found += [(number, span) for span in re.findall(r"`(python3? -m [^`]+)`", line)]
        continued = fenced and line.endswith("\\")
    return found


def first_choice(word: str) -> str:
    """A docs shorthand or a sweep as one override: `tta=none|hflip` and `seed=1,2,3` (outside
    brackets) compose as their first value."""
    key, _, value = word.partition("=")
    depth = 0
    for index, char in enumerate(value):
        depth += (char in "[{(") - (char in "]})")
        if depth == 0 and char in "|,":
            return f"{key}={value[:index]}"
    return word


def documented_overrides() -> list[tuple[str, str, list[str]]]:
    """(where, app, overrides) of every `python -m segpets.<app>` command of a Hydra app
    (one with configs/<app>.yaml) in the code blocks of README.md and docs/*.md."""
    found = []
    for path in DOCS:
        for number, line in code_lines(path):
            match = COMMAND.search(line)
            if not match or not (REPO_ROOT / "configs" / f"{match.group(1)}.yaml").is_file():
                continue
            rest = re.split(r"\s(?:&&|\|\||;|\|)\s|\s#", match.group(2))[0]
            words = shlex.split(re.sub(r"<[^<>]*>", "X", rest))  # <date>, <run 0>: a name
            if "--config-dir" in words or "-cd" in words:
                continue  # the user's own configs
            overrides = []
            for previous, word in zip(["", *words], words, strict=False):
                if word.endswith("=..."):  # a value left out: `model=...`
                    continue
                if "=" in word and not word.startswith("-") and previous not in FLAGS_WITH_A_VALUE:
                    overrides.append(first_choice(word))
            where = f"{path.relative_to(REPO_ROOT)}:{number}"
            found.append((where, match.group(1), overrides))
    return found


COMMANDS = documented_overrides()


def test_the_commands_are_found_as_written(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Prose, `python -m segpets.train model=x` inline\n```bash\n"
        "OMP_NUM_THREADS=1 python -m segpets.train -m model=unet,resnet34_unet seed=1,2,3 \\\n"
        "  'sections=[plain,smp]' --cfg job  # a comment=1\n"
        "python -m segpets.eval ckpt_path=<run 0>/best.ckpt tta=none|hflip && ls a=b\n```\n"
    )
    lines = code_lines(doc)
    assert [number for number, _ in lines] == [1, 3, 5]
    assert lines[0][1] == "python -m segpets.train model=x"
    words = shlex.split(lines[1][1].split("#")[0])
    assert [first_choice(word) for word in words if "=" in word][1:] == [
        "model=unet",
        "seed=1",
        "sections=[plain,smp]",
    ]


@pytest.mark.parametrize(
    ("where", "app", "overrides"), COMMANDS, ids=[where for where, _, _ in COMMANDS]
)
def test_every_documented_override_composes(where, app, overrides):
    """A renamed key or group option fails here: each command's overrides compose with its
    app's config as `python -m segpets.<app> ... --cfg job` would."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        try:
            compose(app, overrides=overrides, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as error:
            pytest.fail(f"{where}: python -m segpets.{app} {' '.join(overrides)}: {error}")
