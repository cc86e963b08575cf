# One image for every birthmark service (workers, beat, flower, CLI).
FROM python:3.11-slim

# torch/torchvision from the CPU wheel index: PyPI's Linux wheels are the CUDA builds, which pull in
# gigabytes of nvidia-* libraries. For a GPU image pass the matching CUDA index, e.g.
#   docker compose build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    BIRTHMARK_HOME=/var/lib/birthmark
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 birthmark && mkdir -p /var/lib/birthmark \
    && chown birthmark /var/lib/birthmark
WORKDIR /app
# The pins in pyproject.toml (tests/test_compose.py checks that these match them), first and in
# their own layer; the next install keeps them (2.14.1+cpu satisfies ==2.14.1). --no-deps: their
# dependencies (Pillow among them, whose wheels carry AVIF) come from PyPI with the rest, not from
# the older copies on the torch index.
RUN pip install --no-deps --index-url "$TORCH_INDEX_URL" torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY workers workers
COPY curation curation
COPY models models
COPY benchmarks benchmarks
RUN pip install ".[stack]"
USER birthmark
CMD ["birthmark", "--help"]
