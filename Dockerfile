# Amparo: desk API, dashboard, scheduler and channels in one process (`amparo serve`).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# A fixed uid and gid (10001): files mounted into the container (the master key file, a host
# data directory) must belong to it, and stay 0600 (README, "Deployment").
RUN groupadd --system --gid 10001 amparo \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin amparo \
    && install -d -o amparo -g amparo -m 0700 /data

WORKDIR /app
COPY requirements.lock ./
RUN python -m venv /venv \
    && /venv/bin/pip install --require-hashes -r requirements.lock

COPY pyproject.toml README.md alembic.ini ./
COPY core ./core
COPY flows ./flows
COPY bot ./bot
COPY api ./api
COPY amparo ./amparo
COPY migrations ./migrations
COPY locales ./locales
# Catalogues are compiled here: the running container cannot write into /app.
RUN /venv/bin/pip install --no-deps -e . \
    && /venv/bin/python -c "from core.i18n import compile_catalogues; compile_catalogues()"

USER amparo
ENV PATH=/venv/bin:$PATH \
    AMPARO_MODE=production \
    AMPARO_DATA_DIR=/data \
    AMPARO_HOST=0.0.0.0
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["amparo", "serve"]
