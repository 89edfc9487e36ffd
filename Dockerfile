# syntax=docker/dockerfile:1
# SDMS image: `docker build -t sdms .` then
#   docker run -p 8000:8000 -e SDMS_DATABASE_URL=postgresql+asyncpg://... sdms
# The container migrates the database, then serves (see `sdms serve --help`).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/sdms
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
# An editable install keeps app/ beside migrations/, which `sdms migrate` finds from app/.
RUN /opt/venv/bin/pip install --editable .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SDMS_DATABASE_URL=sqlite+aiosqlite:////var/lib/sdms/sdms.db
RUN useradd --system --uid 10001 --home-dir /var/lib/sdms --create-home sdms
COPY --from=build /opt/venv /opt/venv
COPY --from=build /srv/sdms /srv/sdms
WORKDIR /var/lib/sdms
USER sdms
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c \
    "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["sh", "-c", "sdms migrate && exec sdms serve --host 0.0.0.0 --port 8000 --workers ${SDMS_WORKERS:-2}"]
