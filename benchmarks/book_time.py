"""How long does the whole book take to execute here, and how much memory does it need?

Executes every notebook of ``notebooks/`` with papermill, as the book build does: each in a
fresh kernel, in its own folder, with the given profile. Unless ``--keep-cache``, the cache
(``$SSLBOOK_CACHE``: checkpoints, rendered scenes...) and the results folder
(``$SSLBOOK_RESULTS``) point at new empty temporary folders, so every chapter trains from scratch
instead of loading an earlier run.
Notebooks run in alphabetical order, ``comparison.ipynb`` last: it reuses the supervised
baseline that the chapters trained.

Prints each notebook's wall time (kernel start included) and its kernel's peak memory (the
largest process's peak RSS: the kernel, or a worker it started), then the total and the maximum.

    python benchmarks/book_time.py --profile cpu --json book_time.json
    python benchmarks/book_time.py --profile smoke --notebooks notebooks/rotation.ipynb
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import traceback
from datetime import date
from pathlib import Path

from benchtools import in_fresh_process, machine, peak_rss_bytes

from sslbook.config import PROFILES
from sslbook.data import CACHE_ENV, DATA_ENV, data_root
from sslbook.notebooks import run_notebook
from sslbook.results import RESULTS_ENV

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LAST = "comparison.ipynb"  # reuses the results of all the other chapters
CELL_TIMEOUT = 3600  # seconds, as in the book's _config.yml


def notebook_order(paths: list[Path]) -> list[Path]:
    """Alphabetical, except the comparison chapter, which runs last."""
    return sorted(paths, key=lambda path: (path.name == LAST, path.name))


def use_fresh_folders(root: Path) -> None:
    """Point the cache and the results at empty folders under ``root`` for this process and the
    kernels it starts. The data stay where they are: without ``$SSLBOOK_DATA`` they live in
    the cache, and would otherwise be downloaded again."""
    os.environ.setdefault(DATA_ENV, str(data_root()))
    for name, folder in ((CACHE_ENV, "cache"), (RESULTS_ENV, "results")):
        os.environ[name] = str(root / folder)
        (root / folder).mkdir()


def execute(path: str, output: str, parameters: dict, timeout: int) -> dict:
    """Run one notebook and measure it; runs in a fresh process (see ``main``), so that the
    peak memory of its children is the peak of this notebook's kernel alone."""
    started = time.perf_counter()
    try:
        run_notebook(path, output, parameters, timeout=timeout)
        error = None
    except Exception as failure:  # report it in the table and go on with the next notebook
        traceback.print_exc()
        error = f"{type(failure).__name__}: {_last_line(str(failure))}"
    return {
        "notebook": Path(path).name,
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_bytes(children=True) / 2**20,
        "error": error,
    }


def _last_line(text: str) -> str:
    """The line of a long papermill error that says what went wrong."""
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def format_table(rows: list[dict], wall: float) -> str:
    """Per-notebook seconds and peak memory, then the total and the maximum."""
    width = max(len("total"), *(len(row["notebook"]) for row in rows))
    lines = [f"{'notebook':{width}s}  {'seconds':>8s}  {'peak MB':>8s}"]
    for row in rows:
        failed = f"  FAILED: {row['error']}" if row["error"] else ""
        lines.append(
            f"{row['notebook']:{width}s}  {row['seconds']:8.1f}  {row['peak_rss_mb']:8.0f}{failed}"
        )
    total = sum(row["seconds"] for row in rows)
    peak = max(row["peak_rss_mb"] for row in rows)
    lines.append(f"{'total':{width}s}  {total:8.1f}  {peak:8.0f}")
    lines.append(f"wall time of this script, process starts included: {wall:.1f} s")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=list(PROFILES))
    parser.add_argument("--notebooks", nargs="+", type=Path, default=None,
                        help="default: every notebook in notebooks/")  # fmt: skip
    parser.add_argument("--keep-cache", action="store_true",
                        help="keep the usual cache and results (loads earlier runs)")  # fmt: skip
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the figures here")  # fmt: skip
    parser.add_argument("--keep-outputs", type=Path, default=None, metavar="DIR",
                        help="keep the executed notebooks in DIR")  # fmt: skip
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    notebooks = notebook_order(args.notebooks or list(NOTEBOOKS.glob("*.ipynb")))
    parameters = {"profile": args.profile, "seed": 0}
    print(f"{machine()}; profile {args.profile}, {len(notebooks)} notebooks", flush=True)
    rows = []
    if args.keep_outputs:
        args.keep_outputs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sslbook-book-time-") as tmp:
        if not args.keep_cache:
            use_fresh_folders(Path(tmp))
        started = time.perf_counter()
        for path in notebooks:
            output = (args.keep_outputs or Path(tmp)) / f"{path.stem}.out.ipynb"
            row = in_fresh_process(execute, str(path), str(output), parameters, args.timeout)
            print(f"  {row['notebook']}: {row['seconds']:.1f} s", flush=True)
            rows.append(row)
        wall = time.perf_counter() - started
    print(format_table(rows, wall))
    if args.json:
        summary = {"date": date.today().isoformat(), "machine": machine(),
                   "profile": args.profile, "keep_cache": args.keep_cache, "notebooks": rows,
                   "total_seconds": sum(row["seconds"] for row in rows), "wall_seconds": wall,
                   "peak_rss_mb": max(row["peak_rss_mb"] for row in rows)}  # fmt: skip
        args.json.write_text(json.dumps(summary, indent=1))
    if any(row["error"] for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
