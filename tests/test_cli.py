from sslbook.__main__ import _parse_value, main

from .conftest import REPO


def test_cli_rejects_unknown_parameter(capsys):
    code = main(["run", str(REPO / "notebooks" / "rotation.ipynb"), "-p", "epochs=3"])
    assert code == 2
    assert "has no parameter 'epochs'" in capsys.readouterr().err


def test_cli_parses_values():
    assert _parse_value("3") == 3
    assert _parse_value("None") is None
    assert _parse_value("gpu") == "gpu"
    assert _parse_value("'gpu'") == "gpu"
