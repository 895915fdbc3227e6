# syntax=docker/dockerfile:1.7
#
# calbridge container images. Every binary is built once, in release mode
# against Cargo.lock (--locked), and copied into distroless/cc: glibc,
# libgcc_s and CA roots, which is all the binaries link (ldd: libc, libm,
# libgcc_s); no shell, no package manager. Every image runs as the numeric
# non-root user 65532 (distroless "nonroot").
#
#   docker build -t calbridge .                                  # every process
#   docker build --target scheduler -t calbridge-scheduler .     # one process
#   (targets: scheduler, adapter-sandbox, adapter-caldav, adapter-google,
#    adapter-microsoft, cli)
#
# The default (last) target holds every binary and runs the CLI; the Helm chart
# (helm/calbridge) uses it and names the binary each container runs. The
# per-process targets listen on all interfaces at their usual ports.

ARG RUST_VERSION=1.95.0
# Pin by digest for reproducible builds, e.g.
# --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:...
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG RUST_VERSION
# The image's toolchain, not rust-toolchain.toml's component list (which
# would make rustup download rustfmt and clippy into the build).
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never \
    CARGO_PROFILE_RELEASE_STRIP=symbols
WORKDIR /src
COPY . .
# One cargo invocation for all six binaries; the registry and target caches
# survive between builds (BuildKit cache mounts), so only copied-out binaries
# leave this stage.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
      -p calbridge-scheduler \
      -p calbridge-adapter-sandbox \
      -p calbridge-adapter-caldav \
      -p calbridge-adapter-google \
      -p calbridge-adapter-microsoft \
      -p calbridge-cli \
 && mkdir -p /out/bin /out/data \
 && cp target/release/calbridge-scheduler \
       target/release/calbridge-adapter-sandbox \
       target/release/calbridge-adapter-caldav \
       target/release/calbridge-adapter-google \
       target/release/calbridge-adapter-microsoft \
       target/release/calbridge \
       /out/bin/

FROM ${RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.source="https://github.com/calbridge/calbridge" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532

FROM runtime AS scheduler
# The store lives under /var/lib/calbridge: mount a volume there.
COPY --from=build --chown=65532:65532 /out/data /var/lib/calbridge
COPY --from=build /out/bin/calbridge-scheduler /out/bin/calbridge /usr/local/bin/
ENV CALBRIDGE_LISTEN=0.0.0.0:50051 \
    CALBRIDGE_DATA_DIR=/var/lib/calbridge/data
EXPOSE 50051
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/calbridge-scheduler"]

FROM runtime AS adapter-sandbox
COPY --from=build /out/bin/calbridge-adapter-sandbox /usr/local/bin/
ENV CALBRIDGE_LISTEN=0.0.0.0:50061
EXPOSE 50061
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/calbridge-adapter-sandbox"]

FROM runtime AS adapter-caldav
COPY --from=build /out/bin/calbridge-adapter-caldav /usr/local/bin/
ENV CALBRIDGE_LISTEN=0.0.0.0:50062
EXPOSE 50062
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/calbridge-adapter-caldav"]

FROM runtime AS adapter-google
COPY --from=build /out/bin/calbridge-adapter-google /usr/local/bin/
ENV CALBRIDGE_LISTEN=0.0.0.0:50063 \
    CALBRIDGE_GOOGLE_WEBHOOK_LISTEN=0.0.0.0:50064
EXPOSE 50063 50064
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/calbridge-adapter-google"]

FROM runtime AS adapter-microsoft
COPY --from=build /out/bin/calbridge-adapter-microsoft /usr/local/bin/
ENV CALBRIDGE_LISTEN=0.0.0.0:50065
EXPOSE 50065
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/calbridge-adapter-microsoft"]

FROM runtime AS cli
COPY --from=build /out/bin/calbridge /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/calbridge"]

# Every process in one image (the default target; the chart's image).
FROM runtime AS all
COPY --from=build --chown=65532:65532 /out/data /var/lib/calbridge
COPY --from=build /out/bin/ /usr/local/bin/
EXPOSE 50051 50061 50062 50063 50064 50065
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/calbridge"]
