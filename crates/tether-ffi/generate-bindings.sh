#!/usr/bin/env bash
# Builds Tether's native library and generates its Kotlin, Swift and Python
# bindings with the workspace's own uniffi-bindgen (no global install).
#
#   crates/tether-ffi/generate-bindings.sh [--debug | --release] [--phone-only] [OUT_DIR]
#
# --phone-only leaves the head-unit role out (the `head-unit` feature): the
# library a phone app ships, without `HeadUnit`.
#
# OUT_DIR (default target/bindings) receives:
#   dev/tether/tether.kt                      Kotlin (package dev.tether)
#   Tether.swift, TetherFFI.h, TetherFFI.modulemap   Swift
#   tether.py                                 Python
#   libtether_ffi.so (or .dylib)              the native library, for this host
# For Android or iOS, build the library for the device target with the usual
# cargo target flags (cargo-ndk, xcodebuild); the bindings are the same.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Default: the `mobile` profile (release, size-optimised, LTO), as shipped in
# apps. --release: the plain release profile. --debug: fast build.
profile=mobile
flags=(--profile mobile)
roles="phone and head unit"
out=target/bindings
while [[ $# -gt 0 ]]; do
  case "$1" in
    --debug) profile=debug; flags=(); shift ;;
    --release) profile=release; flags=(--release); shift ;;
    --phone-only) roles="phone only"; phone_only=1; shift ;;
    -*) echo "unknown option: $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
if [[ -n "${phone_only:-}" ]]; then
  flags+=(--no-default-features)
fi
target_dir=${CARGO_TARGET_DIR:-target}
case "$(uname -s)" in
  Darwin) lib="$target_dir/$profile/libtether_ffi.dylib" ;;
  *) lib="$target_dir/$profile/libtether_ffi.so" ;;
esac

echo "== building the native library ($profile, $roles)"
cargo build "${flags[@]}" --locked -p tether-ffi

echo "== generating Kotlin, Swift and Python bindings into $out"
rm -rf "$out"
mkdir -p "$out"
# --no-format: ktlint and swift-format are optional; the output is valid without them.
cargo run --locked -q -p uniffi-bindgen -- generate --library "$lib" \
  --language kotlin --language swift --language python \
  --no-format --out-dir "$out"
cp "$lib" "$out/"
# Bindings are generated from the unstripped library (UniFFI reads its
# metadata symbols); the copy shipped in OUT_DIR is stripped, as an app's
# packaging (Gradle, Xcode) would do. The exported C functions stay.
if [[ "$profile" != debug ]] && command -v strip >/dev/null 2>&1; then
  strip --strip-all "$out/$(basename "$lib")"
fi

for f in dev/tether/tether.kt Tether.swift TetherFFI.h TetherFFI.modulemap tether.py "$(basename "$lib")"; do
  if [[ ! -s "$out/$f" ]]; then
    echo "missing or empty: $out/$f" >&2
    exit 1
  fi
done
echo "== done:"
(cd "$out" && find . -type f -printf '%8s  %p\n' | sort -k2)
