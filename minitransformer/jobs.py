"""Long jobs on shared machines: one owner per run folder, and stopping at a step boundary.

**One writer per folder.** Two processes writing one run folder interleave checkpoints and
metrics, and neither notices. ``own(folder)`` takes an exclusive OS lock (``flock``) on
``folder/.lock`` for as long as the job runs and writes who holds it (process id, host,
start time) into the file; a second job is refused in one line that names the holder. The
kernel releases a ``flock`` when its holder dies, however it dies, so a job killed with
``kill -9`` leaves no stale lock behind: the next job takes the folder at once. (A lock on
a network file system is only as good as that file system's ``flock``.)

**Stopping cleanly.** Clusters stop jobs with SIGTERM, then SIGKILL after a grace period;
terminals send SIGHUP when they close and SIGINT on Ctrl-C. An exception raised from a
signal handler can land anywhere, in the middle of an optimizer update included, and a
checkpoint saved after that would hold half-updated parameters as if they were a complete
step. ``StopSignals`` turns the first such signal into a flag instead: the training loop
reads ``stop.requested`` between steps, finishes the step it is in, saves a complete
checkpoint and exits with the conventional status (128 + the signal's number: 130 for
SIGINT, 143 for SIGTERM, 129 for SIGHUP). A second signal means "now": the process dies of
it at once, and the last complete checkpoint (written atomically) is what remains.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

LOCK_FILE = ".lock"


class FolderInUse(RuntimeError):
    """Another live process owns the run folder."""


class Stopped(Exception):
    """A job stopped on a signal at a step boundary, its last step saved (where it saves).

    ``status`` is the exit status the job should end with (128 + the signal's number); the
    message says where the state is and how to continue.
    """

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@contextlib.contextmanager
def own(folder):
    """Hold the run folder ``folder`` (created if needed) for the duration of the block."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(f"{folder} is in use by {_holder(fd)}; wait for that job to end or stop it "
                              "(a job that died leaves no lock: the folder frees itself)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        yield path
    finally:
        os.close(fd)                     # closing the descriptor releases the lock


def _holder(fd) -> str:
    try:
        who = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        who = {}
    if "pid" not in who:
        return "another process (it has not written its name yet)"
    return f"process {who['pid']} on host {who.get('host', '?')} (since {who.get('since', '?')})"


# =======================================================================================
# Stopping at a step boundary
# =======================================================================================

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))


class StopSignals:
    """A flag raised by the first SIGTERM, SIGHUP or SIGINT; the second kills the process.

        with StopSignals() as stop:
            for step in ...:
                train_step()
                if stop.requested:      # checked between steps: the step is whole
                    save(); return stop.exit_status

    Outside the main thread (where Python cannot install handlers) it installs nothing and
    the flag stays down. Leaving the block restores the handlers that were there before.
    """

    def __init__(self, signals=STOP_SIGNALS):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process killed by it (0 when none)."""
        return 0 if self.received is None else 128 + int(self.received)

    @property
    def name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Raise the flag as a signal would (for code that decides to stop by itself, and tests)."""
        self.received = signum

    def _handle(self, signum, _frame):
        if self.received is None:
            self.received = signum
            # From now on the default action: the second signal ends the process at once,
            # killed by that signal (the status its launcher expects), in the kernel. A
            # Python handler could not promise that: it runs only when the main thread
            # wakes, and a signal the kernel delivers to another thread (a BLAS worker)
            # does not wake a main thread asleep in a slow save.
            for s in self.signals:
                signal.signal(s, signal.SIG_DFL)
            return
        # A second signal that raced the line above: deliver it again, now to the default.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        return False
