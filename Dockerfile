# syntax=docker/dockerfile:1
#
# Livepush images. One build, one target per binary:
#
#   docker build -t livepush/push .                    # default (last) target: the push edge
#   docker build -t livepush/feeds --target feeds .    # market / sports simulators
#   docker build -t livepush/subscribe --target subscribe .
#
# Every runtime target contains all three static binaries in /usr/local/bin,
# so `docker run --entrypoint subscribe livepush/push ...` works too.
# compose.yaml builds the push and feeds targets.

# ---------------------------------------------------------------- build ----
# Run the compiler on the build host's platform and cross-compile for the
# target platform (fast multi-arch builds with buildx).
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build

ARG TARGETOS
ARG TARGETARCH
ENV CGO_ENABLED=0 \
    GOOS=$TARGETOS \
    GOARCH=$TARGETARCH \
    GOFLAGS=-buildvcs=false

WORKDIR /src

# Dependencies first: this layer is reused until go.mod / go.sum change. The subscriber module is required from
# its directory (replace in go.mod), so its go.mod comes too.
COPY go.mod go.sum ./
COPY subscriber/go.mod subscriber/go.sum ./subscriber/
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/push ./cmd/feeds ./cmd/subscribe

# -------------------------------------------------------------- runtime ----
# Static binaries only: no shell, no package manager, no curl. Health checks
# therefore run the binaries themselves (`<binary> -healthcheck URL`).
FROM gcr.io/distroless/static-debian12:nonroot AS runtime

COPY --from=build /out/push /out/feeds /out/subscribe /usr/local/bin/

# 65532 is distroless' "nonroot" user; numeric so that Kubernetes'
# runAsNonRoot can verify it.
USER 65532:65532

# ------------------------------------------------------------ subscribe ----
FROM runtime AS subscribe
ENTRYPOINT ["/usr/local/bin/subscribe"]

# ---------------------------------------------------------------- feeds ----
FROM runtime AS feeds
ENV FEEDS_HEALTH_ADDR=:8081
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/feeds", "-healthcheck", "http://127.0.0.1:8081/healthz"]
ENTRYPOINT ["/usr/local/bin/feeds"]

# ----------------------------------------------------------------- push ----
# Last stage = default target of `docker build .`.
FROM runtime AS push
ENV PUSH_ADDR=:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/push", "-healthcheck", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/push"]
