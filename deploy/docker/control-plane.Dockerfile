# The control plane image: `tandem-control-plane`, and `tandemctl` beside it so that
# `kubectl exec deploy/tandem-control-plane -- tandemctl ...` reaches the REST API on the
# pod's loopback with the admin token in the data dir (docs/kubernetes.md).
#
#   docker build -f deploy/docker/control-plane.Dockerfile -t tandem-control-plane:0.1.0 .
#
# Built from the source tree every time, static (musl) binaries on distroless/static
# (CA certificates, /etc/passwd, no shell), as the image's non-root user 65532.

FROM rust:1.90-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tandem-control-plane --bin tandem-control-plane \
 && cargo build --release --locked -p tandemctl --bin tandemctl \
 && cp target/release/tandem-control-plane target/release/tandemctl /

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /tandem-control-plane /usr/local/bin/tandem-control-plane
COPY --from=build /tandemctl /usr/local/bin/tandemctl
USER 65532:65532
EXPOSE 15010 15012 15017
ENTRYPOINT ["/usr/local/bin/tandem-control-plane"]
