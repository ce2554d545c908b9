"""Output helpers shared by the benchmarks (codec.py, requests.py).

Kept deliberately small: a plain-text table and a JSON dump, nothing to
install.  ``None`` cells print empty; floats get a sensible number of digits.
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Sequence

__all__ = ["print_table", "write_json", "fmt"]


def fmt(value: Any) -> str:
    """One table cell: ``None`` is empty, floats keep about four significant digits."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value == 0 or abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print ``rows`` under ``columns``: first column left-aligned, the rest right-aligned."""
    cells: List[List[str]] = [[str(c) for c in columns]]
    cells += [[fmt(v) for v in row] + [""] * (len(columns) - len(row)) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for k, r in enumerate(cells):
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path``, creating its directory."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
