"""Every notebook in notebooks/ executes in the smoke profile and writes a sane summary."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import nbformat
import pytest

import sslbook as sb
from sslbook.notebooks import UnknownParameterError, check_parameters, run_notebook

from .conftest import REPO, needs_data

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# What the tests pass to every notebook; each name must exist in every parameters cell.
SMOKE_PARAMETERS = {"profile": "smoke", "seed": 0}


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_well_formed(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs"
    assert "google.colab" in code[0].source, "first code cell installs the package on Colab"
    assert "parameters" in code[1].metadata.get("tags", []), "second code cell: parameters"
    assert "arxiv" in nb.cells[0].source.lower(), "the first cell cites the paper"
    assert "import *" not in "\n".join(c.source for c in code)
    # Heads and decoders draw their initial weights from the global generator: same seed, same run.
    assert "sb.seed_everything(seed)" in code[2].source, "the set-up cell seeds everything"
    # Colab readers are told which device was found and why this profile (sslbook.colab).
    assert "sb.colab.setup(profile)" in code[2].source, "the set-up cell calls sb.colab.setup"
    # A kernel-bound ipywidgets.interact is a still picture on the published page.
    assert "interact(" not in "\n".join(c.source for c in code), "use sb.widgets.explorer"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_test_parameter_exists_in_the_parameters_cell(path):
    check_parameters(path, SMOKE_PARAMETERS)


def test_unknown_parameter_is_an_error_naming_the_valid_ones(tmp_path):
    with pytest.raises(UnknownParameterError, match="profile, seed"):
        run_notebook(NOTEBOOKS[0], tmp_path / "out.ipynb", {"profil": "smoke"})


@needs_data
@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_profile(path, tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setenv("SSLBOOK_RESULTS", str(results))
    run_notebook(path, tmp_path / path.name, SMOKE_PARAMETERS, timeout=600)
    executed = nbformat.read(tmp_path / path.name, as_version=4)
    keep = os.environ.get("SSLBOOK_EXECUTED")  # CI builds the book from these executed copies
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / path.name, Path(keep) / path.name)
    figures = [
        output
        for cell in executed.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert figures, f"{path.name} showed no figure (is MPLBACKEND set to a non-inline backend?)"
    if path.stem in sb.pretext.TECHNIQUES:
        widgets = [
            output
            for cell in executed.cells
            for output in cell.get("outputs", [])
            if "sslbook-widget" in output.get("data", {}).get("text/html", "")
        ]
        assert widgets, f"{path.name} shows no kernel-free widget (sb.widgets.explorer)"
    summaries = list(results.glob("*-smoke-seed0.json"))
    if path.stem == "comparison":
        assert_comparison_table(summaries)
    elif path.stem in sb.pretext.TECHNIQUES:
        assert_chapter_summary(path, summaries)
    else:  # a page that uses the techniques (your own images) writes no summary of its own
        assert not summaries, f"{path.name} wrote {summaries}"


def assert_chapter_summary(path, summaries):
    assert len(summaries) == 1, f"{path.name} wrote {summaries}"
    summary = json.loads(summaries[0].read_text())
    assert summary["technique"] == path.stem
    assert summary["profile"] == "smoke" and summary["seed"] == 0
    for key in ("linear_probe", "knn"):
        for scores in (summary, summary["random_init"], summary["supervised"]):
            assert 0.0 <= scores[key] <= 1.0
    assert summary["pretrain_seconds"] > 0
    assert summary["images_per_second"] > 0 and math.isfinite(summary["images_per_second"])
    assert 0.0 <= summary["pretext_metric"]["value"] <= 1.0 or summary["pretext_metric"]["name"]


def assert_comparison_table(summaries):
    assert [p.name for p in summaries] == ["comparison-smoke-seed0.json"]
    table = json.loads(summaries[0].read_text())["summary"]
    assert set(table) == {*sb.pretext.TECHNIQUES, *sb.compare.BASELINES}
    for method, entry in table.items():
        mean, spread = entry["linear_probe"]
        assert 0.0 <= mean <= 1.0 and spread >= 0.0, method
        assert len(entry["seeds"]) >= 2, "the comparison reports at least two seeds"
