"""The repository keeps its promises: layout, README commands, CI entry points, Colab links."""

import re

import nbformat
import yaml

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


def test_github_workflow_runs_the_readme_test_command_verbatim():
    _, test = _readme_commands()
    assert test.strip() in (REPO / ".github" / "workflows" / "book.yml").read_text()


def test_top_level_layout():
    expected = {
        "book", "notebooks", "sslbook", "tests", "benchmarks", "_config.yml", "_toc.yml",
        "environment.yml", "pyproject.toml", "README.md",
    }  # fmt: skip
    tracked = {p.name for p in REPO.iterdir() if not p.name.startswith(".")}
    assert expected <= tracked
    assert (REPO / ".ci" / "run").exists()


def test_colab_buttons_and_install_cells_point_at_the_books_repository():
    """The rocket button opens a notebook on Colab, whose first cell installs the package from
    ``repository.url``: one URL, so the book and its notebooks cannot drift apart."""
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    colab, repository = config["launch_buttons"]["colab_url"], config["repository"]["url"]
    assert colab.startswith("https://colab.research.google.com")
    assert repository.startswith("https://github.com/")
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        installs = re.findall(r"git\+([^\s\"'@#]+)", first.source)
        assert installs == [repository], f"{path.name}'s Colab cell installs from {installs}"
    github = repository.removeprefix("https://github.com/")
    assert (
        f"{colab}/github/{github}/blob/{config['repository']['branch']}/"
        in (REPO / "README.md").read_text()
    ), "the README's Colab link opens another repository"
