FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RELEASECENTER_VAR_DIR=/app/var

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# collectstatic needs settings to load; a build-time key is used only for this step.
RUN SECRET_KEY=build-only-key-not-used-at-runtime-0123456789abcdefghijklmnop \
    python manage.py collectstatic --noinput -v0 \
 && useradd --system --uid 10001 --home /app releasecenter \
 && mkdir -p /app/var && chown -R releasecenter /app/var

USER releasecenter
EXPOSE 8000
# uvicorn with WEB_CONCURRENCY processes, after preparing the metrics directory they share
# (releasecenter/serve.py).
CMD ["python", "-m", "releasecenter.serve", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
