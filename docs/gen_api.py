"""Writes docs/API.md, the API reference, from the public names' signatures
and docstrings: ``python docs/gen_api.py`` (``--check`` fails if the file is
stale, a public name is missing from it or a public name is undocumented;
tests/project/test_api_docs.py runs it).

Every name in each public module's ``__all__`` gets an entry, in ``__all__``
order: classes and functions with their signature and whole docstring (reST
``:param:``/``:raises:`` fields as lists, roles as code, literal blocks as
indented code), each public method and property of a class likewise, and
``async with`` for a class that supports it; constants
and type aliases with the ``#:`` comment above their definition (found by
following the module's imports to where the name is assigned).  A name
already documented under an earlier module gets a pointer to that entry.
Classes that grid creates and hands out (listed in ``CREATED_BY_GRID``) show
no constructor; a dataclass among them lists its fields instead.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import importlib
import importlib.util
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Modules whose public names (their __all__) make up the API, in reading order.
MODULES = ["grid", "grid.types", "grid.testing", "grid.trace", "grid.prometheus", "grid.otel",
           "grid.integrations.aiohttp", "grid.integrations.asgi"]

# Public classes whose instances grid creates and hands to the user (by the
# name under which they are first documented): their constructor is internal.
CREATED_BY_GRID = {
    "grid.ManagerStats", "grid.Connection", "grid.ConnectionStats", "grid.Subroute",
    "grid.CallContext", "grid.Stream", "grid.StreamContext", "grid.StreamOut",
    "grid.TypedStream", "grid.TypedStreamOut", "grid.CallTrace",
}

# A heading: "### <kind> `<name>...`"; the kind is class, def, constant or type.
HEADING = re.compile(r"^### (?:class|def|constant|type) `([A-Za-z_][A-Za-z0-9_]*)")
SECTION = re.compile(r"^## `([A-Za-z_][A-Za-z0-9_.]*)`")


def _doc(obj: Any) -> str | None:
    doc = inspect.getdoc(obj)
    return doc.strip() if doc else None


ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):`~?([^`]+)`")
FIELD = re.compile(r"^:(param|raises|returns|return|ivar|type|rtype)\s*([^:]*):\s*(.*)$")
FIELD_NAMES = {"param": "", "ivar": "", "raises": "raises ", "returns": "returns",
               "return": "returns", "type": "type of ", "rtype": "return type"}


def _markdown(doc: str) -> str:
    """A reST docstring as Markdown: roles become code spans, ``code`` stays
    code, ``:param x:``/``:raises E:``/``:returns:`` fields become a bullet
    list, and a literal block (``::``) becomes an indented code block."""
    out: list[str] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = FIELD.match(line)
        if m:  # a field and its indented continuation lines
            kind, name, text = m.group(1), m.group(2).strip(), m.group(3)
            i += 1
            while i < len(lines) and lines[i].startswith((" ", "\t")) and lines[i].strip():
                text += " " + lines[i].strip()
                i += 1
            label = FIELD_NAMES[kind] + (f"`{name}`" if name else "")
            if out and out[-1] and not out[-1].startswith("- "):
                out.append("")
            text = ROLE.sub(r"`\1`", text)
            out.append(f"- {label}: {text}" if label else f"- {text}")
            continue
        if line.rstrip().endswith("::"):  # a literal block follows, indented
            head = line.rstrip()[:-2].rstrip()
            if head:
                out.append(ROLE.sub(r"`\1`", head) + ":")
            out.append("")
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                body = lines[i]
                out.append(body.rstrip())
                i += 1
            out.append("")
            continue
        if out and out[-1].startswith("- ") and line.strip():
            out.append("")  # a paragraph after a field list
        out.append(ROLE.sub(r"`\1`", line))
        i += 1
    return "\n".join(out).strip()


def _sig(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""


def _members(cls: type) -> list[tuple[str, Any]]:
    out = []
    for name, val in cls.__dict__.items():
        if name.startswith("_"):
            continue
        if isinstance(val, (staticmethod, classmethod)):
            val = val.__func__
        if callable(val) or isinstance(val, property):
            out.append((name, val))
    return out


# ---------------------------------------------------------------- constants and aliases


class _Definition(typing.NamedTuple):
    """Where a module-level name is assigned: its ``#:`` comment and values."""

    comment: str | None
    values: list[ast.expr]
    source: str


def _assignments(body: list[ast.stmt], name: str) -> list[ast.stmt]:
    """The module-level statements (also inside if/try/with) assigning ``name``."""
    found: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                for t in node.targets):
            found.append(node)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and node.target.id == name and node.value is not None:
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for part in ("body", "orelse", "finalbody"):
                found += _assignments(getattr(node, part, []), name)
            for handler in getattr(node, "handlers", []):
                found += _assignments(handler.body, name)
    return found


def _imported_from(tree: ast.Module, package: str, name: str) -> tuple[str, str] | None:
    """(module, original name) that a module of ``package`` imports ``name`` from."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    base = "." * node.level + (node.module or "")
                    return importlib.util.resolve_name(base, package), alias.name
    return None


def _definition(modname: str, name: str, depth: int = 0) -> _Definition | None:
    """Follow ``from X import name`` from ``modname`` to the assignment."""
    spec = importlib.util.find_spec(modname)
    if depth > 8 or spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    source = Path(spec.origin).read_text()
    tree = ast.parse(source)
    nodes = _assignments(tree.body, name)
    if not nodes:
        package = modname if spec.submodule_search_locations else modname.rpartition(".")[0]
        hop = _imported_from(tree, package, name)
        return _definition(*hop, depth + 1) if hop else None
    lines = source.splitlines()
    comment = None
    for node in nodes:
        above: list[str] = []
        i = node.lineno - 2
        while i >= 0 and lines[i].strip().startswith("#:"):
            above.insert(0, lines[i].strip()[2:].strip())
            i -= 1
        if above:
            comment = " ".join(above)
            break
    values = [n.value for n in nodes if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value]
    return _Definition(comment, values, source)


def _is_alias(obj: Any) -> bool:
    return typing.get_origin(obj) is not None or type(obj).__module__ == "typing"


def _data_entry(modname: str, name: str, obj: Any) -> tuple[list[str], str | None]:
    """(lines, doc) of a constant or type alias."""
    found = _definition(modname, name)
    if _is_alias(obj):
        text = ast.get_source_segment(found.source, found.values[0]) if found and found.values \
            else repr(obj)
        head = f"### type `{name} = {text}`"
    else:
        literal: Any = None
        if found and len(found.values) == 1:
            try:
                literal = ast.literal_eval(found.values[0])
            except (ValueError, TypeError, SyntaxError):
                literal = None
        if literal is not None:
            head = f"### constant `{name} = {literal!r}`"
        else:  # assigned more than once or computed: its value depends on the run
            head = f"### constant `{name}: {type(obj).__name__}`"
    doc = found.comment if found else None
    return [head, "", _markdown(doc) if doc else "", ""], doc


# ---------------------------------------------------------------- classes and functions


def _class_entry(qualname: str, name: str, obj: type, missing: list[str]) -> list[str]:
    doc = _doc(obj)
    plain = issubclass(obj, (BaseException, enum.Enum))
    internal = qualname in CREATED_BY_GRID
    params = getattr(obj, "__parameters__", ())
    if "__class_getitem__" in obj.__dict__ and params:  # used as ArrayOf[T], never called
        sig = "[" + ", ".join(p.__name__ for p in params) + "]"
    else:
        sig = "" if plain or internal else _sig(obj)
    lines = [f"### class `{name}{sig}`", "", _markdown(doc) if doc else "", ""]
    if internal:
        lines += ["Created by grid and handed to you; not constructed directly.", ""]
        if dataclasses.is_dataclass(obj):
            fields = [f"`{f.name}: {f.type if isinstance(f.type, str) else f.type.__name__}`"
                      for f in dataclasses.fields(obj)]
            lines += ["Fields: " + ", ".join(fields) + ".", ""]
    if issubclass(obj, enum.Enum):
        lines += ["Members: " + ", ".join(f"`{m.name}` ({m.value})" for m in obj), ""]
    elif not issubclass(obj, BaseException):
        if "__aenter__" in obj.__dict__:  # an async context manager
            enter = _doc(obj.__dict__["__aenter__"])
            lines += [f"#### `async with {name}` (`__aenter__`/`__aexit__`)", "",
                      _markdown(enter) if enter else
                      f"Supported; see `{name}` above for what entering and leaving do.", ""]
        for mname, member in _members(obj):
            mdoc = _doc(member)
            if mdoc is None:
                missing.append(f"{qualname}.{mname}")
            if isinstance(member, property):
                head = f"#### `{name}.{mname}` (property)"
            else:
                prefix = "async " if inspect.iscoroutinefunction(member) else ""
                sig = re.sub(r"^\(self(, |\))", lambda m: "(" if m.group(1) == ", " else "()",
                             _sig(member))
                head = f"#### {prefix}`{name}.{mname}{sig}`"
            lines += [head, "", _markdown(mdoc) if mdoc else "", ""]
    return lines


def generate() -> tuple[str, list[str]]:
    """(markdown text, problems: undocumented names, stale CREATED_BY_GRID entries)."""
    lines = ["# API reference", "",
             "Generated by `python docs/gen_api.py` from the docstrings; the README explains",
             "the concepts. Every name below is public and typed.", ""]
    missing: list[str] = []
    first: dict[int, str] = {}  # id of a documented class or function -> where
    documented: set[str] = set()
    for modname in MODULES:
        mod = importlib.import_module(modname)
        lines += [f"## `{modname}`", ""]
        mdoc = _doc(mod)
        if mdoc:
            lines += [_markdown(mdoc), ""]
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            qualname = f"{modname}.{name}"
            # A class, not a parametrised alias (inspect.isclass(list[int]) is true on 3.10).
            is_class = inspect.isclass(obj) and issubclass(type(obj), type)
            code = is_class or inspect.isfunction(obj) or inspect.isbuiltin(obj)
            if code and id(obj) in first:
                kind = "class" if is_class else "def"
                lines += [f"### {kind} `{name}`", "", f"The same object as `{first[id(obj)]}`.", ""]
                continue
            if is_class:
                first[id(obj)] = qualname
                documented.add(qualname)
                if _doc(obj) is None:
                    missing.append(qualname)
                lines += _class_entry(qualname, name, obj, missing)
            elif code:
                first[id(obj)] = qualname
                doc = _doc(obj)
                if doc is None:
                    missing.append(qualname)
                coro = " (coroutine function)" if inspect.iscoroutinefunction(obj) else ""
                lines += [f"### def `{name}{_sig(obj)}`{coro}", "", _markdown(doc) if doc else "", ""]
            else:
                entry, doc = _data_entry(modname, name, obj)
                if doc is None:
                    missing.append(qualname)
                lines += entry
    problems = [f"no docstring: {m}" for m in missing]
    problems += [f"CREATED_BY_GRID lists {q}, which no public module documents"
                 for q in sorted(CREATED_BY_GRID - documented)]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return text.rstrip() + "\n", problems


def undocumented(text: str) -> list[str]:
    """The public names (``module.name``) that ``text`` (an API.md) has no entry for."""
    entries: dict[str, set[str]] = {}
    section = None
    for line in text.splitlines():
        m = SECTION.match(line)
        if m:
            section = m.group(1)
            entries.setdefault(section, set())
            continue
        m = HEADING.match(line)
        if m and section is not None:
            entries[section].add(m.group(1))
    out = []
    for modname in MODULES:
        mod = importlib.import_module(modname)
        have = entries.get(modname, set())
        out += [f"{modname}.{n}" for n in getattr(mod, "__all__", []) if n not in have]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text, problems = generate()
    path = ROOT / "docs" / "API.md"
    if args.check:
        on_disk = path.read_text() if path.exists() else ""
        problems += [f"missing from docs/API.md: {n}" for n in undocumented(on_disk)]
        if on_disk != text:
            problems.append("docs/API.md is stale: run python docs/gen_api.py")
        print("\n".join(problems) or "ok")
        return 1 if problems else 0
    path.write_text(text)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
