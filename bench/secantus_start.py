"""How long `secantusd-rs` takes to start as its store grows, reproduced with plain PyMongo (for an upstream report).

    python bench/secantus_start.py PATH-TO-secantusd-rs [--steps 0,20000,40000,80000] [--kill]

It fills one temporary store in steps (1.5 KB documents, one index), and after each step stops the server
(SIGTERM, or SIGKILL with `--kill`) and times five starts: the server's start to its first answered `ping`,
and the CPU it used by then. The server reads and LZ4-decompresses stored pages before it answers (`perf`
shows `LZ4_decompress_safe` at the top), so its start grows with what it stores, however it was stopped.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pymongo import MongoClient

DOCUMENT = {"text": "x" * 1500, "tags": ["a", "b", "c"]}
STARTS = 5


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(binary: str, storage: Path) -> tuple[subprocess.Popen[bytes], MongoClient, float, float]:
    """The server on `storage`, a client, the seconds to its first ping answered and its CPU seconds by then."""
    port = _port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage), "--log-file-max", "32MB"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while True:  # the port first: a client that finds it closed tries again only every 0.5 s
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.perf_counter() - started > 60:
                process.kill()
                raise SystemExit(f"{binary} did not start") from None
            time.sleep(0.005)
    client: MongoClient = MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true")
    client.admin.command("ping")
    seconds = time.perf_counter() - started
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return process, client, seconds, cpu


def _stop(process: subprocess.Popen[bytes], client: MongoClient, kill: bool) -> None:
    client.close()
    process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    process.wait(60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", help="the secantusd-rs binary")
    parser.add_argument("--steps", default="0,20000,40000,80000", help="documents added before each measurement")
    parser.add_argument("--kill", action="store_true", help="stop the server with SIGKILL, not SIGTERM")
    args = parser.parse_args(argv)
    stored = 0
    print("| documents | MB on disk | start to ping, median (s) | server CPU by then (s) |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="secantus-start-") as name:
        storage = Path(name)
        for step in (int(s) for s in args.steps.split(",")):
            process, client, _, _ = _start(args.binary, storage)
            docs = client["start"]["docs"]
            docs.create_index("n")
            for first in range(stored, stored + step, 1000):
                docs.insert_many([{**DOCUMENT, "n": n} for n in range(first, min(first + 1000, stored + step))])
            stored += step
            _stop(process, client, args.kill)
            timed = []
            for _ in range(STARTS):
                process, client, seconds, cpu = _start(args.binary, storage)
                _stop(process, client, args.kill)
                timed.append((seconds, cpu))
            size = sum(f.stat().st_size for f in storage.iterdir() if f.is_file()) / 1e6
            median = statistics.median(s for s, _ in timed)
            print(
                f"| {stored:,} | {size:.0f} | {median:.3f} | {statistics.median(c for _, c in timed):.2f} |", flush=True
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
