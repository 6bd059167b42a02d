"""The narrative checks FHIRPath's `htmlChecks()` stands for (txt-1, txt-2): basic XHTML only, and some text."""

from __future__ import annotations

from functools import lru_cache
from html.parser import HTMLParser

# R5 narrative.html: the basic formatting elements of HTML 4.0 chapters 7-11 (less 9.4) and 15, `a`, `img`.
ELEMENTS = frozenset(
    "a abbr acronym address b bdo big blockquote br caption cite code col colgroup dd dfn div dl dt em h1 h2 h3 "
    "h4 h5 h6 hr i img kbd li ol p pre q samp small span strong sub sup table tbody td tfoot th thead tr tt ul var".split()
)
ATTRIBUTES = frozenset(
    "abbr accesskey align alt axis border cellpadding cellspacing char charoff class colspan dir frame headers "
    "height href hreflang id lang name rel rev rowspan rules scope span src style summary tabindex title type "
    "valign width xml:lang xmlns".split()
)
_URL_ATTRIBUTES = ("href", "src")
_ACTIVE_SCHEMES = ("javascript:", "vbscript:", "data:text/html")


class _Check(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ELEMENTS:
            self.problems.append(f"<{tag}> is not allowed")
        for name, value in attrs:
            if name not in ATTRIBUTES:
                self.problems.append(f"attribute '{name}' on <{tag}> is not allowed")
            elif name in _URL_ATTRIBUTES and "".join((value or "").split()).lower().startswith(_ACTIVE_SCHEMES):
                self.problems.append(f"<{tag} {name}> may not hold a script URL")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.text = self.text or not data.isspace()

    def handle_pi(self, data: str) -> None:
        self.problems.append("processing instructions are not allowed")

    def unknown_decl(self, data: str) -> None:
        self.problems.append("declarations are not allowed")


@lru_cache(maxsize=64)  # txt-1 and txt-2 read the same narrative
def _parse(div: str) -> _Check:
    check = _Check()
    check.feed(div)
    check.close()
    return check


def basic_html(div: str) -> str | None:
    """txt-1: why the narrative holds more than basic formatting (scripts, forms, event handlers...), or None."""
    check = _parse(div)
    if not div.lstrip().startswith("<div"):
        check.problems.insert(0, "the narrative must be one <div> element")
    return "; ".join(dict.fromkeys(check.problems)) or None


def has_text(div: str) -> str | None:
    """txt-2: None when the narrative has some non-whitespace content (text or an image)."""
    check = _parse(div)
    return None if check.text or "<img" in div else "the narrative holds no text"
