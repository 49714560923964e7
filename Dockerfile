# Nimbus, built from source: a builder with the engine's build tools (CMake and
# Debian's simde for QuickJS/WAMR, see docs/decisions/0001) and a slim runtime
# that runs as an unprivileged user. `docker compose up` uses it (docker-compose.yml).
FROM rust:1.95-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libsimde-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p nimbus \
 && install -m 0755 target/release/nimbus /usr/local/bin/nimbus

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin nimbus \
 && mkdir -p /app/rules /app/functions /data \
 && chown -R nimbus:nimbus /app /data
COPY --from=builder /usr/local/bin/nimbus /usr/local/bin/nimbus
USER nimbus
WORKDIR /app
ENV NIMBUS_LISTEN=0.0.0.0:8090 \
    NIMBUS_DATA_DIR=/data \
    NIMBUS_LOG_FORMAT=json
EXPOSE 8090
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8090/readyz || exit 1
ENTRYPOINT ["nimbus"]
CMD ["serve"]
