import json

import pytest

import sslbook as sb
from sslbook.results import REQUIRED_KEYS, read_summaries, write_summary


def test_profiles_and_env_override(monkeypatch):
    monkeypatch.delenv("SSLBOOK_PROFILE", raising=False)
    assert sb.get_profile().name == "cpu"
    monkeypatch.setenv("SSLBOOK_PROFILE", "smoke")
    assert sb.get_profile().name == "smoke"
    assert sb.get_profile("gpu").name == "gpu"  # an explicit name wins
    assert sb.get_profile("smoke", epochs=3).epochs == 3
    assert sb.get_profile("smoke", epochs=None).epochs == sb.PROFILES["smoke"].epochs


def test_unknown_profile_or_setting_names_the_valid_ones(monkeypatch):
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        sb.get_profile("huge")
    monkeypatch.setenv("SSLBOOK_PROFILE", "tiny")
    with pytest.raises(ValueError, match=r"SSLBOOK_PROFILE"):
        sb.get_profile()
    with pytest.raises(ValueError, match="batch_size"):
        sb.get_profile("smoke", epoch=3)


def _summary(**changes):
    summary = {
        "technique": "rotation", "profile": "smoke", "seed": 0,
        "pretext_metric": {"name": "rotation accuracy", "value": 0.5},
        "linear_probe": 0.3, "knn": 0.25,
        "random_init": {"linear_probe": 0.2, "knn": 0.2},
        "supervised": {"linear_probe": 0.4, "knn": 0.35},
        "pretrain_seconds": 1.0, "images_per_second": 100.0,
    }  # fmt: skip
    return summary | changes


def test_summary_round_trip(tmp_path):
    path = write_summary(_summary(), tmp_path)
    assert path.name == "rotation-smoke-seed0.json"
    loaded = json.loads(path.read_text())
    assert set(REQUIRED_KEYS) <= set(loaded)
    assert "code_version" in loaded
    assert read_summaries(tmp_path)[0]["linear_probe"] == 0.3


def test_bad_summaries_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        write_summary({"technique": "x"}, tmp_path)
    with pytest.raises(ValueError, match="accuracy in"):
        write_summary(_summary(knn=1.7), tmp_path)
