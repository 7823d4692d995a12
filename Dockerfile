# syntax=docker/dockerfile:1
# Multi-stage build: a static iscsi-target binary on a minimal base.
#
#   docker build -t iscsi-target .
#   docker run --rm -p 3260:3260 -v iscsi-state:/var/lib/iscsi-target iscsi-target
#
# Without --lun the daemon serves a 1 GiB sparse file it creates in the
# state volume. Block devices need --device and usually root.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/iscsi-target ./cmd/iscsi-target

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/iscsi-target /usr/local/bin/iscsi-target
VOLUME ["/var/lib/iscsi-target"]
EXPOSE 3260
ENTRYPOINT ["/usr/local/bin/iscsi-target"]
CMD ["serve", "--listen", "0.0.0.0:3260", "--state-dir", "/var/lib/iscsi-target"]
