"""Command line: ``python -m sslbook run NOTEBOOK [-p name=value ...] [-o OUTPUT]``."""

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sslbook", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute a notebook with parameters (papermill)")
    run.add_argument("notebook")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("-o", "--output", help="where to write the executed notebook")
    args = parser.parse_args(argv)

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
    print(f"executed notebook written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
