# The proxy image: `tandem-proxy` (the sidecar) and `tandem-proxy init` (the redirection
# init container) from one static binary.
#
#   docker build -f deploy/docker/proxy.Dockerfile -t tandem-proxy:0.1.0 .
#
# Built from the source tree every time (no binary from the host, Cargo.lock enforced),
# in two stages: a Rust toolchain on Alpine, whose native target is musl, links a static
# binary; the runtime is Alpine with iptables, which `tandem-proxy init` drives
# (iptables-save / iptables-restore, IPv4 and IPv6). The default user is the proxy's
# fixed UID, 2102; the injector runs the init container as root with NET_ADMIN and
# NET_RAW only, and the proxy as 2102, whose traffic the rules leave alone.

FROM rust:1.90-alpine AS build
# ring's C and assembly parts.
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tandem-proxy --bin tandem-proxy \
 && cp target/release/tandem-proxy /tandem-proxy

FROM alpine:3.20
RUN apk add --no-cache iptables ip6tables \
 && addgroup -S -g 2102 tandem-proxy \
 && adduser -S -D -H -u 2102 -G tandem-proxy tandem-proxy
COPY --from=build /tandem-proxy /usr/local/bin/tandem-proxy
USER 2102:2102
EXPOSE 15000 15001 15006
ENTRYPOINT ["/usr/local/bin/tandem-proxy"]
