# Mirrors the README's install; serves the gateway for a mounted configuration file.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -c constraints.txt -e . \
    && useradd --system --uid 10001 --home-dir /app gatehouse \
    && mkdir /data && chown gatehouse /data
USER gatehouse
# The gateway's own database (actions, audit trail) lives on a volume the user can write;
# for several replicas or workers (GATEHOUSE_WORKERS) set GATEHOUSE_DATABASE_URL to PostgreSQL.
VOLUME /data
ENV GATEHOUSE_CONFIG=/etc/gatehouse/gatehouse.toml \
    GATEHOUSE_DATABASE_URL=sqlite+aiosqlite:////data/gatehouse.db \
    GATEHOUSE_HOST=0.0.0.0 \
    GATEHOUSE_PORT=8000
EXPOSE 8000
CMD ["gatehouse", "serve"]
