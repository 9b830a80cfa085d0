# syntax=docker/dockerfile:1
#
# Mirror in a container: `docker build -t mirror .`, then
#   docker run --rm -p 4443:4443/udp -p 4443:4443/tcp \
#     -v "$PWD/deploy/mirror.toml:/etc/mirror/mirror.toml:ro" \
#     -v "$PWD/deploy/tls:/etc/mirror/tls:ro" mirror
# compose.yaml runs it with a Varnish tier in front; deploy/README.md says more.

# ---- build ------------------------------------------------------------------------
# Debian 12, like the runtime stage below: the binary links the glibc and the libav
# sonames (libavcodec59 …) of bookworm, so both stages must be the same release.
FROM rust:1-bookworm AS builder
WORKDIR /src

# scripts/setup is the one list of Debian packages the project builds with (libav -dev,
# clang for ffmpeg-next's bindgen, pkg-config, Node.js and npm for hls.js). It also
# installs what the test suite needs (Chromium, GStreamer, Varnish, nginx, Prometheus):
# a larger builder stage, in exchange for no second package list to keep in step.
# Copied alone first so that this layer is rebuilt only when the set-up or the pinned
# npm packages change, not on every source edit.
COPY scripts/setup scripts/setup
COPY package.json package-lock.json ./
RUN scripts/setup

COPY . .
# build.rs embeds node_modules/hls.js (installed by scripts/setup above) into the
# binary, so the player page works without files beside it. The registry and target
# caches survive between builds (BuildKit); the binary is copied out of the cached
# target directory in the same step, since a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mirror-cli \
    && install -m 0755 target/release/mirror /usr/local/bin/mirror

# ---- run --------------------------------------------------------------------------
FROM debian:bookworm-slim

# Only libav's runtime libraries (x264, x265 and the rest come in as their
# dependencies), not the -dev packages, compilers or test tools of the build stage.
# Not libavdevice59: the binary does not link it (`readelf -d` lists libavutil,
# libavformat, libavfilter, libswscale and libavcodec; ffmpeg-next's `device` feature is
# off), and it would pull in SDL2, PulseAudio, X11 and OpenGL client libraries.
# fonts-dejavu-core: the test pattern draws its capture clock with DejaVu Sans Mono
# Bold (source.font_file's default path).
# ca-certificates: the CA store with which libav (GnuTLS) checks https:// sources.
# curl: the HEALTHCHECK below.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 \
        libavfilter8 \
        fonts-dejavu-core ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid, so that mounted files (the TLS key must be readable by it, and
# Mirror warns when the key is readable by anyone else) can be chowned to it on the
# host: `chown 10001:10001 key.pem && chmod 600 key.pem`.
# The home directory is made by hand: no shell start-up files from /etc/skel in it.
RUN groupadd --system --gid 10001 mirror \
    && useradd --system --uid 10001 --gid mirror --home-dir /var/lib/mirror \
        --no-create-home --shell /usr/sbin/nologin mirror \
    && install -d -o mirror -g mirror -m 0750 /var/lib/mirror \
    && install -d -o root -g root -m 0755 /etc/mirror /etc/mirror/tls

COPY --from=builder /usr/local/bin/mirror /usr/local/bin/mirror

# The working directory is Mirror's only writable place: `certs/` (a generated
# development certificate when none is configured) and `mirror record`'s output.
# Mount a volume here to keep a generated certificate across restarts (a new named
# volume takes this directory's owner, mirror, from the image).
WORKDIR /var/lib/mirror
USER mirror

# HTTP/3 on UDP and HTTP/1.1 + HTTP/2 on TCP share one port (server.listen). The plain
# HTTP listener for a cache tier (server.http_listen) is deliberately not exposed: it is
# for a private network only; compose.yaml reaches it container to container.
EXPOSE 4443/udp 4443/tcp

# /healthz answers as soon as the listeners are up. -k: the certificate names the
# public host, not 127.0.0.1. The start period covers libav start-up and the encoder
# probe; the config must keep TCP on 4443 for this to reach it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsk --max-time 2 https://127.0.0.1:4443/healthz || exit 1

# Mirror handles SIGTERM itself (no new connections, GOAWAY, held requests answered,
# up to server.shutdown_grace_ms, 10 s by default): give `docker stop` more than that,
# e.g. `docker stop -t 15` or compose's stop_grace_period.
STOPSIGNAL SIGTERM

# Config and certificates are mounted, never baked in: /etc/mirror/mirror.toml (see
# deploy/mirror.toml), /etc/mirror/tls/cert.pem and key.pem (named by that file's
# server.cert and server.key). Mount the tls directory, not the two files: a renewed
# certificate replaced on the host by a rename is then seen in the container.
ENTRYPOINT ["mirror"]
CMD ["serve", "--config", "/etc/mirror/mirror.toml"]
