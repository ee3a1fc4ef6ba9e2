"""The CI link checker finds broken internal links and anchors, and nothing else."""

import importlib.util
import subprocess
import sys

from .conftest import REPO

SCRIPT = REPO / ".ci" / "check_links.py"


def _check_links():
    """The script as a module (it lives in .ci/, outside the package)."""
    spec = importlib.util.spec_from_file_location("check_links", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _site(root):
    """Two pages: every kind of good link, one missing page and one missing anchor."""
    (root / "book").mkdir(parents=True)
    (root / "_static").mkdir()
    (root / "_static" / "style.css").write_text("")
    (root / "_static" / "macros.html").write_text('<link href="{{ pathto(x) }}">')  # a template
    (root / "index.html").write_text(
        '<a href="book/page.html#results">good</a> <a href="#top" id="top">self</a>'
        '<a href="book/">folder</a> <link href="_static/style.css?digest=1">'
        '<a href="https://example.org/x.html">external</a> <a href="mailto:a@b.c">mail</a>'
        '<img src="data:image/png;base64,AAAA"> <a href="#">top</a>'
        '<a href="book/missing.html">broken</a>'
    )
    (root / "book" / "index.html").write_text('<a href="../index.html">up</a>')
    (root / "book" / "page.html").write_text(
        '<h2 id="results">Results</h2> <a href="page.html#nowhere">bad anchor</a>'
    )
    return root


def test_reports_exactly_the_broken_links(tmp_path):
    broken = _check_links().broken_links(_site(tmp_path))
    assert broken == [
        "book/page.html: page.html#nowhere (no id 'nowhere' there)",
        "index.html: book/missing.html (no such file)",
    ]


def test_command_line_fails_and_names_the_broken_link(tmp_path):
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(_site(tmp_path))], capture_output=True, text=True
    )
    assert run.returncode == 1
    assert "index.html: book/missing.html (no such file)" in run.stdout


def test_an_empty_build_is_an_error_not_a_pass(tmp_path):
    assert _check_links().main([str(tmp_path)]) == 2
