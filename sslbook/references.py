"""Published small-scale results of the modern methods, quoted (never reproduced here).

Two well-kept self-supervised libraries publish CIFAR-10 tables for one ResNet-18 trained by
every method, and these are the nearest published neighbours of the book's runs: the same images,
far larger networks and budgets. They are quoted with their protocol, because a k-NN accuracy and
a linear-probe accuracy are not the same measurement, and neither is a number about our backbone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LibraryResult:
    """One row of a library's published CIFAR-10 table."""

    source: str  # which table
    method: str
    backbone: str
    epochs: int
    batch_size: int | None  # None: the table does not give it
    accuracy: float  # % on the CIFAR-10 test set
    protocol: str
    hardware: str  # what the table says about the machine and the time


_LIGHTLY = "lightly, docs 'Benchmarks', CIFAR-10 table"
_LIGHTLY_PROTOCOL = "k-NN (k = 200), best epoch"
_SOLO = "solo-learn, README, 'Results: CIFAR-10'"
_SOLO_PROTOCOL = "linear probe (Acc@1)"
_SOLO_HARDWARE = "not given in the table"

#: The rows the book quotes: lightly's runs of 200 epochs (batches of 128 and 512) and of 800
#: (batches of 512), and solo-learn's 1,000-epoch runs, for the methods the book teaches (BYOL
#: is the SimSiam chapter's variant).
LIBRARY_RESULTS = (
    LibraryResult(_LIGHTLY, "SimCLR", "ResNet-18 (CIFAR stem)", 200, 128, 84.7,
                  _LIGHTLY_PROTOCOL, "97.7 min, 1.5 GB of GPU memory (GPU not named)"),
    LibraryResult(_LIGHTLY, "SimSiam", "ResNet-18 (CIFAR stem)", 200, 128, 81.9,
                  _LIGHTLY_PROTOCOL, "97.3 min, 1.6 GB of GPU memory (GPU not named)"),
    LibraryResult(_LIGHTLY, "BYOL", "ResNet-18 (CIFAR stem)", 200, 128, 86.9,
                  _LIGHTLY_PROTOCOL, "121.9 min, 1.6 GB of GPU memory (GPU not named)"),
    LibraryResult(_LIGHTLY, "SimCLR", "ResNet-18 (CIFAR stem)", 200, 512, 84.8,
                  _LIGHTLY_PROTOCOL, "87.1 min, 4.9 GB of GPU memory (GPU not named)"),
    LibraryResult(_LIGHTLY, "SimSiam", "ResNet-18 (CIFAR stem)", 200, 512, 76.4,
                  _LIGHTLY_PROTOCOL, "87.8 min, 5.0 GB of GPU memory (GPU not named)"),
    LibraryResult(_LIGHTLY, "BYOL", "ResNet-18 (CIFAR stem)", 200, 512, 86.8,
                  _LIGHTLY_PROTOCOL, "108.3 min, 5.6 GB of GPU memory (GPU not named)"),
    LibraryResult(_LIGHTLY, "SimCLR", "ResNet-18 (CIFAR stem)", 800, 512, 87.9,
                  _LIGHTLY_PROTOCOL, "331.1 min, 4.9 GB of GPU memory (GPU not named)"),
    LibraryResult(_LIGHTLY, "SimSiam", "ResNet-18 (CIFAR stem)", 800, 512, 90.4,
                  _LIGHTLY_PROTOCOL, "333.7 min, 5.1 GB of GPU memory (GPU not named)"),
    LibraryResult(_LIGHTLY, "BYOL", "ResNet-18 (CIFAR stem)", 800, 512, 91.0,
                  _LIGHTLY_PROTOCOL, "400.9 min, 5.4 GB of GPU memory (GPU not named)"),
    LibraryResult(_SOLO, "SimCLR", "ResNet-18", 1000, None, 90.74, _SOLO_PROTOCOL,
                  _SOLO_HARDWARE),
    LibraryResult(_SOLO, "SimSiam", "ResNet-18", 1000, None, 90.51, _SOLO_PROTOCOL,
                  _SOLO_HARDWARE),
    LibraryResult(_SOLO, "BYOL", "ResNet-18", 1000, None, 92.58, _SOLO_PROTOCOL,
                  _SOLO_HARDWARE),
)  # fmt: skip


def library_markdown(methods: tuple[str, ...] = ("SimCLR", "SimSiam", "BYOL")) -> str:
    """The quoted rows of ``methods`` as a Markdown table, labelled as quoted.

    Raises:
        ValueError: a method no quoted table has a row for (the known ones are listed).
    """
    known = sorted({row.method for row in LIBRARY_RESULTS})
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"no quoted result for {', '.join(unknown)}; quoted: {', '.join(known)}")
    lines = [
        "| quoted from | method | backbone | epochs | batch | CIFAR-10 test accuracy | "
        "protocol | time, hardware |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in LIBRARY_RESULTS:
        if row.method in methods:
            batch = "not given" if row.batch_size is None else f"{row.batch_size}"
            lines.append(
                f"| {row.source} | {row.method} | {row.backbone} | {row.epochs:,} | {batch} | "
                f"{row.accuracy:g} % | {row.protocol} | {row.hardware} |"
            )
    return "\n".join(lines)
