"""Run the book's notebooks with parameters, refusing parameters a notebook does not declare.

papermill only warns when it is given a parameter that the notebook's ``parameters`` cell does
not define, and the run then silently ignores it; here that is an error that names the valid ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]  # passed on to the kernel's command line


class UnknownParameterError(ValueError):
    """A parameter that the notebook's ``parameters`` cell does not define."""


def notebook_parameters(path: str | os.PathLike) -> dict[str, str]:
    """The names and default values (as source text) of a notebook's ``parameters`` cell."""
    import papermill

    found = papermill.inspect_notebook(str(path))
    return {name: info["default"] for name, info in found.items()}


def check_parameters(path: str | os.PathLike, parameters: Mapping[str, object]) -> None:
    """Raise :class:`UnknownParameterError` if ``parameters`` has a name ``path`` lacks."""
    valid = notebook_parameters(path)
    unknown = sorted(set(parameters) - set(valid))
    if unknown:
        raise UnknownParameterError(
            f"{Path(path).name} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are: {', '.join(valid) or '(none)'}"
        )


def run_notebook(
    path: str | os.PathLike,
    output: str | os.PathLike | None = None,
    parameters: Mapping[str, object] | None = None,
    timeout: int | None = None,
) -> Path:
    """Execute a notebook with papermill after checking its parameters; returns the output path.

    The notebook runs in its own folder, like the book build runs it. ``output`` defaults to
    ``<name>.out.ipynb`` in the results folder. The kernel logs only errors: its start-up notes
    (e.g. ipykernel's warning that the local connection is not encrypted) would otherwise be the
    first lines a reader sees, above a failing cell's own message.
    """
    import papermill

    from sslbook.results import results_dir

    path = Path(path).resolve()
    parameters = dict(parameters or {})
    check_parameters(path, parameters)
    output = Path(output) if output else results_dir() / f"{path.stem}.out.ipynb"
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(path), str(output), parameters=parameters, cwd=str(path.parent),
        kernel_name="python3", execution_timeout=timeout, progress_bar=False,
        extra_arguments=KERNEL_ARGUMENTS,
    )  # fmt: skip
    return output
