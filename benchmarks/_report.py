"""Output helpers shared by the benchmarks (codec.py, requests.py, streams.py, ...).

Kept deliberately small: a plain-text table, the figures and ratios that go
into its cells, the list of targets beside their bounds, and a JSON dump;
nothing to install.  ``None`` cells print empty; floats get a sensible number
of digits.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["print_table", "write_json", "fmt", "num", "ratio_cell", "target", "print_targets"]


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


def num(v: Optional[float], digits: int = 0) -> str:
    """A figure with thousands separators and ``digits`` decimals; ``-`` when
    it was not measured (None or NaN)."""
    if v is None or v != v:
        return "-"
    return f"{v:,.{digits}f}"


def ratio_cell(a: Optional[float], b: Optional[float]) -> str:
    """The cell ``a / b`` with two decimals; ``-`` when either is missing or ``b`` is 0."""
    if a is None or not b:
        return "-"
    return f"{a / b:.2f}"


def target(name: str, value: Optional[float], op: str, bound: Optional[float], missing: str,
           unit: str = "x") -> Dict[str, Any]:
    """One target as the reports list it (and write it to JSON): the measured
    ``value`` beside ``bound`` (None: for information only), compared with
    ``op`` (``>=``, ``<=`` or ``<``); ``missing`` says what an absent value needs."""
    ok = None
    if value is not None and bound is not None:
        ok = value >= bound if op == ">=" else value <= bound if op == "<=" else value < bound
    return {"target": name, "value": value, "op": op, "bound": bound, "unit": unit, "ok": ok,
            "missing": None if value is not None else (missing or None)}


def print_targets(targets: Sequence[Dict[str, Any]]) -> None:
    """Print each :func:`target` with PASS/FAIL (``info`` without a bound, ``n/a``
    when not measured); unmeasured targets without a bound are left out."""
    print("\nTargets (ratios without a bound are for information):")
    for t in targets:
        if t["value"] is None:
            if t["bound"] is None:
                continue
            status, val = "n/a ", f"({t['missing'] or 'not measured'})"
        else:
            status = "info" if t["bound"] is None else ("PASS" if t["ok"] else "FAIL")
            val = f"{t['value']:.2f}{t['unit']}"
        bound = "" if t["bound"] is None else f" (target {t['op']} {t['bound']:g}{t['unit']})"
        extra = f"  [{t['note']}]" if t.get("note") else ""
        print(f"  {status}  {t['target']}: {val}{bound}{extra}")


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path``, creating its directory."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
