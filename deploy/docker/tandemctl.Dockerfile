# The CLI alone, e.g. for `tandemctl inject` in a CI pipeline:
#
#   docker build -f deploy/docker/tandemctl.Dockerfile -t tandemctl:0.1.0 .
#   docker run --rm -i tandemctl:0.1.0 inject -f - < deployment.yaml | kubectl apply -f -
#
# Built from the source tree every time, a static (musl) binary on distroless/static,
# as the image's non-root user 65532.

FROM rust:1.90-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tandemctl --bin tandemctl \
 && cp target/release/tandemctl /tandemctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /tandemctl /usr/local/bin/tandemctl
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tandemctl"]
