# One image for every birthmark service (workers, beat, flower, CLI).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    BIRTHMARK_HOME=/var/lib/birthmark
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 birthmark && mkdir -p /var/lib/birthmark \
    && chown birthmark /var/lib/birthmark
WORKDIR /app
COPY pyproject.toml README.md ./
COPY workers workers
COPY curation curation
COPY models models
COPY benchmarks benchmarks
RUN pip install ".[stack]"
USER birthmark
CMD ["birthmark", "--help"]
