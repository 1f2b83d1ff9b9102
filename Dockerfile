# Karyoflow image: the core package, the CLI, the API, the workers and the migrations. CUDA wheels of torch run on the CPU
# too, so one image serves CPU and GPU hosts (GPU via the NVIDIA container toolkit).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    KARYO_CLASSIFIER_WEIGHTS=/app/models/chrnet4.pt KARYO_SEGMENTER_WEIGHTS=/app/models/chrrender.pt
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
# the wheel carries the weights and the split as package data (setup.py), so they come first
COPY models ./models
COPY splits ./splits
COPY karyoflow ./karyoflow
COPY infra ./infra
COPY db ./db
COPY workers ./workers
COPY api ./api
COPY service ./service
RUN pip install . flower==2.2.0
RUN useradd --create-home karyo && chown -R karyo /app
USER karyo
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
# NoDelayH11Protocol: with UVICORN_WORKERS above 1, uvicorn's own protocol leaves Nagle's algorithm
# on and every kept-alive request waits ~40 ms for a delayed ACK (api/http_protocol.py)
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--http", "api.http_protocol:NoDelayH11Protocol"]
