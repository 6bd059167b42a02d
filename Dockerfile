# FinGate on a real MongoDB (see compose.yaml). The embedded database is not in this image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    FINGATE_HOST=0.0.0.0 FINGATE_PORT=8000 FINGATE_LOAD_DEMO=false
WORKDIR /srv/fingate

COPY pyproject.toml README.md LICENSE ./
COPY app ./app
COPY schema ./schema
RUN pip install --no-compile -e . \
 && useradd --system --uid 10001 --home-dir /srv/fingate fingate

USER fingate
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["fingate", "serve"]
