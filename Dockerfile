# syntax=docker/dockerfile:1
# Multi-stage build: a static iscsi-target binary on distroless, as a
# non-root user.
#
#   docker build -t iscsi-target .
#   docker run --rm -p 3260:3260 -p 9273:9273 -v iscsi-state:/var/lib/iscsi-target iscsi-target
#
# Without --lun the daemon serves a 1 GiB sparse file it creates in the
# state volume. Image files only need the volume to be writable by uid
# 65532 (a fresh named volume is). Block-device LUNs need the device
# (--device /dev/sdX) and a user that may open it: add --user 0, or the
# device's group with --group-add.
#
# The HEALTHCHECK runs the binary itself (distroless has no curl): it asks
# the metrics listener's /healthz. Kubernetes probes use /healthz and
# /readyz over HTTP directly (deploy/kubernetes/).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/iscsi-target ./cmd/iscsi-target
# The state directory, owned by the nonroot user so that a fresh volume
# mounted there inherits the ownership.
RUN install -d -m 0700 -o 65532 -g 65532 /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/iscsi-target /usr/local/bin/iscsi-target
COPY --from=build --chown=65532:65532 /out/state /var/lib/iscsi-target
USER 65532:65532
VOLUME ["/var/lib/iscsi-target"]
EXPOSE 3260 9273
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/iscsi-target", "health", "--metrics-listen", "127.0.0.1:9273"]
ENTRYPOINT ["/usr/local/bin/iscsi-target"]
CMD ["serve", "--listen", "0.0.0.0:3260", "--state-dir", "/var/lib/iscsi-target", "--metrics-listen", "0.0.0.0:9273"]
