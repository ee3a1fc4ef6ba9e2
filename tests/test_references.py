"""The quoted library results: complete rows, and a table that names what it cannot quote."""

import pytest

from sslbook import references


def test_every_quoted_row_says_where_it_is_from_and_how_it_was_measured():
    for row in references.LIBRARY_RESULTS:
        assert row.source and row.protocol and row.hardware
        assert 0 < row.accuracy < 100
        assert row.epochs >= 100


def test_the_table_has_one_line_per_quoted_row_of_the_asked_methods():
    table = references.library_markdown(("SimSiam",))
    rows = [r for r in references.LIBRARY_RESULTS if r.method == "SimSiam"]
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)
    assert all("| SimSiam |" in line for line in lines[2:])
    assert "k-NN" in table and "linear probe" in table


def test_a_method_without_a_quoted_result_is_named():
    with pytest.raises(ValueError, match="no quoted result for DINO"):
        references.library_markdown(("SimCLR", "DINO"))
