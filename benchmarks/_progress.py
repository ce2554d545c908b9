"""Running one benchmark as a child process under a progress bar (run_all.py).

The child's stdout (its tables) and stderr are read by two threads into one
queue while the bar on stderr shows which benchmark runs, for how long, and
the child's latest status line.  Both pipes belong to that one child, so
every error line is the benchmark's own.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from typing import List, NamedTuple, Optional, Sequence, TextIO, Tuple

__all__ = ["ProgressBar", "Outcome", "run_child"]


class ProgressBar:
    """A one-line text progress bar on a stream (stderr).

    On a terminal it redraws in place (``\\r``); otherwise it prints one line
    per :meth:`update` that changes the step, so logs stay readable.  Call
    :meth:`clear` before writing anything else to the terminal.
    """

    WIDTH = 24
    _SPIN = "|/-\\"

    def __init__(self, total: int, stream: Optional[TextIO] = None, prefix: str = "run_all: ") -> None:
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.prefix = prefix
        self.done = 0
        self.label = ""
        self.status = ""
        self.started = time.monotonic()
        self._step_started = self.started
        self._shown = 0  # characters of the bar on screen (tty)
        self._tick = 0
        self._last_plain = ""

    def line(self) -> str:
        """The bar as text, e.g. ``[######------] 2/5 requests 0:12 running grid``."""
        filled = int(self.WIDTH * self.done / self.total)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        el = int(time.monotonic() - self._step_started)
        text = f"[{bar}] {self.done}/{self.total} {self.label} {el // 60}:{el % 60:02d}"
        if self.status:
            text += f"  {self.status}"
        return text

    def update(self, *, done: Optional[int] = None, label: Optional[str] = None,
               status: Optional[str] = None) -> None:
        """Change what the bar shows and redraw it."""
        if done is not None:
            self.done = done
        if label is not None and label != self.label:
            self.label = label
            self._step_started = time.monotonic()
        if status is not None:
            self.status = status
        self.draw()

    def draw(self) -> None:
        """Redraw (terminal) or print a line if the step changed (otherwise)."""
        if self.tty:
            self._tick += 1
            width = shutil.get_terminal_size((100, 20)).columns - 1
            text = (self.line() + " " + self._SPIN[self._tick % 4])[:width]
            self.stream.write("\r" + text + " " * max(0, self._shown - len(text)))
            self._shown = len(text)
            self.stream.flush()
            return
        key = f"{self.done}/{self.label}"
        if key != self._last_plain:
            self._last_plain = key
            self.stream.write(self.prefix + self.line() + "\n")
            self.stream.flush()

    def clear(self) -> None:
        """Erase the bar from a terminal line (no-op otherwise)."""
        if self.tty and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0


class Outcome(NamedTuple):
    """How one child ended: exit status, seconds, and what it wrote."""

    rc: int
    seconds: float
    out: List[str]
    err: List[str]


def _pump(pipe: TextIO, tag: str, q: "queue.Queue[Tuple[str, Optional[str]]]") -> None:
    for line in pipe:
        q.put((tag, line))
    q.put((tag, None))


def _is_status(line: str) -> bool:
    """A benchmark's own progress note, e.g. ``  running grid (pure) ...``."""
    return line.startswith("  ") and line.strip().endswith("...")


def run_child(cmd: Sequence[str], bar: ProgressBar) -> Outcome:
    """Run ``cmd`` to completion, keeping its output and showing its status
    lines on ``bar``.  Ctrl-C terminates the child and propagates."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    q: "queue.Queue[Tuple[str, Optional[str]]]" = queue.Queue()
    for pipe, tag in ((proc.stdout, "out"), (proc.stderr, "err")):
        threading.Thread(target=_pump, args=(pipe, tag, q), daemon=True).start()
    out: List[str] = []
    err: List[str] = []
    open_pipes = 2
    try:
        while open_pipes:
            try:
                tag, line = q.get(timeout=0.25)
            except queue.Empty:
                bar.draw()  # the clock and spinner move while the child is quiet
                continue
            if line is None:
                open_pipes -= 1
                continue
            text = line.rstrip("\n")
            (err if tag == "err" else out).append(text)
            if (tag == "err" and text.strip()) or (tag == "out" and _is_status(text)):
                bar.update(status=text.strip())
        rc = proc.wait()
    except KeyboardInterrupt:
        bar.clear()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    return Outcome(rc, time.perf_counter() - t0, out, err)
