# syntax=docker/dockerfile:1
# One image for both planes; the command says which:
#   docker build -t aigw:0.1.0 .
#   docker run --rm aigw:0.1.0 --help
#   docker run -v aigw-data:/var/lib/aigw -p 7070:7070 -p 7080:7080 aigw:0.1.0 \
#     control-plane --config /etc/aigw/webhook_config.yaml --grpc 0.0.0.0:7070 --http 0.0.0.0:7080
# Kubernetes: examples/deploy/.
ARG NODE_VERSION=24

# 1. Build: every dependency, TypeScript → dist/, then the package tarball (what npm would
#    publish; its `files` say what ships).
FROM node:${NODE_VERSION}-bookworm AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build && npm pack --ignore-scripts --pack-destination /tmp/pkg

# 2. Install: the tarball with production dependencies only, at the lockfile's versions.
#    better-sqlite3 is the one native addon: a prebuilt binary or a compile with this
#    stage's toolchain (python3, make, g++), which the runtime image does not carry.
#    test/deploy/package.test.ts runs these same steps on every CI run.
FROM node:${NODE_VERSION}-bookworm AS install
WORKDIR /opt/aigw
COPY --from=build /tmp/pkg/ /tmp/pkg/
COPY package-lock.json ./
RUN tar -xzf /tmp/pkg/aigw-*.tgz --strip-components=1 \
  && npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
  && npm rebuild better-sqlite3 \
  && rm -rf /tmp/pkg

# 3. Run: slim Node, no compiler, not root. State lives in /var/lib/aigw (the working
#    directory, so the default sqlite:.aigw/aigw.db lands there) and /var/spool/aigw.
FROM node:${NODE_VERSION}-bookworm-slim
ENV NODE_ENV=production
COPY --from=install /opt/aigw /opt/aigw
RUN ln -s /opt/aigw/bin/aigw.js /usr/local/bin/aigw \
  && mkdir -p /var/lib/aigw /var/spool/aigw \
  && chown node:node /var/lib/aigw /var/spool/aigw
USER node
WORKDIR /var/lib/aigw
# 7070 gRPC + Connect, 7080 HTTP (dashboard, /metrics, /healthz, /readyz, Admin API):
# the control plane. 8080 the sidecar's proxy, 8081 its /healthz, /readyz, /metrics.
EXPOSE 7070 7080 8080 8081
# For `docker run` and compose; Kubernetes uses the probes in examples/deploy/. A sidecar
# container sets AIGW_HEALTH_URL=http://127.0.0.1:8081/healthz.
ENV AIGW_HEALTH_URL=http://127.0.0.1:7080/healthz
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.AIGW_HEALTH_URL).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["aigw"]
CMD ["--help"]
