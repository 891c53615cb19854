"""One look for every figure: a fixed colour per method, paper-sized fonts, PNG + PDF written atomically."""

from __future__ import annotations

import argparse
import io
import sys
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from benchmarks.results import atomic_write  # noqa: E402

#: method -> (colour, label). A method has the same colour in every figure (Okabe-Ito / tab palette, readable
#: in greyscale print).
METHODS: dict[str, tuple[str, str]] = {
    "lloyd": ("#D55E00", "Lloyd / GDQ (ours)"),
    "uniform": ("#0072B2", "uniform (MSE-optimal step)"),
    "uniform_maxabs": ("#56B4E9", "uniform (max-abs)"),
    "log2": ("#009E73", "log2 (INQ-style)"),
    "ttq": ("#CC79A7", "TTQ"),
    "twn": ("#E69F00", "TWN"),
    "lqnet": ("#7F3C8D", "LQ-Net"),
    "apot": ("#11A579", "APoT"),
    "hefan": ("#3969AC", "He & Fan"),
    "lsq": ("#80BA5A", "LSQ"),
    "yang": ("#A5AA99", "Yang et al."),
    "admm": ("#6F4E37", "ADMM"),
    "lat": ("#F2B701", "LAT"),
}
#: Colours for methods not listed above (a plugin's), picked by a stable hash of the name.
EXTRA_COLORS = ("#555555", "#882255", "#44AA99", "#117733", "#AA4499", "#332288", "#DDCC77", "#661100")

#: Figure 4 compares weight types, not methods: their own fixed colours.
WEIGHT_TYPE_COLORS: dict[str, str] = {
    "simulated": "#0072B2",
    "measured": "#D55E00",
    "measured_no_nats": "#999999",
}

QUOTED_HATCH = "///"
QUOTED_LABEL = "quoted from paper"

plt.rcParams.update(
    {
        "font.size": 9,
        "axes.titlesize": 9,
        "axes.labelsize": 9,
        "legend.fontsize": 8,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "figure.dpi": 150,
        "savefig.bbox": "tight",
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)


def color(method: str) -> str:
    if method in METHODS:
        return METHODS[method][0]
    return EXTRA_COLORS[zlib.crc32(method.encode()) % len(EXTRA_COLORS)]


def label(method: str) -> str:
    return METHODS[method][1] if method in METHODS else method


def save(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write `name.png` and `name.pdf` atomically, close `fig`, return the paths."""
    written = []
    for fmt in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt)
        written.append(atomic_write(Path(out_dir) / f"{name}.{fmt}", buffer.getbuffer()))
    plt.close(fig)
    return written


def common_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options of every figure command: --scale --results --out."""
    from benchmarks.experiments import SCALES

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--scale", default="proxy", choices=SCALES, help="which scale's records to plot")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results store root")
    parser.add_argument("--out", type=Path, default=Path("figures/out"), help="where PNG and PDF files go")
    return parser


def cli(
    render: Callable[..., Iterable[Path]], prog: str, doc: str, argv: list[str] | None, tables: bool = False
) -> int:
    """The command line of the modules that render one result set: --scale --results --out [--tables];
    exit 2 with one line when the store lacks what they read."""
    parser = common_parser(prog, doc.split("\n\n")[0])
    if tables:
        parser.add_argument("--tables", type=Path, default=Path("tables/out"), help="where tables go")
    args = parser.parse_args(argv)
    try:
        for path in render(args.results, args.scale, args.out, *((args.tables,) if tables else ())):
            print(f"wrote {path}")
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
