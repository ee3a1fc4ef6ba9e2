"""Command line.

- ``python -m sslbook run NOTEBOOK [-p name=value ...] [-o OUTPUT] [--traceback]``: execute a
  chapter with parameters (papermill), refusing parameters the notebook does not declare. When a
  cell fails, the notebook's own message comes first; ``--traceback`` adds the full one.
- ``python -m sslbook shards [--out DIR] [--shards K] [--root DIR]``: write CIFAR-10 as K
  compressed uint8 shards per split, small enough to copy to a machine without the dataset.
"""

from __future__ import annotations

import argparse
import ast
import sys

from sslbook.notebooks import UnknownParameterError, run_notebook


def _parse_value(text: str):
    """``3`` → int, ``0.5`` → float, ``None`` → None, anything else stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _run(args, parser) -> int:
    parameters = {}
    for item in args.parameter:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"parameter {item!r} must look like name=value")
        parameters[name] = _parse_value(value)
    try:
        output = run_notebook(args.notebook, args.output, parameters)
    except UnknownParameterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a cell raised: its own message first, not papermill's stack
        if type(error).__name__ != "PapermillExecutionError":
            raise
        print(f"error in {args.notebook}, cell {error.exec_count}: {error.ename}: "
              f"{error.evalue}", file=sys.stderr)  # fmt: skip
        if args.traceback:
            print("".join(error.traceback), file=sys.stderr)
        else:
            print("(the executed notebook keeps the full traceback; --traceback prints it)",
                  file=sys.stderr)  # fmt: skip
        return 1
    print(f"executed notebook written to {output}")
    return 0


def _shards(args) -> int:
    from sslbook.data import write_shards

    for path in write_shards(args.out, args.shards, args.root):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sslbook",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute a notebook with parameters (papermill)")
    run.add_argument("notebook")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("-o", "--output", help="where to write the executed notebook")
    run.add_argument("--traceback", action="store_true", help="print a failing cell's traceback")
    shards = commands.add_parser("shards", help="write CIFAR-10 as compressed uint8 shards")
    shards.add_argument("--out", help="folder to write cifar10-shards/ into (default: data root)")
    shards.add_argument("--shards", type=int, default=4, help="shards per split (default 4)")
    shards.add_argument("--root", help="data root holding the PNG folders (default: as loaders)")
    args = parser.parse_args(argv)
    if args.command == "shards":
        return _shards(args)
    return _run(args, parser)


if __name__ == "__main__":
    sys.exit(main())
