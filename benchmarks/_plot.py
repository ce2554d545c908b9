"""Drawing the benchmarks' JSON results into one PNG (``run_all.py --plot``).

    python benchmarks/_plot.py JSON_DIR OUT.png

Needs matplotlib (the ``plot`` extra).  Each benchmark with a drawer in
:data:`PLOTTERS` and a ``NAME.json`` in the directory gets one panel.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import grid  # noqa: E402

__all__ = ["PlotError", "PLOTTERS", "require_matplotlib", "plot_results"]


class PlotError(Exception):
    """Plotting is impossible: matplotlib is missing, or there is nothing to draw."""


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the Agg backend; :class:`PlotError` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotError(f"--plot needs matplotlib ({exc}); install it with "
                        "pip install 'gridmux[plot]' (or pip install matplotlib)") from None
    return plt


def _plot_codec(ax: Any, d: Mapping[str, Any]) -> None:
    rows = d["results"]
    labels = [f"{r['op']} [{r.get('unit', '')}]" for r in rows]
    y = list(range(len(rows)))
    ax.barh([v - 0.2 for v in y], [r.get("pure") or 0 for r in rows], 0.4, label="pure")
    ax.barh([v + 0.2 for v in y], [r.get("cython") or 0 for r in rows], 0.4, label="compiled")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("throughput (log scale; unit per row)")
    ax.set_title("codec: pure vs compiled")
    ax.legend(fontsize=7)


def _plot_pool(ax: Any, d: Mapping[str, Any]) -> None:
    rows = d["pool"]
    x = list(range(len(rows)))
    for k, (key, label) in enumerate([("alloc_ns", "bytes alloc"), ("encode_ns", "encode_message"),
                                      ("pooled_copy_ns", "pooled + copy-out")]):
        ax.bar([v + (k - 1) * 0.27 for v in x], [r[key] for r in rows], 0.27, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r['size']:,} B" for r in rows], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("ns per message")
    ax.set_title("buffer pool: what it could save")
    ax.legend(fontsize=7)


def _plot_lines(ax: Any, cells: Sequence[Mapping[str, Any]], key: str, title: str) -> None:
    series: Dict[str, List[Tuple[int, float]]] = {}
    for c in cells:
        if c.get("rps") is None or c.get("concurrency") is None:
            continue
        series.setdefault(str(c[key]), []).append((int(c["concurrency"]), float(c["rps"])))
    for name, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ticks = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("concurrency")
    ax.set_ylabel("requests/s")
    ax.set_title(title)
    ax.legend(fontsize=7)


def _plot_requests(ax: Any, d: Mapping[str, Any]) -> None:
    size = d.get("config", {}).get("size")
    cells = [c for c in d["results"] if size is None or c.get("size", size) == size]
    _plot_lines(ax, cells, "system", "request/response echo" + (f", {size} B" if size else ""))


def _plot_interop(ax: Any, d: Mapping[str, Any]) -> None:
    _plot_lines(ax, [c for c in d["results"] if c.get("kind") == "echo"], "pair",
                "interop echo (client -> server)")


def _plot_streams(ax: Any, d: Mapping[str, Any]) -> None:
    cells = [c for c in d["results"] if c.get("kind") in ("oneway", "echo")]
    labels = []
    values = []
    for c in cells:
        cap = c.get("capacity")
        what = "one-way" if c["kind"] == "oneway" else "echo"
        labels.append(f"{c['system']} {what} {c['size']} B" + (f" cap {cap}" if cap else ""))
        values.append(float(c.get("rate") or 0))
    y = list(range(len(values)))
    ax.barh(y, values)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("messages or round trips per second (log scale)")
    ax.set_title("streams")


PLOTTERS: Dict[str, Callable[[Any, Mapping[str, Any]], None]] = {
    "codec": _plot_codec, "pool": _plot_pool, "requests": _plot_requests,
    "streams": _plot_streams, "interop": _plot_interop,
}


def plot_results(json_dir: str, path: str) -> List[str]:
    """Draw every benchmark JSON found in ``json_dir`` into one PNG at
    ``path``; returns the benchmarks drawn.  Needs matplotlib."""
    plt = require_matplotlib()
    found: List[Tuple[str, Any]] = []
    for name in PLOTTERS:
        f = Path(json_dir) / f"{name}.json"
        if f.is_file():
            found.append((name, json.loads(f.read_text())))
    if not found:
        raise PlotError(f"no benchmark results to plot in {json_dir}")
    cols = 1 if len(found) == 1 else 2
    rows = (len(found) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 4.2 * rows), squeeze=False)
    drawn = []
    for ax, (name, data) in zip(axes.flat, found):
        try:
            PLOTTERS[name](ax, data)
            drawn.append(name)
        except (KeyError, TypeError, ValueError) as exc:
            ax.set_axis_off()
            ax.set_title(f"{name}: cannot plot ({exc!r})")
    for ax in list(axes.flat)[len(found):]:
        ax.set_axis_off()
    fig.suptitle(f"grid benchmarks ({grid.IMPLEMENTATION} core, Python {platform.python_version()})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python benchmarks/_plot.py JSON_DIR OUT.png")
    try:
        drawn = plot_results(sys.argv[1], sys.argv[2])
    except PlotError as exc:
        sys.exit(f"_plot: {exc}")
    print(f"plot of {', '.join(drawn)} written to {sys.argv[2]}")
