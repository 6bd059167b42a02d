"""Each document's first page rasterised with poppler's `pdftoppm` (which `make e2e` installs) and found not blank."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.test_documents import client, docs_store  # noqa: F401  (the module's fixtures: data and an app)

ARTIFACTS = Path(os.environ.get("FINGATE_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"))
PDFTOPPM = shutil.which("pdftoppm")
DOCUMENTS = {
    "cms1500-plain": "/Claim/doc-claim/$cms1500",
    "cms1500-form": "/Claim/doc-claim/$cms1500?layout=form",
    "cms1500-demo": "/Claim/demo-claim-04/$cms1500",
    "superbill": "/Claim/doc-claim/$superbill",
    "superbill-demo": "/Claim/demo-claim-04/$superbill",
    "statement-invoice": "/Invoice/doc-invoice/$statement?asOf=2026-12-01",
    "statement-demo": "/Invoice/demo-invoice-1/$statement?asOf=2026-12-01",
    "statement-patient": "/Patient/doc-patient/$statement?asOf=2026-12-01",
}


def _first_page_png(pdf: bytes, tmp_path: Path) -> bytes:
    assert PDFTOPPM is not None
    (tmp_path / "doc.pdf").write_bytes(pdf)
    command = [PDFTOPPM, "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", str(tmp_path / "doc.pdf")]
    subprocess.run([*command, str(tmp_path / "page")], capture_output=True, check=True, timeout=60)
    return (tmp_path / "page.png").read_bytes()


def _save(name: str, png: bytes) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_bytes(png)


@pytest.mark.skipif(PDFTOPPM is None, reason="pdftoppm (poppler-utils) is not installed: `make e2e` installs it")
@pytest.mark.parametrize("name", list(DOCUMENTS))
async def test_the_first_page_rasterises_to_something_not_blank(
    client: httpx.AsyncClient,  # noqa: F811
    name: str,
    tmp_path: Path,
) -> None:
    response = await client.get(DOCUMENTS[name])
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf", response.text
    png = _first_page_png(response.content, tmp_path)
    image = Image.open(io.BytesIO(png)).convert("L")
    assert image.size == (510, 660)  # US Letter at 60 dpi
    dark = sum(count for level, count in enumerate(image.histogram()) if level < 128)
    assert dark > 500, f"{name}: only {dark} dark pixels on the first page"
    _save(f"e2e-document-{name}.png", png)
