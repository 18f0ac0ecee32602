"""README.md: its two opening commands, what CI runs, its length and its links into docs/."""

import re
import shlex
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
CI_RUN = REPO_ROOT / ".ci" / "run"
MAX_LINES = 200

QUICKSTART = "python3 -m pip install -e . && python3 -m segpets.train experiment=quickstart"
TESTS = 'python3 -m pip install -e ".[dev,export,sweep]" && python3 -m pytest'


def readme() -> str:
    return README.read_text(encoding="utf-8")


def first_bash_block(text: str) -> list[str]:
    """The non-empty lines of the first ```bash block."""
    match = re.search(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    assert match, "README.md has no ```bash block"
    return [line for line in match.group(1).splitlines() if line.strip()]


def words(command: str) -> list[str]:
    """A shell command as words, without pip's --quiet / -q (which changes no behaviour)."""
    return [word for word in shlex.split(command) if word not in ("--quiet", "-q")]


def ci_commands() -> list[list[str]]:
    """The python3 commands .ci/run runs, as words, in order."""
    commands = []
    for line in CI_RUN.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("python3 "):
            commands.append(words(line))
    return commands


def test_readme_opens_with_the_two_commands():
    assert first_bash_block(readme()) == [QUICKSTART, TESTS]


def test_second_command_is_what_ci_runs():
    install, test = (part.strip() for part in first_bash_block(readme())[1].split("&&"))
    assert ci_commands() == [words(install), words(test)]


def test_first_command_names_an_existing_experiment():
    train = first_bash_block(readme())[0].split("&&")[1]
    experiments = [w.split("=", 1)[1] for w in shlex.split(train) if w.startswith("experiment=")]
    assert experiments == ["quickstart"]
    assert (REPO_ROOT / "configs" / "experiment" / f"{experiments[0]}.yaml").is_file()


def test_readme_is_short():
    lines = readme().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines, at most {MAX_LINES}"


def docs_links() -> list[str]:
    """Every docs/*.md file README.md links to, without #anchors."""
    targets = re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)\s]*)?\)", readme())
    return sorted(set(targets))


def test_readme_links_to_docs():
    assert docs_links(), "README.md links to no docs/*.md file"


@pytest.mark.parametrize("target", docs_links())
def test_linked_docs_exist(target):
    assert (REPO_ROOT / target).is_file(), f"README.md links to {target}, which does not exist"
