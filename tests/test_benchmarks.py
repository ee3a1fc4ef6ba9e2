"""The benchmark scripts' quick parts: run order, tables, which peak bounds which precision.

The measurements themselves are not run here: they take minutes and only mean something on an
otherwise idle machine.
"""

import sys
from pathlib import Path

import torch

from .conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import each other by file name

import book_time
import probe_sweep
import techniques
import throughput


def test_comparison_runs_last_and_the_rest_alphabetically():
    names = ["rotation.ipynb", "comparison.ipynb", "context.ipynb", "colorization.ipynb"]
    order = book_time.notebook_order([Path("notebooks") / name for name in names])
    assert [p.name for p in order] == [
        "colorization.ipynb", "context.ipynb", "rotation.ipynb", "comparison.ipynb"
    ]  # fmt: skip


def test_book_time_table_sums_seconds_and_takes_the_largest_memory():
    rows = [
        {"notebook": "a.ipynb", "seconds": 10.0, "peak_rss_mb": 900.0, "error": None},
        {"notebook": "b.ipynb", "seconds": 5.5, "peak_rss_mb": 1200.0, "error": "ValueError: x"},
    ]
    total = book_time.format_table(rows, wall=16.0).splitlines()[-2].split()
    assert total == ["total", "15.5", "1200"]
    assert "FAILED: ValueError: x" in book_time.format_table(rows, wall=16.0)


def test_techniques_table_aligns_rows_and_lists_failures():
    row = {key: 1.0 for _, key, _ in techniques.COLUMNS} | {"technique": "rotation"}
    table = techniques.format_table([row, {"technique": "jigsaw", "error": "OSError: gone"}])
    lines = table.splitlines()
    assert len({len(line) for line in lines[:2]}) == 1  # heading and row equally wide
    assert lines[-1] == "jigsaw: FAILED, OSError: gone"


def test_fp32_training_is_bounded_by_the_tf32_peak_only_on_cuda():
    assert throughput.peak_name(torch.device("cpu"), "fp32") == "fp32"
    assert throughput.peak_name(torch.device("cpu"), "bf16") == "bf16"
    cuda_fp32 = throughput.peak_name(torch.device("cuda"), "fp32")
    assert cuda_fp32 == ("tf32" if torch.backends.cudnn.allow_tf32 else "fp32")


def test_tf32_switch_is_restored():
    before = torch.backends.cuda.matmul.allow_tf32
    with throughput.tf32_matmuls(torch.device("cuda"), enabled=not before):
        assert torch.backends.cuda.matmul.allow_tf32 is (not before)
    assert torch.backends.cuda.matmul.allow_tf32 is before


def test_probe_sweep_reads_overrides_in_json_or_python_spelling():
    values = ["0.2", "3", "true", "False", "None", "camera"]
    assert [probe_sweep.parse_value(v) for v in values] == [0.2, 3, True, False, None, "camera"]
