"""The embedded database's lifecycle, against the real SecantusDB child process and the real CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from app import embedded
from app.embedded import EmbeddedError, EmbeddedMongo
from app.store import Store
from tests.harness import free_port, serve

pytestmark = pytest.mark.skipif(bool(os.environ.get("MONGODB_URI")), reason="tests the embedded database")


def secantus_pids(data_dir: Path) -> list[int]:
    """SecantusDB processes serving `data_dir` (read from /proc: no extra dependency)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        storage = str(data_dir.resolve()).encode()  # the engine's storage is a directory inside it
        if b"secantus" in b" ".join(cmdline) and any(a == storage or a.startswith(storage + b"/") for a in cmdline):
            pids.append(int(proc.name))
    return pids


async def test_data_persists_across_restarts(tmp_path: Path) -> None:
    db_name = f"persist_{uuid.uuid4().hex[:8]}"
    with EmbeddedMongo(tmp_path) as first:
        store = Store(first.uri, db_name)
        await store.db["Probe"].insert_one({"_id": "1", "amount": "100.10"})
        await store.close()
    assert secantus_pids(tmp_path) == []
    with EmbeddedMongo(tmp_path) as second:
        store = Store(second.uri, db_name)
        assert await store.db["Probe"].find_one({"_id": "1"}) == {"_id": "1", "amount": "100.10"}
        await store.close()
    assert secantus_pids(tmp_path) == []


def test_a_failed_start_reports_the_log_and_leaves_nothing(tmp_path: Path) -> None:
    with EmbeddedMongo(tmp_path):
        # A second server on the same storage cannot take WiredTiger's lock.
        second = EmbeddedMongo(tmp_path)
        with pytest.raises(EmbeddedError) as failure:
            second.start(timeout=30)
        # Said plainly, without the storage engine's traceback.
        assert "another process holds its storage" in str(failure.value)
        assert "Traceback" not in str(failure.value)
        assert second.process is None or second.process.poll() is not None
    assert secantus_pids(tmp_path) == []


def test_another_failure_reports_the_log(tmp_path: Path) -> None:
    failing = embedded.Engine(embedded.RS, "0", (sys.executable, "-c", "print('no storage for you'); exit(3)"))
    with pytest.raises(EmbeddedError) as failure:
        EmbeddedMongo(tmp_path, failing).start(timeout=30)
    assert "exited with code 3" in str(failure.value)
    assert "Last lines of" in str(failure.value) and "no storage for you" in str(failure.value)


def test_a_port_taken_before_the_server_binds_it_is_left_for_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The free port found is taken before the server binds it (here by a socket bound to it, not listening:
    the server's bind fails and probes are refused, as with a connection's local port): the start goes on at the
    next free port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        first = taken.getsockname()[1]
        ports = iter([first])
        monkeypatch.setattr(embedded, "_free_port", lambda: next(ports, None) or free_port())
        with EmbeddedMongo(tmp_path) as db:
            assert db.port != first
            with socket.create_connection(("127.0.0.1", db.port), timeout=5):
                pass
    assert f"port {first} was taken before the embedded database bound it" in caplog.text
    assert secantus_pids(tmp_path) == []


def _serve(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    environment.update(FINGATE_DATA_DIR=str(tmp_path), FINGATE_PORT=str(port), FINGATE_LOAD_DEMO="false")
    with open(tmp_path / "serve.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], env=environment, stdout=log, stderr=subprocess.STDOUT
        )


def _serving(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`fingate serve` on `tmp_path`, ready: the process and its port."""
    environment = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    environment.update(FINGATE_DATA_DIR=str(tmp_path), FINGATE_LOAD_DEMO="false")
    return serve([sys.executable, "-m", "app.cli", "serve"], environment, tmp_path / "serve.log", timeout=60)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_the_database_on_signals(tmp_path: Path, signum: int) -> None:
    proc, _ = _serving(tmp_path)
    try:
        assert len(secantus_pids(tmp_path)) == 1
        proc.send_signal(signum)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert secantus_pids(tmp_path) == []


def test_the_harness_serves_again_on_another_port_when_its_free_port_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tests' `serve`: a port found free, then taken before uvicorn binds it, costs a restart, not the test."""
    from tests import harness

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        first = taken.getsockname()[1]
        ports = iter([first])
        monkeypatch.setattr(harness, "free_port", lambda: next(ports, None) or free_port())
        proc, port = _serving(tmp_path)
        try:
            assert port != first and "address already in use" in (tmp_path / "serve.log").read_text().lower()
        finally:
            proc.terminate()
            proc.wait(30)
    assert secantus_pids(tmp_path) == []


def test_serve_failing_at_start_up_leaves_no_database(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve(tmp_path, port)
        code = proc.wait(90)
    assert code != 0
    assert secantus_pids(tmp_path) == []
    assert "address already in use" in (tmp_path / "serve.log").read_text().lower()


def test_work_meanwhile_runs_while_the_database_starts(tmp_path: Path) -> None:
    """`fingate serve` imports the app while the database starts: the child is forked first, with no other thread
    in this process that could hold a lock the child needs between fork and exec."""
    seen: list[bool] = []
    db = EmbeddedMongo(tmp_path)

    def meanwhile() -> None:
        seen.append(db.process is not None and db.process.poll() is None)

    db.start(meanwhile=meanwhile)
    try:
        assert seen == [True]  # once, with the child launched
    finally:
        db.stop()
    assert secantus_pids(tmp_path) == []


def test_work_meanwhile_that_fails_leaves_no_database(tmp_path: Path) -> None:
    def meanwhile() -> None:
        raise ImportError("a module that cannot be imported")

    with pytest.raises(ImportError, match="cannot be imported"):
        with embedded.database(None, tmp_path, meanwhile=meanwhile):
            pytest.fail("the block ran")
    assert secantus_pids(tmp_path) == []


def test_no_discovered_secantus_config_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A per-user secantusd.toml that SecantusDB would refuse (or one turning sync_on_commit off)
    # must not reach FinGate's database: it runs on the config file FinGate writes.
    home = tmp_path / "home"
    (home / ".secantus").mkdir(parents=True)
    (home / ".secantus" / "secantusd.toml").write_text("[storage]\nsync_on_commit = false\n[bogus]\n")
    monkeypatch.setenv("HOME", str(home))
    with EmbeddedMongo(tmp_path / "data") as db:
        assert db.process is not None and db.process.poll() is None
        assert "sync_on_commit = true" in (db.data_dir / "fingate-secantusd.toml").read_text()
    assert secantus_pids(tmp_path / "data") == []


def test_each_engine_keeps_its_own_storage(tmp_path: Path) -> None:
    # An engine never opens another engine's (or another version's) files: each has its directory.
    engines = [e for e in (embedded.rs_engine(), embedded.py_engine()) if e]
    directories = set()
    for engine in engines:
        with EmbeddedMongo(tmp_path, engine) as db:
            assert db.data_dir == tmp_path.resolve() / f"{engine.name}-{engine.version}"
            assert (db.data_dir / "WiredTiger").exists()
            directories.add(db.data_dir)
    assert len(directories) == len(engines)
    assert not (tmp_path / "WiredTiger").exists()  # nothing at the top level, where an old store may be
    assert secantus_pids(tmp_path) == []


def test_the_rust_server_is_chosen_where_it_runs(tmp_path: Path) -> None:
    rs = embedded.rs_engine()
    chosen = embedded.choose_engine("auto")
    assert chosen.name == (embedded.RS if rs is not None else embedded.PY)
    # A binary that cannot run here (not an executable for this machine) falls back to the Python server.
    broken = tmp_path / "secantusd-rs"
    broken.write_bytes(b"\x7fELF not really")
    broken.chmod(0o755)
    assert embedded.rs_engine(broken) is None
    assert embedded.choose_engine("auto", broken).name == embedded.PY
    with pytest.raises(EmbeddedError, match="FINGATE_ENGINE"):
        embedded.choose_engine("mongod")


async def test_readyz_names_the_engine(tmp_path: Path) -> None:
    from tests.harness import client_for

    with EmbeddedMongo(tmp_path) as db:
        store = Store(db.uri, "readyz")
        async with client_for(store, embedded=db) as client:
            assert (await client.get("/readyz")).json() == {"status": "ready", "engine": db.engine.label}
        await store.close()


def test_load_while_serving_goes_through_the_running_database(tmp_path: Path) -> None:
    # The storage is locked by the serving FinGate's database: `fingate load` finds it and loads through it.
    proc, port = _serving(tmp_path)
    try:
        patient = tmp_path / "patient.json"
        patient.write_text('{"resourceType": "Patient", "id": "while-serving", "gender": "female"}')
        environment = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
        environment.update(FINGATE_DATA_DIR=str(tmp_path))
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "load", str(patient)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "loaded 1" in done.stdout and "Traceback" not in done.stderr
        assert "using the database of the FinGate serving" in done.stderr
        import httpx

        answer = httpx.post(
            f"http://127.0.0.1:{port}/graphql", json={"query": '{ Patient(id: "while-serving") { gender } }'}
        )
        assert answer.json() == {"data": {"Patient": {"gender": "female"}}}
        # A second server on the same data directory is refused in plain words.
        second = subprocess.run(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())],
            env=environment | {"FINGATE_LOAD_DEMO": "false"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1 and "another FinGate" in second.stderr and "Traceback" not in second.stderr
    finally:
        proc.terminate()
        proc.wait(30)
    assert secantus_pids(tmp_path) == []
