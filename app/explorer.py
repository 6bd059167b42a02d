"""The GraphiQL explorer: a page on the vendored build in app/static/graphiql, opening on the ready queries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from string import Template

STATIC_DIR = Path(__file__).parent / "static" / "graphiql"
STATIC_PATH = "/graphql/static"
QUERIES_DIR = Path(__file__).parent / "queries"
_PAGE = Path(__file__).parent / "explorer.html"


def ready_queries() -> list[Path]:
    """The explorer's ready billing queries, in order (each is executed by the tests)."""
    return sorted(QUERIES_DIR.glob("*.graphql"))


def _tab(query: Path) -> dict[str, str]:
    """One GraphiQL tab; its variables come from a `.json` file beside the query, when there is one."""
    variables = query.with_suffix(".json")
    tab = {"query": query.read_text()}
    if variables.exists():
        tab["variables"] = variables.read_text()
    return tab


def explorer_page(static_path: str = STATIC_PATH) -> str:
    """The HTML page: local scripts only, a tab per ready query, the first one active."""
    tabs = json.dumps([_tab(q) for q in ready_queries()])
    return Template(_PAGE.read_text()).substitute(
        static=static_path,
        # `</` inside a script element would end it; `<\/` is the same JSON string.
        tabs=tabs.replace("</", "<\\/"),
        version=hashlib.sha256(tabs.encode()).hexdigest()[:12],
    )
