#!/usr/bin/env bash
# Builds rumor as a static binary and packs it into a FROM scratch image.
#
#   deploy/build-image.sh [TAG]        (default rumor:latest)
#
# Environment: CARGO_TARGET_DIR (default <repo>/target), CARGO (default cargo),
# RUMOR_ADAPTER (tokio, the default, or smol: which runtime's binary the
# image carries; it is /rumor either way).
set -euo pipefail

TAG=${1:-rumor:latest}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case ${RUMOR_ADAPTER:-tokio} in
    tokio) PKG=rumor-tokio; BIN=$CARGO_TARGET_DIR/$TARGET/release/rumor ;;
    smol) PKG=rumor-smol; BIN=$CARGO_TARGET_DIR/$TARGET/release/rumor-smol ;;
    *) echo "build-image: RUMOR_ADAPTER must be tokio or smol" >&2; exit 2 ;;
esac

echo "build-image: cargo build -p $PKG --release --target $TARGET (static glibc)" >&2
# An explicit --target keeps these RUSTFLAGS away from build scripts and
# proc macros, which must stay dynamic.
(cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static --cfg chacha20_force_soft --cfg poly1305_force_soft" \
    "${CARGO:-cargo}" build -p "$PKG" --release --target "$TARGET")

# A scratch image has no loader and no libc: refuse anything dynamic.
if command -v file >/dev/null; then
    desc=$(file -L "$BIN")
    case $desc in
        *"statically linked"* | *"static-pie linked"*) ;;
        *) echo "build-image: $BIN is not static: $desc" >&2; exit 1 ;;
    esac
fi
if command -v ldd >/dev/null && ldd "$BIN" 2>&1 | grep -q '=>'; then
    echo "build-image: $BIN links shared libraries:" >&2
    ldd "$BIN" >&2
    exit 1
fi

CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
mkdir "$CTX/data"
if command -v strip >/dev/null; then
    strip -o "$CTX/rumor" "$BIN"
else
    cp "$BIN" "$CTX/rumor"
fi
cp "$HERE/Dockerfile" "$CTX/Dockerfile"
"$CTX/rumor" --version >/dev/null # it runs here, so it runs on scratch

echo "build-image: docker build -t $TAG ($(du -h "$CTX/rumor" | cut -f1) binary)" >&2
docker build --quiet -t "$TAG" "$CTX" >/dev/null
docker run --rm "$TAG" --version >/dev/null
echo "build-image: $TAG ready" >&2
