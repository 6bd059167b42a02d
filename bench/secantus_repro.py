"""Two costs of SecantusDB's Python server, reproduced with plain PyMongo (for an upstream report).

    python bench/secantus_repro.py [--rs PATH-TO-secantusd-rs]

1. `find({_id: {$in: [k ids]}})`: the time per returned document grows with k (the matcher re-checks each
   document against the whole list: k x k work), where an indexed point lookup should cost the same per id.
2. `find(filter, limit=10)` and `count_documents(filter)`: the time grows with the number of documents
   matching `filter`, not with the 10 returned (each match is decoded before the limit or the count applies).

It starts the Python server (`python -m secantus`) of the SecantusDB installed beside this Python, and the
Rust server too when given `--rs`, each on an empty temporary storage; needs only SecantusDB and PyMongo.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo import MongoClient

DOCS = 2000
PAYLOAD = "x" * 1000  # about 1 KB per document


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(command: list[str], storage: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, f"mongodb://127.0.0.1:{port}/?directConnection=true"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{command[0]} did not start")


def _median_ms(call: Callable[[], Any], n: int = 7) -> float:
    call()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(uri: str) -> dict[str, float]:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    coll = client["repro"]["docs"]
    coll.drop()
    coll.insert_many([{"_id": f"d{n:05}", "payload": PAYLOAD} for n in range(DOCS)])
    coll.create_index("tag")  # so a query of `tag` reads only its matches (an index scan), not the collection
    out = {}
    for k in (50, 100, 200, 400, 800):
        ids = [f"d{n:05}" for n in range(0, 2 * k, 2)]
        ms = _median_ms(lambda ids=ids: list(coll.find({"_id": {"$in": ids}})))
        out[f"$in of {k} ids: ms per document"] = ms / k
    for matching in (10, 200, 1000, 1900):
        coll.update_many({}, {"$set": {"tag": False}})
        coll.update_many({"_id": {"$lt": f"d{matching:05}"}}, {"$set": {"tag": True}})
        out[f"limit 10 of {matching} matches: ms"] = _median_ms(lambda: list(coll.find({"tag": True}, limit=10)))
        out[f"count of {matching} matches: ms"] = _median_ms(lambda: coll.count_documents({"tag": True}))
    client.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rs", help="a secantusd-rs binary to compare with")
    args = parser.parse_args(argv)
    servers = {"python server": [sys.executable, "-m", "secantus"]}
    if args.rs:
        servers["rust server"] = [args.rs]
    results = {}
    for name, command in servers.items():
        with tempfile.TemporaryDirectory(prefix="secantus-repro-") as tmp:
            process, uri = _start(command, Path(tmp))
            try:
                results[name] = measure(uri)
            finally:
                process.terminate()
                process.wait(30)
    names = list(results)
    print("| measure | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for key in results[names[0]]:
        print(f"| {key} | " + " | ".join(f"{results[n][key]:.3f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
