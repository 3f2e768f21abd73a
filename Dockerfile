# One image for web, worker and beat (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 OVERSIGHT_VAR_DIR=/app/var
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
RUN SECRET_KEY=build-only python manage.py collectstatic --no-input -v 0 \
    && useradd --system --home /app oversight && mkdir -p /app/var && chown -R oversight /app/var
USER oversight

EXPOSE 8000
CMD ["python", "-m", "uvicorn", "oversight.asgi:application", "--host", "0.0.0.0", "--port", "8000", \
     "--workers", "2", "--lifespan", "off", "--ws", "websockets-sansio", "--proxy-headers"]
