"""The embedded database: SecantusDB run as a child process, never imported here."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("fingate.embedded")

_PR_SET_PDEATHSIG = 1
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
# Waits before each restart after the database dies; once all are spent without it coming back
# (and staying up for STABLE_SECONDS), the supervisor gives up and /healthz turns 503.
RESTART_DELAYS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
STABLE_SECONDS = 30.0
CONFIG_NAME = "fingate-secantusd.toml"
# The whole SecantusDB configuration FinGate runs on, passed with --config so that no
# ~/.secantus/secantusd.toml or /etc/secantus/secantusd.toml is discovered and applied;
# every other setting is the installed SecantusDB's default. The host, port and storage
# path are per run and go on the command line.
CONFIG = {
    "server": {"auth": False, "standalone": False, "enable_test_commands": False},
    "storage": {"sync_on_commit": True},  # a confirmed commit is on disk: it survives kill -9 and power loss
}


class EmbeddedError(RuntimeError):
    """The embedded database could not start; the message ends with the tail of its log."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child before exec: if FinGate is killed outright (SIGKILL, a crash), the kernel
    # kills the database too, so it never outlives us as an orphan. SIGKILL, not SIGTERM: SecantusDB
    # can hang on a SIGTERM that arrives while it is starting (seen right after a restart), and with
    # sync on commit an abrupt end loses nothing that was confirmed. `stop()` still asks politely first.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _toml(config: dict[str, dict[str, bool]]) -> str:
    tables = (
        f"[{name}]\n" + "".join(f"{k} = {str(v).lower()}\n" for k, v in keys.items()) for name, keys in config.items()
    )
    return "# Written by FinGate at every start of its embedded database; edits are overwritten.\n" + "\n".join(tables)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class EmbeddedMongo:
    """A SecantusDB child process on a free loopback port, storing under `data_dir`.

    Once started it is supervised: if it dies, it is restarted on the same port and storage
    (so clients' URIs stay valid), after each of `restart_delays` in turn until it is back.
    """

    restart_delays: tuple[float, ...] = RESTART_DELAYS

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.log_path = self.data_dir / "secantus.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.gave_up = False  # the supervisor stopped trying: this FinGate is no longer healthy
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def running(self) -> bool:
        """The child is up (it may still be opening its storage after a restart)."""
        proc = self.process
        return proc is not None and proc.poll() is None and not self.gave_up

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start the server, wait until it accepts connections, then supervise it; returns its URI."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self._stopping.clear()
        self._launch(timeout)
        self._supervisor = threading.Thread(target=self._supervise, name="fingate-embedded-supervisor", daemon=True)
        self._supervisor.start()
        return self.uri

    def _launch(self, timeout: float) -> None:
        config = self.data_dir / CONFIG_NAME
        config.write_text(_toml(CONFIG))
        cmd = [
            sys.executable, "-m", "secantus",
            "--config", str(config),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--storage-path", str(self.data_dir),
            "--log-level", "WARNING",
        ]  # fmt: skip
        with self._lock:
            if self._stopping.is_set():
                raise EmbeddedError("stopping")
            with open(self.log_path, "ab") as logfile:
                self.process = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    start_new_session=True,  # Ctrl-C reaches FinGate, which then stops the database in order
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            process = self.process
        log.info("embedded database starting: pid %s, port %s, storage %s", process.pid, self.port, self.data_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._stopping.is_set():
                raise EmbeddedError("the embedded database was stopped while starting")
            if process.poll() is not None:
                raise EmbeddedError(self._failure(f"exited with code {process.returncode}"))
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        _end(process)
        raise EmbeddedError(self._failure(f"did not accept connections within {timeout:.0f} s"))

    def _supervise(self) -> None:
        # PR_SET_PDEATHSIG fires when the thread that started the child ends: this thread
        # starts the restarted children and ends only after stop() has stopped them.
        streak = 0  # restarts since the database last stayed up STABLE_SECONDS
        while (process := self.process) is not None:
            started = time.monotonic()
            process.wait()
            if self._stopping.is_set():
                return
            log.error("embedded database exited with code %s; restarting it", process.returncode)
            if time.monotonic() - started >= STABLE_SECONDS:
                streak = 0
            while True:
                if streak == len(self.restart_delays):
                    self.gave_up = True
                    log.critical("embedded database did not come back after %d restarts; giving up", streak)
                    return
                if self._stopping.wait(self.restart_delays[streak]):
                    return
                streak += 1
                self.restarts += 1
                try:
                    self._launch(START_TIMEOUT)
                    break
                except EmbeddedError as exc:
                    log.error("embedded database restart %d failed: %s", self.restarts, exc)
            log.warning("embedded database restarted (restart %d)", self.restarts)

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
        """Stop supervising, then SIGTERM, wait, SIGKILL: the child never outlives this call."""
        with self._lock:
            self._stopping.set()
            proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            _end(proc)
            log.info("embedded database stopped")
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(STOP_TIMEOUT)

    def __enter__(self) -> EmbeddedMongo:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _end(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.warning("embedded database did not stop within %.0f s; killing it", STOP_TIMEOUT)
        proc.kill()
        proc.wait()


def _module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@contextlib.contextmanager
def database(mongodb_uri: str | None, data_dir: Path | str) -> Iterator[tuple[str, EmbeddedMongo | None]]:
    """The URI to use and the embedded database behind it: the configured MongoDB (None), or an
    embedded one alive and supervised for the block."""
    if mongodb_uri:
        yield mongodb_uri, None
        return
    with EmbeddedMongo(data_dir) as db:
        yield db.uri, db


@contextlib.contextmanager
def database_uri(mongodb_uri: str | None, data_dir: Path | str) -> Iterator[str]:
    """The URI to use: the configured MongoDB, or an embedded one alive for the block."""
    with database(mongodb_uri, data_dir) as (uri, _):
        yield uri


__all__ = ["EmbeddedError", "EmbeddedMongo", "database", "database_uri"]
