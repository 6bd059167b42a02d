"""The flowing layout superbills and statements share: headings, labelled values and tables, in DejaVu Sans."""

from __future__ import annotations

from collections.abc import Sequence

from app.documents.pdf import SANS, Document
from app.documents.values import DASH

WIDTH = 504.0  # US Letter less 54 pt margins


class Sheet(Document):
    def title_block(self, title: str, subtitle: str) -> None:
        self.add_page()
        self.set_font(SANS, size=16)
        self.cell(WIDTH, 22, title, new_x="LMARGIN", new_y="NEXT")
        self.set_font(SANS, size=9)
        self.set_text_color(80, 80, 80)
        self.cell(WIDTH, 14, subtitle, new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0, 0, 0)
        self.ln(6)

    def heading(self, text: str) -> None:
        self.ln(4)
        self.set_font(SANS, size=11)
        self.set_fill_color(235, 235, 235)
        self.cell(WIDTH, 16, text, fill=True, new_x="LMARGIN", new_y="NEXT")
        self.set_font(SANS, size=9)

    def pairs(self, rows: Sequence[tuple[str, str | None]]) -> None:
        """`label: value` lines; a value FinGate lacks shows as "—"."""
        self.set_font(SANS, size=9)
        for label, value in rows:
            self.set_text_color(90, 90, 90)
            self.cell(140, 13, label)
            self.set_text_color(0, 0, 0)
            self.multi_cell(WIDTH - 140, 13, value if value else DASH, new_x="LMARGIN", new_y="NEXT")

    def rows(
        self,
        headers: Sequence[str],
        widths: Sequence[float],
        rows: Sequence[Sequence[str | None]],
        right: set[int],
        whole: frozenset[int] = frozenset(),
    ) -> None:
        """A table; columns in `right` (numbers, money) are right-aligned and never shortened; those in `whole`
        (dates, codes) are never shortened either: a value too wide for its column is printed smaller."""
        self.set_font(SANS, size=8)
        self.set_fill_color(245, 245, 245)
        for i, (header, width) in enumerate(zip(headers, widths, strict=True)):
            self.cell(width, 13, header, border="B", fill=True, align="R" if i in right else "L")
        self.ln(13)
        if not rows:
            self.set_text_color(90, 90, 90)
            self.cell(sum(widths), 12, "none", new_x="LMARGIN", new_y="NEXT")
            self.set_text_color(0, 0, 0)
        for row in rows:
            for i, (value, width) in enumerate(zip(row, widths, strict=True)):
                shown = value if value else DASH
                if i in whole and self.get_string_width(shown) > width - 2:
                    self.set_font_size(8 * (width - 2) / self.get_string_width(shown))
                while i not in right and i not in whole and len(shown) > 3 and self.get_string_width(shown) > width - 2:
                    shown = shown[:-2] + "…"
                self.cell(width, 12, shown, align="R" if i in right else "L")
                self.set_font_size(8)
            self.ln(12)
        self.set_font(SANS, size=9)

    def note(self, text: str) -> None:
        self.set_font(SANS, size=8)
        self.set_text_color(70, 70, 70)
        self.multi_cell(WIDTH, 11, text, new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0, 0, 0)
        self.set_font(SANS, size=9)
