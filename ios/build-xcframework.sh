#!/usr/bin/env bash
# Builds ScrSyncFFI.xcframework (the Rust library for iOS devices and the
# simulators, with the generated headers and module map) on a Mac with
# Xcode and rustup. Run from the repository root: ios/build-xcframework.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios)
rustup target add "${TARGETS[@]}"
for t in "${TARGETS[@]}"; do
    cargo build --locked --release -p scr-bindings --target "$t"
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/headers" "$work/sim"
cp ios/Sources/ScrSyncFFI/*.h ios/Sources/ScrSyncFFI/module.modulemap "$work/headers/"
# One library for both simulator architectures.
lipo -create \
    target/aarch64-apple-ios-sim/release/libscr_bindings.a \
    target/x86_64-apple-ios/release/libscr_bindings.a \
    -output "$work/sim/libscr_bindings.a"

rm -rf ios/ScrSyncFFI.xcframework
xcodebuild -create-xcframework \
    -library target/aarch64-apple-ios/release/libscr_bindings.a -headers "$work/headers" \
    -library "$work/sim/libscr_bindings.a" -headers "$work/headers" \
    -output ios/ScrSyncFFI.xcframework
echo "built ios/ScrSyncFFI.xcframework"
