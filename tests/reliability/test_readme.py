"""README.md: its two opening commands, what CI runs, its length and its links into docs/;
every link between README.md and docs/*.md reaches its file and heading."""

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


DOCS = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (github-slugger): its text as rendered (code spans
    and link texts kept, markup dropped), lower case, punctuation dropped except - and _,
    each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, outside code blocks; a repeated heading's
    anchor gets -1, -2... as on GitHub."""
    found: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*#*$", line)
        if match:
            slug = base = github_slug(match.group(1))
            repeat = 0
            while slug in found:
                repeat += 1
                slug = f"{base}-{repeat}"
            found.add(slug)
    return found


def local_links() -> list[tuple[str, str]]:
    """(file, target) for every link from README.md or docs/*.md to a Markdown file of the
    repo or to an anchor (#heading), as written."""
    links = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if "://" not in target and (target.startswith("#") or ".md" in target):
                links.append((str(path.relative_to(REPO_ROOT)), target))
    return links


def test_github_slugs_as_github_writes_them():
    assert github_slug("Sweeps and reports") == "sweeps-and-reports"
    assert github_slug("One core of the AMD EPYC, limited to AVX2: the issue's machine speed") == (
        "one-core-of-the-amd-epyc-limited-to-avx2-the-issues-machine-speed"
    )
    assert github_slug("`model=smp` (optional)") == "modelsmp-optional"
    assert github_slug("Weights & biases") == "weights--biases"


@pytest.mark.parametrize(("source", "target"), local_links())
def test_links_reach_their_file_and_heading(source, target):
    path, _, anchor = target.partition("#")
    file = (REPO_ROOT / source).parent / path if path else REPO_ROOT / source
    assert file.is_file(), f"{source} links to {target}: no such file"
    if anchor:
        assert anchor in anchors(file), (
            f"{source} links to {target}: no such heading in {path or source}"
        )
