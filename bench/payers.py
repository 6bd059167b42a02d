"""W6: `fingate import-payer`'s path from the fake payer on loopback (the official R4 examples, copied under new ids):
first import (every resource created) and re-import (every resource unchanged), in resources per second."""

from __future__ import annotations

import re
import time
from typing import Any

from app import outbound
from app.payers import job as payer
from app.payers.client import PayerClient
from app.payers.fake import MEMBER, FakePayer, load_examples, serving
from app.store import Store
from app.writes import Writer

DB = "fingate_bench_payer"
PAGE_SIZE = 20
_ID = re.compile(r'"id": "([^"]+)"')


def copies(n: int) -> dict[str, list[str]]:
    """The examples' Coverages and EOBs `n` times each under new ids (the text otherwise byte for byte), one Patient."""
    examples = load_examples()
    out: dict[str, list[str]] = {"Patient": examples["Patient"]}
    for rtype in ("Coverage", "ExplanationOfBenefit"):
        out[rtype] = [_ID.sub(rf'"id": "\1-{i}"', text, count=1) for i in range(n) for text in examples[rtype]]
    return out


async def _timed(store: Store, client: PayerClient) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    job = await payer.run(Writer(store, actor="bench"), client, payer.new_job(client.base, MEMBER), payer.saver(store))
    seconds = time.perf_counter() - started
    if job["status"] != payer.COMPLETED or job["rejected"]:
        raise RuntimeError(f"W6 import did not complete: {job['error']} {job['rejected'][:3]}")
    return job, seconds


async def w6(uri: str, n: int) -> dict[str, Any]:
    """Import `n` copies of the examples (n x 6 + 1 resources), then again; resources per second of each."""
    store = Store(uri, DB)
    await store.drop_all()
    await store.ensure_indexes()
    served = FakePayer(resources=copies(n), page_size=PAGE_SIZE)
    try:
        with serving(served) as base:
            async with PayerClient(base, token=served.token, policy=outbound.Policy(allow_loopback=True)) as client:
                first, first_s = await _timed(store, client)
                again, again_s = await _timed(store, client)
    finally:
        await store.drop_all()
        await store.close()
    total = first["created"]
    assert again["unchanged"] == total, again
    return {
        "resources": total,
        "pages": first["pages"],
        "page_size": PAGE_SIZE,
        "seconds": first_s,
        "per_second": total / first_s,
        "reimport_seconds": again_s,
        "reimport_per_second": total / again_s,
    }
