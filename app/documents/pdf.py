"""A deterministic fpdf2 document: embedded DejaVu fonts (app/documents/fonts), fixed dates, producer and IDs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

FONTS = Path(__file__).resolve().parent / "fonts"
SANS = "DejaVuSans"
MONO = "DejaVuSansMono"
# Same data, same bytes: no clock in the file. The /ID is fpdf2's digest of the content and this date.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
PRODUCER = "FinGate"


class Document(FPDF):
    """US Letter in points, DejaVu Sans and Sans Mono embedded (subsets), metadata fixed."""

    def __init__(self, title: str) -> None:
        super().__init__(orientation="portrait", unit="pt", format="letter")
        self.set_creation_date(EPOCH)
        self.set_producer(PRODUCER)
        self.set_creator(PRODUCER)
        self.set_title(title)
        self.set_auto_page_break(auto=True, margin=54)
        self.set_margins(54, 54, 54)
        self.add_font(SANS, fname=str(FONTS / "DejaVuSans.ttf"))
        self.add_font(MONO, fname=str(FONTS / "DejaVuSansMono.ttf"))
        self.set_font(SANS, size=10)

    def bytes(self) -> bytes:
        return bytes(self.output())
