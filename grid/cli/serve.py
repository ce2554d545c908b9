"""``grid serve``: run one node from a TOML file or command-line options.

Handler modules
---------------
``--handlers SPEC`` (repeatable; ``handlers = [...]`` in TOML) names a module
by dotted name (``myapp.grid_handlers``, imported from ``sys.path`` plus the
current directory) or by file path (``handlers/echo.py``; in a TOML file,
relative to that file), optionally followed by ``:attr``.  The module
defines either or both of:

``HANDLERS``
    a dict: key ``handler_id`` (1..255) or ``(handler_id, "sub/route")``;
    value a function ``fn(payload) -> bytes | None`` (sync or ``async``,
    registered with :meth:`grid.Manager.register_single`) or a
    :class:`grid.StreamHandler` (registered with
    :meth:`grid.Manager.register_stream`; its subroute is the handler's own).
``register(mgr)``
    called with the :class:`grid.Manager` before it starts, for anything
    else (typed handlers, state shared between handlers); may be ``async``.

``HANDLERS`` is registered first, then ``register`` is called.  With
``:attr`` only that attribute is used: a dict is taken as ``HANDLERS``, a
callable as ``register``.  See ``examples/serve_handlers.py``.

Configuration file (``grid serve --config node.toml``)
-------------------------------------------------------
Top-level keys: ``local``, ``hosts`` (list), ``token`` or ``token_file``,
``handlers`` (list), ``listen`` (``"0.0.0.0:9001"``), ``tls_cert``,
``tls_key``, ``tls_ca``, ``grace`` (seconds), ``log_level``; an optional
``[manager]`` table passes keyword options to :class:`grid.Manager`
(``ping_interval``, ``max_streams``, ...).  Options given on the command
line override the file's.  Relative paths are relative to the file.
Unknown keys are an error.  See ``examples/node.toml``.

The token is shared: the node presents it when it dials and accepts exactly
it from peers.  Without ``--token``/``--token-file`` the ``GRID_TOKEN``
environment variable is used (``--token`` is visible in process listings).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hmac
import importlib
import importlib.util
import inspect
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import grid
from grid import _http
from grid._impl import local_dials
from grid.cli._common import EXIT_FAILED, EXIT_OK, CliError, read_token_file, want

__all__ = ["NodeConfig", "MANAGER_OPTIONS", "load_config", "load_handlers", "serve", "cmd_serve"]


#: Manager keyword options a configuration may set (its ``[manager]`` table).
MANAGER_OPTIONS: dict[str, type] = {
    name: (float if isinstance(p.default, float) else type(p.default))
    for name, p in inspect.signature(grid.Manager.__init__).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "client_ssl"
}
MANAGER_OPTIONS["route_path"] = str

_TOP_KEYS = {"local", "hosts", "token", "token_file", "handlers", "listen", "tls_cert", "tls_key",
             "tls_ca", "grace", "log_level", "manager"}


@dataclasses.dataclass
class NodeConfig:
    """Everything ``grid serve`` needs to run a node."""

    local: str = ""
    hosts: list[str] = dataclasses.field(default_factory=list)
    token: str | None = None
    handlers: list[str] = dataclasses.field(default_factory=list)
    listen: tuple[str, int] | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    grace: float = 5.0
    log_level: str = "info"
    manager: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Directory that relative handler file paths are resolved against.
    base_dir: Path = dataclasses.field(default_factory=Path.cwd)


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        try:
            import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]
        except ImportError:
            raise CliError("reading a TOML configuration on Python 3.10 needs tomli "
                           "(pip install tomli)") from None
    try:
        with open(path, "rb") as f:
            return dict(tomllib.load(f))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path}: {exc}") from None


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise CliError(f"listen address {text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _split_hosts(values: Sequence[str]) -> list[str]:
    return [h.strip() for v in values for h in v.split(",") if h.strip()]


def load_config(path: str | None, args: argparse.Namespace | None = None) -> NodeConfig:
    """Build a :class:`NodeConfig` from a TOML file (if ``path``) with the
    command-line options in ``args`` overriding it.  Raises :class:`CliError`
    naming what is wrong."""
    cfg = NodeConfig()
    if path is not None:
        file = Path(path).resolve()
        data = _read_toml(file)
        base = file.parent
        cfg.base_dir = base
        unknown = sorted(set(data) - _TOP_KEYS)
        want(not unknown, f"{file}: unknown key(s) {', '.join(unknown)}; known: "
             f"{', '.join(sorted(_TOP_KEYS))}")
        for key in ("local", "token", "token_file", "listen", "tls_cert", "tls_key", "tls_ca",
                    "log_level"):
            want(key not in data or isinstance(data[key], str), f"{file}: {key} must be a string")
        cfg.local = data.get("local", "")
        hosts = data.get("hosts", [])
        want(isinstance(hosts, list) and all(isinstance(h, str) for h in hosts),
             f"{file}: hosts must be a list of strings")
        cfg.hosts = list(hosts)
        handlers = data.get("handlers", [])
        if isinstance(handlers, str):
            handlers = [handlers]
        want(isinstance(handlers, list) and all(isinstance(h, str) for h in handlers),
             f"{file}: handlers must be a list of strings")
        cfg.handlers = list(handlers)
        want(not ("token" in data and "token_file" in data),
             f"{file}: give token or token_file, not both")
        if "token" in data:
            cfg.token = data["token"]
        if "token_file" in data:
            cfg.token = read_token_file(base / data["token_file"])
        if "listen" in data:
            cfg.listen = _parse_listen(data["listen"])
        for key in ("tls_cert", "tls_key", "tls_ca"):
            if key in data:
                setattr(cfg, key, str(base / data[key]))
        if "grace" in data:
            want(isinstance(data["grace"], (int, float)) and not isinstance(data["grace"], bool),
                 f"{file}: grace must be a number of seconds")
            cfg.grace = float(data["grace"])
        cfg.log_level = data.get("log_level", cfg.log_level)
        options = data.get("manager", {})
        want(isinstance(options, dict), f"{file}: [manager] must be a table")
        for key, value in options.items():
            kind = MANAGER_OPTIONS.get(key)
            want(kind is not None, f"{file}: [manager] has unknown option {key!r}; known: "
                 f"{', '.join(sorted(MANAGER_OPTIONS))}")
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  if kind in (int, float) else isinstance(value, str))
            want(ok and not (kind is int and isinstance(value, float)),
                 f"{file}: [manager] {key} must be {kind.__name__ if kind else '?'}")
            cfg.manager[key] = value
    if args is not None:
        if args.local:
            cfg.local = args.local
        if args.hosts:
            cfg.hosts = _split_hosts(args.hosts)
        if args.token is not None and args.token_file is not None:
            raise CliError("give --token or --token-file, not both")
        if args.token is not None:
            cfg.token = args.token
        if args.token_file is not None:
            cfg.token = read_token_file(Path(args.token_file))
        if args.handlers:
            cfg.handlers = list(args.handlers)
            cfg.base_dir = Path.cwd()
        if args.listen:
            cfg.listen = _parse_listen(args.listen)
        for key in ("tls_cert", "tls_key", "tls_ca"):
            if getattr(args, key):
                setattr(cfg, key, getattr(args, key))
        if args.grace is not None:
            cfg.grace = args.grace
        if args.log_level:
            cfg.log_level = args.log_level
    if cfg.token is None and os.environ.get("GRID_TOKEN"):
        cfg.token = os.environ["GRID_TOKEN"]
    want(bool(cfg.local), "no local host: give --local URL or local = \"...\" in the config")
    want(bool(cfg.hosts), "no hosts: give --hosts URL,URL,... or hosts = [...] in the config")
    want(cfg.hosts.count(cfg.local) == 1,
         f"the local host {cfg.local} must appear exactly once in hosts {cfg.hosts} "
         "(spelled byte for byte as the other nodes spell it)")
    for h in cfg.hosts:
        try:
            _http.parse_host(h)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    want(bool(cfg.token), "no token: give --token-file FILE, --token TEXT, GRID_TOKEN in the "
         "environment, or token/token_file in the config")
    want(cfg.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
         f"unknown log level {cfg.log_level!r}")
    want((cfg.tls_cert is None) == (cfg.tls_key is None),
         "give both --tls-cert and --tls-key (or tls_cert and tls_key)")
    want(not cfg.local.startswith(("https://", "wss://")) or cfg.tls_cert is not None,
         f"{cfg.local} is https: give --tls-cert and --tls-key")
    return cfg


def _import_spec(spec: str, base_dir: Path) -> tuple[ModuleType, str | None]:
    target, attr = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isidentifier() and head and not (len(head) == 1 and head.isalpha()):
        target, attr = head, tail
    is_file = target.endswith(".py") or os.sep in target or "/" in target
    if is_file:
        path = Path(target)
        if not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise CliError(f"handler module {spec!r}: no file {path}")
        name = "grid_handlers_" + path.stem
        mspec = importlib.util.spec_from_file_location(name, path)
        if mspec is None or mspec.loader is None:
            raise CliError(f"handler module {spec!r}: cannot load {path}")
        module = importlib.util.module_from_spec(mspec)
        sys.modules[name] = module  # dataclasses and pickling look modules up here
        try:
            mspec.loader.exec_module(module)
        except Exception:
            sys.modules.pop(name, None)
            raise
        return module, attr
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` would; the console script does not
    try:
        return importlib.import_module(target), attr
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            raise CliError(f"handler module {spec!r}: no module named {exc.name!r} "
                           "(give a dotted module name on sys.path, or a file path)") from None
        raise


def _register_table(mgr: grid.Manager, table: Mapping[Any, Any], where: str) -> int:
    n = 0
    for key, value in table.items():
        if isinstance(key, tuple) and len(key) == 2:
            hid, route = key
        else:
            hid, route = key, None
        if not isinstance(hid, int) or isinstance(hid, bool) or not (route is None or
                                                                      isinstance(route, str)):
            raise CliError(f"{where}: key {key!r} is not a handler id or (id, \"sub/route\")")
        if isinstance(value, grid.StreamHandler):
            if route:
                raise CliError(f"{where}: stream handler {hid}: give its subroute as "
                               "StreamHandler(..., subroute=...), not in the key")
            mgr.register_stream(hid, value)
        elif callable(value):
            mgr.register_single(hid, value, subroute=route or "")
        else:
            raise CliError(f"{where}: handler {key!r} is {type(value).__name__}, want a "
                           "function or a grid.StreamHandler")
        n += 1
    return n


async def load_handlers(mgr: grid.Manager, spec: str, base_dir: Path | None = None) -> str:
    """Load the handler module ``spec`` (see the module docstring for the
    convention) and register its handlers on ``mgr``; returns a summary."""
    module, attr = _import_spec(spec, base_dir or Path.cwd())
    where = f"handler module {spec!r}"
    done = []
    if attr is not None:
        obj = getattr(module, attr, None)
        if obj is None:
            raise CliError(f"{where}: {module.__name__} has no attribute {attr!r}")
        table, register = (obj, None) if isinstance(obj, Mapping) else (None, obj)
        if register is not None and not callable(register):
            raise CliError(f"{where}: {attr} is neither a dict of handlers nor a function")
    else:
        table = getattr(module, "HANDLERS", None)
        register = getattr(module, "register", None)
        if table is None and register is None:
            raise CliError(f"{where}: defines neither HANDLERS (a dict) nor register(mgr)")
        if table is not None and not isinstance(table, Mapping):
            raise CliError(f"{where}: HANDLERS is {type(table).__name__}, want a dict")
        if register is not None and not callable(register):
            raise CliError(f"{where}: register is not a function")
    if table is not None:
        done.append(f"{_register_table(mgr, table, where)} from HANDLERS")
    if register is not None:
        result = register(mgr)
        if inspect.isawaitable(result):
            await result
        done.append(f"{getattr(register, '__name__', 'register')}(mgr)")
    return f"{spec}: " + ", ".join(done)


def _tls_contexts(cfg: NodeConfig) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    server = client = None
    try:
        if cfg.tls_cert is not None:
            server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        if any(h.startswith(("https://", "wss://")) for h in cfg.hosts):
            client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"TLS setup failed: {exc}") from None
    return server, client


def _token_checker(expected: str) -> Callable[[str], None]:
    want = expected.encode()

    def check(token: str) -> None:
        if not hmac.compare_digest(token.encode(), want):
            raise PermissionError("invalid token")

    return check


async def serve(cfg: NodeConfig, dry_run: bool = False) -> int:
    """Run the node described by ``cfg`` until SIGINT or SIGTERM, then close
    it (gracefully, up to ``cfg.grace`` seconds).  Returns the exit status."""
    server_ctx, client_ctx = _tls_contexts(cfg)
    token = cfg.token or ""
    try:
        mgr = grid.Manager(cfg.local, cfg.hosts, lambda: token, _token_checker(token),
                           ssl=server_ctx, client_ssl=client_ctx, **cfg.manager)
    except (ValueError, TypeError) as exc:
        raise CliError(f"bad node configuration: {exc}") from None
    loaded = []
    for spec in cfg.handlers:
        try:
            loaded.append(await load_handlers(mgr, spec, cfg.base_dir))
        except grid.GridError as exc:  # HandlerAlreadyExists, UnknownHandler
            raise CliError(f"handler module {spec!r}: {exc}") from None
    dials = [h for h in cfg.hosts if h != cfg.local and local_dials(cfg.local, h)]
    dialed_by = [h for h in cfg.hosts if h != cfg.local and h not in dials]
    where = f"{cfg.listen[0]}:{cfg.listen[1]}" if cfg.listen else cfg.local
    print(f"grid serve: node {cfg.local} ({grid.IMPLEMENTATION} core), listening on {where}")
    for line in loaded or ["no handler modules (--handlers): this node serves no calls"]:
        print(f"  handlers: {line}")
    print(f"  dials: {', '.join(dials) or '-'}")
    print(f"  dialed by: {', '.join(dialed_by) or '-'}")
    if dry_run:
        print("grid serve: configuration OK (dry run)")
        return EXIT_OK
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    caught: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        caught.append(sig.name)
        stop.set()

    sigs = [signal.SIGINT, signal.SIGTERM]
    for s in sigs:
        loop.add_signal_handler(s, on_signal, s)
    try:
        try:
            await mgr.start(listen=cfg.listen)
        except OSError as exc:
            await mgr.close()
            raise CliError(f"cannot listen on {where}: {exc.strerror or exc}", EXIT_FAILED) from None
        print(f"grid serve: serving {cfg.local}; stop with Ctrl-C or SIGTERM", flush=True)
        await stop.wait()
    finally:
        for s in sigs:  # a second Ctrl-C interrupts the graceful close
            loop.remove_signal_handler(s)
    print(f"grid serve: {caught[0] if caught else 'stop'}: closing (grace {cfg.grace:g} s)",
          flush=True)
    await mgr.close(grace=cfg.grace)
    print("grid serve: stopped", flush=True)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """``grid serve``."""
    cfg = load_config(args.config, args)
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(grid.run(serve(cfg, dry_run=args.dry_run)))
