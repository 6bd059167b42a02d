"""The embedded database: SecantusDB run as a child process (its Rust server, else its Python one), never imported here."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("fingate.embedded")

_PR_SET_PDEATHSIG = 1
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
# Waits before each restart after the database dies; once all are spent without it coming back
# (and staying up for STABLE_SECONDS), the supervisor gives up and /healthz turns 503.
RESTART_DELAYS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
STABLE_SECONDS = 30.0
PORT_ATTEMPTS = 3  # starts on a fresh free port when the last one was taken before the server bound it
CONFIG_NAME = "fingate-secantusd.toml"
RUNNING_NAME = "fingate-running.json"  # the serving FinGate's pid and database URI, while it runs
RS = "secantusd-rs"
RS_LOG_FILE_MAX = "32MB"
PY = "secantusd-py"
ENGINES = ("auto", RS, PY)
# The whole SecantusDB configuration FinGate runs on, passed with --config so that no
# ~/.secantus/secantusd.toml or /etc/secantus/secantusd.toml is discovered and applied;
# every other setting is the server's default. The host, port and storage path are per run
# and go on the command line. Both servers (Rust; Python 0.6 and 0.7) read these keys and
# refuse unknown ones (0.7's `enable_test_commands` is off by default there, and absent in 0.6).
CONFIG = {
    "server": {"auth": False, "standalone": False},
    "storage": {"sync_on_commit": True},  # a confirmed commit is on disk: it survives kill -9 and power loss
}


@dataclass(frozen=True)
class Engine:
    """A SecantusDB server that can run here: its name, its own version, and the command starting it."""

    name: str  # RS or PY
    version: str
    command: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def directory(self) -> str:
        """Its storage's directory name: an engine never opens another engine's (or version's) files."""
        return f"{self.name}-{self.version}"

    def argv(self, config: Path, port: int, storage: Path) -> list[str]:
        # The flag too: it overrides any config. The Rust server's write-ahead log files are 2 GB by default,
        # written out in full when one is opened (every start): 3-10 s, and 2 GB of disk, on ext4 here;
        # 32 MB files open in a blink and rotate more often under heavy writes.
        extra = ["--sync-on-commit", "--log-file-max", RS_LOG_FILE_MAX] if self.name == RS else []
        return [
            *self.command,
            "--config", str(config),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--storage-path", str(storage),
            "--log-level", "WARNING",
            *extra,
        ]  # fmt: skip


def _rs_candidates() -> Iterator[Path]:
    """Where the `SecantusDB` wheel puts the Rust server: `<site-packages>/secantusdb.scripts/secantusd-rs`
    (its `bin/secantusd-rs` is a Python script that execs it)."""
    seen = set()
    spec = importlib.util.find_spec("secantus")
    roots = [sysconfig.get_path("platlib"), sysconfig.get_path("purelib")]
    if spec is not None and spec.origin:
        roots.append(str(Path(spec.origin).parent.parent))  # an install with --target, or on PYTHONPATH
    for root in roots:
        path = Path(root) / "secantusdb.scripts" / RS
        if path not in seen:
            seen.add(path)
            yield path


def rs_engine(binary: Path | str | None = None) -> Engine | None:
    """The Rust server, if one is installed (or `binary`, else FINGATE_SECANTUSD_RS) and runs on this
    machine (`--version` answers)."""
    binary = binary or os.environ.get("FINGATE_SECANTUSD_RS") or None
    paths = [Path(binary)] if binary else list(_rs_candidates())
    for path in paths:
        if path.is_file() and (version := _rs_version(str(path.resolve()))) is not None:
            return Engine(RS, version, (str(path.resolve()),))
    return None


@functools.cache
def _rs_version(path: str) -> str | None:
    """What `path --version` says it is (asked once per process), None when it does not run here."""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s cannot run here (%s): using the Python server", path, exc)
        return None
    words = done.stdout.decode(errors="replace").split()  # "secantusd-rs 0.5.3-beta.165\ntree: ..."
    return words[1] if len(words) >= 2 and words[0] == RS else None


def py_engine() -> Engine | None:
    """The Python server of the installed SecantusDB (run as `python -m secantus`)."""
    if importlib.util.find_spec("secantus") is None:
        return None
    try:
        version = importlib.metadata.version("SecantusDB")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return Engine(PY, version, (sys.executable, "-m", "secantus"))


def choose_engine(want: str | None = None, rs_binary: Path | str | None = None) -> Engine:
    """`want` (auto: the Rust server where it runs, else the Python one); from FINGATE_ENGINE and
    FINGATE_SECANTUSD_RS when not given. EmbeddedError when SecantusDB is not installed."""
    want = want or os.environ.get("FINGATE_ENGINE") or "auto"
    if want not in ENGINES:
        raise EmbeddedError(f"FINGATE_ENGINE={want!r}: expected one of {', '.join(ENGINES)}")
    engine = rs_engine(rs_binary) if want in ("auto", RS) else None
    if engine is None and want in ("auto", PY):
        engine = py_engine()
    if engine is None:
        raise EmbeddedError(
            f"no SecantusDB server ({want}) can run here: run `make install` (it installs the `embedded` extra),"
            " or set MONGODB_URI to use a real MongoDB"
        )
    return engine


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


def port_taken(log_path: Path, since: int) -> bool:
    """Whether a server's log, from offset `since`, says its port was in use (both SecantusDB servers' words, and
    uvicorn's)."""
    try:
        with open(log_path, "rb") as log:
            log.seek(since)
            return b"address already in use" in log.read().lower()
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class EmbeddedMongo:
    """A SecantusDB child process on a free loopback port, storing under `data_dir`/<engine>-<version>.

    Once started it is supervised: if it dies, it is restarted on the same port and storage
    (so clients' URIs stay valid), after each of `restart_delays` in turn until it is back.
    """

    restart_delays: tuple[float, ...] = RESTART_DELAYS

    def __init__(self, data_dir: Path | str, engine: Engine | None = None) -> None:
        self.root = Path(data_dir).resolve()
        self.engine = engine or choose_engine()
        self.data_dir = self.root / self.engine.directory  # this engine's own storage
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

    def start(self, timeout: float = START_TIMEOUT, meanwhile: Callable[[], object] | None = None) -> str:
        """Start the server, wait until it accepts connections, then supervise it; returns its URI.

        `meanwhile` runs once the server is launched, before the wait: work that overlaps its start (the server
        is forked before it, while this process has no other thread that could hold a lock the child needs)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if (self.root / "WiredTiger").exists():
            log.warning(
                "%s holds a store of an earlier FinGate (SecantusDB 0.7, written at its top level): it is left as it"
                " is and not opened; %s stores under %s",
                self.root,
                self.engine.label,
                self.data_dir,
            )
        self._stopping.clear()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            # A free port may be taken between our check and the server's bind (a connection's local port,
            # another server): that start fails at once, saying so, and the next free port is tried.
            self.port = _free_port()
            logged = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                self._launch(timeout, meanwhile if attempt == 1 else None)
                break
            except EmbeddedError:
                if attempt == PORT_ATTEMPTS or not port_taken(self.log_path, logged):
                    raise
                log.warning("port %d was taken before the embedded database bound it; trying another", self.port)
        self._supervisor = threading.Thread(target=self._supervise, name="fingate-embedded-supervisor", daemon=True)
        self._supervisor.start()
        return self.uri

    def announce(self) -> None:
        """Record this process as the one serving the storage, so `fingate load` can reach its database."""
        record = {"pid": os.getpid(), "uri": self.uri, "engine": self.engine.label}
        (self.data_dir / RUNNING_NAME).write_text(json.dumps(record))

    def _launch(self, timeout: float, meanwhile: Callable[[], object] | None = None) -> None:
        config = self.data_dir / CONFIG_NAME
        config.write_text(_toml(CONFIG))
        cmd = self.engine.argv(config, self.port, self.data_dir)
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
        log.info(
            "embedded database %s starting: pid %s, port %s, storage %s",
            self.engine.label,
            process.pid,
            self.port,
            self.data_dir,
        )
        if meanwhile is not None:
            try:
                meanwhile()
            except BaseException:
                self.process = None
                _end(process)
                raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._stopping.is_set():
                raise EmbeddedError("the embedded database was stopped while starting")
            if process.poll() is not None:
                raise EmbeddedError(self._failure(f"exited with code {process.returncode}"))
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.01)  # a refused connection costs microseconds; the start it waits for, about 0.2 s
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
        if "Device or resource busy" in _tail(self.log_path, 5):  # WiredTiger's lock, in both servers' words
            return (
                f"The embedded database ({self.engine.label}) {what}: another process holds its storage"
                f" {self.data_dir} (a FinGate serving it?). Stop that process, or serve another --data-dir;"
                " `fingate load` reaches the database of a FinGate that records itself there."
            )
        installed = (
            ""
            if _module_available("secantus") or self.engine.name == RS
            else "\nSecantusDB is not installed: run `make install` (it installs the `embedded` extra)."
        )
        return (
            f"The embedded database ({self.engine.label}) {what}.{installed}\n"
            f"Set MONGODB_URI to use a real MongoDB instead. Last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Stop supervising, then SIGTERM, wait, SIGKILL: the child never outlives this call."""
        with self._lock:
            self._stopping.set()
            proc, self.process = self.process, None
        _forget(self.data_dir / RUNNING_NAME)
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
    return importlib.util.find_spec(name) is not None


def _forget(record: Path) -> None:
    """Remove a running record if it is this process's own."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if json.loads(record.read_text())["pid"] == os.getpid():
            record.unlink()


@dataclass(frozen=True)
class Running:
    """Another FinGate serving a data directory: its pid, its database's URI and engine."""

    pid: int
    uri: str
    engine: str


def running_instance(data_dir: Path | str, engine: Engine | None = None) -> Running | None:
    """The FinGate serving `data_dir`'s storage for `engine` right now (its database accepts connections), if any."""
    engine = engine or choose_engine()
    record = Path(data_dir).resolve() / engine.directory / RUNNING_NAME
    try:
        found = json.loads(record.read_text())
        running = Running(int(found["pid"]), str(found["uri"]), str(found["engine"]))
        port = int(running.uri.split(":")[2].split("/")[0])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    if running.pid == os.getpid():
        return None
    try:
        os.kill(running.pid, 0)
    except ProcessLookupError:
        return None  # a record left by a FinGate that was killed outright
    except PermissionError:
        pass  # alive, another user's
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return running
    except OSError:
        return None


@contextlib.contextmanager
def database(
    mongodb_uri: str | None, data_dir: Path | str, meanwhile: Callable[[], object] | None = None
) -> Iterator[tuple[str, EmbeddedMongo | None]]:
    """The URI to serve on and the embedded database behind it: the configured MongoDB (None), or an
    embedded one alive and supervised for the block, recorded as this process's (`announce`). `meanwhile`
    runs while the embedded database starts (at once with a configured MongoDB).

    EmbeddedError when another FinGate already serves the same storage: one server per data directory."""
    if mongodb_uri:
        if meanwhile is not None:
            meanwhile()
        yield mongodb_uri, None
        return
    engine = choose_engine()
    if (other := running_instance(data_dir, engine)) is not None:
        raise EmbeddedError(
            f"another FinGate (pid {other.pid}) is serving {Path(data_dir).resolve()} with {other.engine} at"
            f" {other.uri}: stop it first, or serve another --data-dir"
        )
    db = EmbeddedMongo(data_dir, engine)
    db.start(meanwhile=meanwhile)
    try:
        log.info("embedded database: %s, storage %s", engine.label, db.data_dir)
        db.announce()
        yield db.uri, db
    finally:
        db.stop()


@contextlib.contextmanager
def database_uri(mongodb_uri: str | None, data_dir: Path | str) -> Iterator[str]:
    """The URI to use for a command (`fingate load`, `persist`): the configured MongoDB; else the database
    of the FinGate already serving `data_dir` (its storage is locked by that server, so the command goes
    through it); else an embedded one alive for the block."""
    if mongodb_uri:
        yield mongodb_uri
        return
    engine = choose_engine()
    if (other := running_instance(data_dir, engine)) is not None:
        log.info("using the database of the FinGate serving %s (pid %s): %s", data_dir, other.pid, other.uri)
        yield other.uri
        return
    with EmbeddedMongo(data_dir, engine) as db:
        yield db.uri


__all__ = ["Engine", "EmbeddedError", "EmbeddedMongo", "choose_engine", "database", "database_uri", "running_instance"]
