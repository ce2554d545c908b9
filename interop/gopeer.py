"""Build and run the Go interop peer (``gridpeer``) for the grid tests.

Standard library only.  The peer runs MinIO's own ``internal/grid`` package
(the version pinned in ``interop/go.mod``); see ``interop/README.md``.

Typical use from a test::

    from interop import gopeer

    if not gopeer.go_available():
        pytest.skip("no Go toolchain")
    port = gopeer.free_port()
    local = f"http://127.0.0.1:{port}"
    with gopeer.start_peer(local, hosts=[local, py_host]) as peer:
        ...  # the Python node talks to peer.local
    results = gopeer.run_client(go_host, py_host, "echo", hosts=[go_host, py_host])

The binary is built once per pinned MinIO version into a cache directory
outside the repository (``$GRID_INTEROP_CACHE``, else
``$XDG_CACHE_HOME/grid-interop``, else ``~/.cache/grid-interop``) and rebuilt
when the Go sources, ``go.mod``/``go.sum``, ``handlers.json`` or the Go
toolchain change.  Building needs only the Go toolchain and the Go module
proxy.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Iterable

__all__ = [
    "INTEROP_DIR",
    "HANDLERS_JSON",
    "GoPeer",
    "PeerError",
    "build_peer",
    "cache_dir",
    "free_port",
    "go_available",
    "load_handlers",
    "minio_version",
    "peer_args",
    "run_client",
    "run_client_raw",
    "start_peer",
]

INTEROP_DIR = pathlib.Path(__file__).resolve().parent
HANDLERS_JSON = INTEROP_DIR / "handlers.json"
BINARY_NAME = "gridpeer"

# Environment variables understood here.
ENV_GO = "GRID_INTEROP_GO"  # path of the go command (default: "go" on PATH)
ENV_CACHE = "GRID_INTEROP_CACHE"  # cache root
ENV_BINARY = "GRID_INTEROP_PEER"  # use this prebuilt binary, never build

_build_lock = threading.Lock()


class PeerError(RuntimeError):
    """The peer could not be built or started."""


# ---------------------------------------------------------------- toolchain


def _go_cmd() -> str | None:
    return os.environ.get(ENV_GO) or shutil.which("go")


def _go_version() -> str | None:
    go = _go_cmd()
    if not go:
        return None
    try:
        out = subprocess.run(
            [go, "version"], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def go_available() -> bool:
    """True if a prebuilt peer is configured or a working ``go`` command exists."""
    if os.environ.get(ENV_BINARY):
        return pathlib.Path(os.environ[ENV_BINARY]).is_file()
    return _go_version() is not None


# ---------------------------------------------------------------- metadata


def load_handlers() -> dict[str, Any]:
    """The parsed ``handlers.json`` (handler ids, subroutes, capacities)."""
    return json.loads(HANDLERS_JSON.read_text(encoding="utf-8"))


def minio_version() -> str:
    """The github.com/minio/minio version required by ``interop/go.mod``."""
    text = (INTEROP_DIR / "go.mod").read_text(encoding="utf-8")
    m = re.search(r"^\s*(?:require\s+)?github\.com/minio/minio\s+(\S+)", text, re.M)
    if not m:
        raise PeerError("interop/go.mod does not require github.com/minio/minio")
    return m.group(1)


def _source_files() -> list[pathlib.Path]:
    files = sorted(INTEROP_DIR.glob("*.go"))
    files += [INTEROP_DIR / n for n in ("go.mod", "go.sum", "handlers.json")]
    return [f for f in files if f.is_file()]


def _source_hash(go_version: str) -> str:
    h = hashlib.sha256()
    h.update(go_version.encode())
    for f in _source_files():
        h.update(b"\0" + f.name.encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def cache_dir() -> pathlib.Path:
    """Directory holding the binary for the pinned version."""
    root = os.environ.get(ENV_CACHE)
    if root:
        base = pathlib.Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache") / "grid-interop"
    return base / minio_version()


# ---------------------------------------------------------------- build


def build_peer(*, force: bool = False, verbose: bool = False) -> pathlib.Path:
    """Return the path of the gridpeer binary, building it if needed.

    The build runs at most once per source hash; concurrent callers (threads
    or processes) wait for each other through a lock file.
    """
    prebuilt = os.environ.get(ENV_BINARY)
    if prebuilt:
        p = pathlib.Path(prebuilt)
        if not p.is_file():
            raise PeerError(f"{ENV_BINARY}={prebuilt} does not exist")
        return p
    go = _go_cmd()
    gv = _go_version()
    if not go or not gv:
        raise PeerError("no Go toolchain found (set GRID_INTEROP_GO or put go on PATH)")
    digest = _source_hash(gv)
    out_dir = cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / BINARY_NAME
    stamp = out_dir / (BINARY_NAME + ".sha256")

    def fresh() -> bool:
        try:
            return binary.is_file() and stamp.read_text().strip() == digest
        except OSError:
            return False

    with _build_lock:
        if not force and fresh():
            return binary
        with open(out_dir / ".lock", "w") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            try:
                if not force and fresh():
                    return binary
                _go_build(go, out_dir, binary, verbose=verbose)
                stamp.write_text(digest + "\n")
            finally:
                fcntl.flock(lockf, fcntl.LOCK_UN)
    return binary


def _go_build(go: str, out_dir: pathlib.Path, binary: pathlib.Path, *, verbose: bool) -> None:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")
    flags = env.get("GOFLAGS", "")
    if "-mod=" not in flags:
        flags = (flags + " -mod=mod").strip()
    env["GOFLAGS"] = flags
    fd, tmp_name = tempfile.mkstemp(prefix=BINARY_NAME + ".", dir=out_dir)
    os.close(fd)
    tmp = pathlib.Path(tmp_name)
    cmd = [go, "build", "-trimpath", "-o", str(tmp), "."]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            cwd=INTEROP_DIR,
            env=env,
            stdout=None if verbose else subprocess.PIPE,
            stderr=None if verbose else subprocess.STDOUT,
            text=True,
            timeout=3600,
        )
        if proc.returncode != 0:
            raise PeerError(
                f"building gridpeer failed ({' '.join(cmd)} in {INTEROP_DIR}):\n{proc.stdout or ''}"
            )
        tmp.chmod(0o755)
        os.replace(tmp, binary)
    finally:
        tmp.unlink(missing_ok=True)
    if verbose:
        print(f"gridpeer built in {time.monotonic() - started:.1f}s: {binary}", file=sys.stderr)


# ---------------------------------------------------------------- running


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on host that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def peer_args(
    local: str,
    *,
    hosts: Iterable[str] | None = None,
    token: str | None = None,
    accept_token: str | None = None,
    handlers: str | Iterable[str] = "all",
    tls_cert: str | os.PathLike | None = None,
    tls_key: str | os.PathLike | None = None,
    tls_ca: str | os.PathLike | None = None,
    extra: Iterable[str] = (),
) -> list[str]:
    """Command line arguments (without the binary) for a peer."""
    args = ["-local", local]
    if hosts is not None:
        args += ["-hosts", ",".join(hosts)]
    if token is not None:
        args += ["-token", token]
    if accept_token is not None:
        args += ["-accept-token", accept_token]
    if not isinstance(handlers, str):
        handlers = ",".join(handlers) or "none"
    args += ["-handlers", handlers]
    for flag, value in (("-tls-cert", tls_cert), ("-tls-key", tls_key), ("-tls-ca", tls_ca)):
        if value is not None:
            args += [flag, os.fspath(value)]
    args += list(extra)
    return args


class GoPeer:
    """A running gridpeer process (server mode).

    stdout JSON lines are collected in ``events`` (the ready line is
    ``ready``); the last stderr lines in ``stderr_lines``.
    """

    def __init__(self, proc: subprocess.Popen, local: str):
        self.proc = proc
        self.local = local
        self.ready: dict[str, Any] | None = None
        self.events: list[dict[str, Any]] = []
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=2000)
        self._cond = threading.Condition()
        self._eof = False
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- readers
    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "unparsed", "line": line}
            with self._cond:
                self.events.append(ev)
                if ev.get("event") == "ready" and self.ready is None:
                    self.ready = ev
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    # -- waiting
    def wait_event(self, pred, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for (and return) the first event satisfying pred."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for ev in self.events[seen:]:
                    if pred(ev):
                        return ev
                seen = len(self.events)
                if self._eof:
                    raise PeerError(f"gridpeer exited (rc={self.proc.poll()}):\n{self.stderr_text()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("gridpeer event not seen in time")
                self._cond.wait(left)

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_event(lambda e: e.get("event") == "ready", timeout)

    def wait_state(self, remote: str, state: str = "Connected", timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the peer reports its connection to remote in state."""
        return self.wait_event(
            lambda e: e.get("event") == "state" and e.get("remote") == remote and e.get("state") == state,
            timeout,
        )

    def state(self, remote: str) -> str | None:
        """Last reported state of the connection to remote."""
        with self._cond:
            for ev in reversed(self.events):
                if ev.get("event") == "state" and ev.get("remote") == remote:
                    return ev.get("state")
        return None

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_lines)

    # -- lifetime
    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        for t in self._threads:
            t.join(1.0)
        return self.proc.returncode

    def __enter__(self) -> "GoPeer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_peer(local: str, *, ready_timeout: float = 30.0, binary: pathlib.Path | None = None, **kw) -> GoPeer:
    """Start gridpeer in server mode and wait for its ready line.

    Keyword arguments are those of :func:`peer_args`.  Use the result as a
    context manager (or call ``stop()``).
    """
    binary = binary or build_peer()
    proc = subprocess.Popen(
        [str(binary), *peer_args(local, **kw)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    peer = GoPeer(proc, local)
    try:
        peer.wait_ready(ready_timeout)
    except BaseException:
        peer.stop()
        raise
    return peer


def run_client(
    local: str,
    remote: str,
    scenario: str | Iterable[str] = "all",
    *,
    n: int | None = None,
    payload_size: int | None = None,
    timeout: float = 300.0,
    connect_timeout: float = 30.0,
    binary: pathlib.Path | None = None,
    **kw,
) -> list[dict[str, Any]]:
    """Run gridpeer in client mode against remote and return its result lines.

    Only the objects that carry a "scenario" key are returned (one per case);
    the full output, including events, is available from
    :func:`run_client_raw`.
    """
    out = run_client_raw(
        local, remote, scenario, n=n, payload_size=payload_size, timeout=timeout,
        connect_timeout=connect_timeout, binary=binary, **kw,
    )
    return [line for line in out["lines"] if "scenario" in line]


def run_client_raw(
    local: str,
    remote: str,
    scenario: str | Iterable[str] = "all",
    *,
    n: int | None = None,
    payload_size: int | None = None,
    timeout: float = 300.0,
    connect_timeout: float = 30.0,
    binary: pathlib.Path | None = None,
    **kw,
) -> dict[str, Any]:
    """Like :func:`run_client`; returns {"returncode", "lines", "stderr"}."""
    binary = binary or build_peer()
    if not isinstance(scenario, str):
        scenario = ",".join(scenario)
    args = peer_args(local, **kw)
    args += ["-remote", remote, "-scenario", scenario, "-connect-timeout", f"{connect_timeout}s"]
    if n is not None:
        args += ["-n", str(n)]
    if payload_size is not None:
        args += ["-payload-size", str(payload_size)]
    proc = subprocess.run(
        [str(binary), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = []
    for raw in proc.stdout.splitlines():
        raw = raw.strip()
        if raw:
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"event": "unparsed", "line": raw})
    return {"returncode": proc.returncode, "lines": lines, "stderr": proc.stderr}


def _main(argv: list[str]) -> int:
    if argv[:1] == ["build"] or not argv:
        started = time.monotonic()
        path = build_peer(force="--force" in argv, verbose=True)
        print(json.dumps({"binary": str(path), "minio_version": minio_version(),
                          "seconds": round(time.monotonic() - started, 1)}))
        return 0
    if argv[:1] == ["path"]:
        print(cache_dir() / BINARY_NAME)
        return 0
    print("usage: python -m interop.gopeer [build [--force] | path]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
