"""The repository keeps its promises: layout, README commands, CI entry point."""

import re

from .conftest import REPO


def _readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_commands_install_build_and_install_test():
    build, test = _readme_commands()
    assert "jupyter-book build" in build and "pip install" in build
    assert "pytest" in test and "pip install" in test
    assert "-c .ci/constraints.txt" in build and "-c .ci/constraints.txt" in test


def test_ci_runs_the_readme_test_command_verbatim():
    _, test = _readme_commands()
    assert test.strip() in (REPO / ".ci" / "run").read_text()


def test_top_level_layout():
    expected = {
        "book", "notebooks", "sslbook", "tests", "benchmarks", "_config.yml", "_toc.yml",
        "environment.yml", "pyproject.toml", "README.md",
    }  # fmt: skip
    tracked = {p.name for p in REPO.iterdir() if not p.name.startswith(".")}
    assert expected <= tracked
    assert (REPO / ".ci" / "run").exists()
