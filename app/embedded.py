"""The embedded database: SecantusDB run as a child process, never imported here."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("fingate.embedded")

_PR_SET_PDEATHSIG = 1
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class EmbeddedError(RuntimeError):
    """The embedded database could not start; the message ends with the tail of its log."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child before exec: if FinGate is killed outright (SIGKILL, a crash), the
    # kernel sends the database SIGTERM, so it never outlives us as an orphan.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class EmbeddedMongo:
    """A SecantusDB child process on a free loopback port, storing under `data_dir`."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.log_path = self.data_dir / "secantus.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start the server and wait until it accepts connections; returns its URI."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        cmd = [
            sys.executable, "-m", "secantus",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--storage-path", str(self.data_dir),
            "--log-level", "WARNING",
        ]  # fmt: skip
        with open(self.log_path, "ab") as logfile:
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,  # keeps SecantusDB from discovering a stray ./secantusd.toml
                start_new_session=True,  # Ctrl-C reaches FinGate, which then stops the database in order
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        log.info("embedded database starting: pid %s, port %s, storage %s", self.process.pid, self.port, self.data_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedError(self._failure(f"exited with code {self.process.returncode}"))
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self.uri
            time.sleep(0.05)
        self.stop()
        raise EmbeddedError(self._failure(f"did not accept connections within {timeout:.0f} s"))

    def _failure(self, what: str) -> str:
        installed = (
            ""
            if _module_available("secantus")
            else "\nSecantusDB is not installed: run `make install` (it installs the `embedded` extra)."
        )
        return (
            f"The embedded database (SecantusDB) {what}.{installed}\n"
            f"Set MONGODB_URI to use a real MongoDB instead. Last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL: the child never outlives this call."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("embedded database did not stop within %.0f s; killing it", STOP_TIMEOUT)
            proc.kill()
            proc.wait()
        log.info("embedded database stopped")

    def __enter__(self) -> EmbeddedMongo:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@contextlib.contextmanager
def database_uri(mongodb_uri: str | None, data_dir: Path | str) -> Iterator[str]:
    """The URI to use: the configured MongoDB, or an embedded one alive for the block."""
    if mongodb_uri:
        yield mongodb_uri
        return
    with EmbeddedMongo(data_dir) as db:
        yield db.uri


__all__ = ["EmbeddedError", "EmbeddedMongo", "database_uri"]
