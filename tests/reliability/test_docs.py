"""The docs agree with the code: every table of measurements names its machine, and every
`key=value` of a `python -m segpets.<app>` command in README.md and docs/*.md composes."""

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MEASUREMENTS = ["docs/results.md", "docs/performance.md", "docs/budget.md"]

MACHINE = re.compile(
    r"\b(AMD EPYC|EPYC|Intel Xeon|Xeon|Ryzen|Core i[3579]|Apple M\d|NVIDIA|H100|H200|A100|"
    r"L4|T4|GPU)\b|unverified"
)
"""A CPU or GPU by name, or the word `unverified` for figures whose machine is unknown."""
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
        "in its section above it (or 'unverified' where the machine is unknown)"
    )
