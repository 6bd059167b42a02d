"""A fake payer FHIR R4 API on loopback serving the official R4 examples: for the tests, `make bench` and the README.

It is a patient-access API of one member, as CMS Blue Button is: its token is the member's, and it answers a search for
that member's Coverage and ExplanationOfBenefit with every Coverage and ExplanationOfBenefit example it holds (the
official examples share no patient: the Coverages' beneficiaries are Patient/4 and Patient/5, which have no example,
the EOBs' patient is pat1). Searches are paged `page_size` at a time with `Bundle.link[next]`; `POST /token` takes
OAuth2 client credentials; `faults` makes chosen pages answer an error status first (a 429 with Retry-After, a 500).

    python -m app.payers.fake [PORT]   # serves http://127.0.0.1:PORT/fhir, token endpoint /token
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

EXAMPLES = Path(__file__).resolve().parents[2] / "schema" / "r4" / "examples"
MEMBER = "pat1"
CLIENT_ID = "fingate-demo"
CLIENT_SECRET = "demo-secret"  # a fake's published credential, nothing real
SEARCH = {"Coverage": ("beneficiary", f"Patient/{MEMBER}"), "ExplanationOfBenefit": ("patient", MEMBER)}


def load_examples(folder: Path = EXAMPLES) -> dict[str, list[str]]:
    """The examples by type, as their JSON text: served byte for byte, so every amount keeps the digits HL7 wrote."""
    by_type: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.json")):
        text = path.read_text()
        by_type.setdefault(json.loads(text)["resourceType"], []).append(text.strip())
    return by_type


def _id(text: str) -> str:
    return str(json.loads(text).get("id"))


@dataclass
class FakePayer:
    """The served data and behaviour; change `resources` between imports to play a payer's update."""

    resources: dict[str, list[str]] = field(default_factory=load_examples)  # type -> JSON texts
    page_size: int = 2
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    faults: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # (type, page) -> statuses, served first
    retry_after: str = "7"
    requests: list[str] = field(default_factory=list)  # path?query of every FHIR request, in order
    tokens_issued: int = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/fhir/{type}/{id}", self._read),
                Route("/fhir/{type}", self._search),
            ]
        )

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))  # a form body, without python-multipart
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if form.get("grant_type") != "client_credentials" or request.headers.get("authorization") != expected:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        self.tokens_issued += 1
        return JSONResponse({"access_token": self.token, "token_type": "bearer", "expires_in": 300})

    def _refused(self, request: Request) -> Response | None:
        self.requests.append(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _outcome(401, "login", "a valid bearer token is required")
        return None

    async def _read(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        rtype, id = request.path_params["type"], request.path_params["id"]
        if rtype == "Patient" and id != MEMBER:
            return _outcome(403, "forbidden", "the token is for another member")
        for text in self.resources.get(rtype, []):
            if _id(text) == id:
                return _raw(text.encode())
        return _outcome(404, "not-found", f"{rtype}/{id} is not known")

    async def _search(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        rtype = request.path_params["type"]
        if rtype not in SEARCH:
            return _outcome(404, "not-supported", f"no search on {rtype}")
        param, member = SEARCH[rtype]
        if request.query_params.get(param) != member:
            return _outcome(403, "forbidden", f"{rtype} is searched by {param}={member} with this token")
        page = int(request.query_params.get("_page", "1"))
        statuses = self.faults.get((rtype, page))
        if statuses:
            status = statuses.pop(0)
            headers = {"Retry-After": self.retry_after} if status == 429 else {}
            return _outcome(status, "transient", "try again later", headers)
        matches = self.resources.get(rtype, [])
        chunk = matches[(page - 1) * self.page_size : page * self.page_size]
        links = [{"relation": "self", "url": str(request.url)}]
        if page * self.page_size < len(matches):
            links.append(
                {"relation": "next", "url": f"{request.base_url}fhir/{rtype}?{param}={member}&_page={page + 1}"}
            )
        head = {"resourceType": "Bundle", "type": "searchset", "total": len(matches), "link": links}
        entries = ",".join(
            f'{{"fullUrl": {json.dumps(f"{request.base_url}fhir/{rtype}/{_id(t)}")}, "resource": {t}, '
            '"search": {"mode": "match"}}'
            for t in chunk
        )
        return _raw((json.dumps(head)[:-1] + f', "entry": [{entries}]}}').encode())

    def replace(self, text: str) -> None:
        """Serve `text` (a resource's JSON) in place of the resource of its type and id: the payer changed it."""
        rtype, id = json.loads(text)["resourceType"], _id(text)
        self.resources[rtype] = [text if _id(t) == id else t for t in self.resources[rtype]]


def _raw(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/fhir+json", headers=headers)


def _outcome(status: int, code: str, text: str, headers: dict[str, str] | None = None) -> Response:
    issue = {"severity": "error", "code": code, "diagnostics": text}
    return _raw(json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}).encode(), status, headers)


@contextmanager
def serving(payer: FakePayer, port: int = 0, ready_within: float = 60.0) -> Iterator[str]:
    """Serve `payer` on 127.0.0.1 (port 0: any free one) in a thread; yields its base URL (`.../fhir`)."""
    import uvicorn

    config = uvicorn.Config(payer.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="fake-payer", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_within
    while not server.started:  # a generous bound on start-up, not a timing assumption
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fake payer did not start")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{bound}/fhir"
    finally:
        server.should_exit = True
        thread.join(timeout=ready_within)


def main() -> None:  # pragma: no cover (the README's example)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8090
    payer = FakePayer()
    with serving(payer, port) as base:
        print(f"fake payer: {base} (token endpoint {base.removesuffix('/fhir')}/token)", flush=True)
        print(f"  client id {CLIENT_ID}, client secret {CLIENT_SECRET}, member {MEMBER}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
