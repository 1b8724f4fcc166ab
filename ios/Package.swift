// swift-tools-version:5.9
// SCR Sync for iOS: the UniFFI-generated Swift (Sources/ScrSync, regenerated
// by scripts/bindings; CI fails if stale) over the Rust library. On Apple
// platforms the library comes as ScrSyncFFI.xcframework (build it with
// build-xcframework.sh on a Mac); on Linux, where CI runs the tests, as the
// shared library the workspace builds, through a system-library target.
import PackageDescription

#if os(Linux)
let ffi: Target = .systemLibrary(name: "ScrSyncFFI", path: "Sources/ScrSyncFFI")
#else
let ffi: Target = .binaryTarget(name: "ScrSyncFFI", path: "ScrSyncFFI.xcframework")
#endif

let package = Package(
    name: "ScrSync",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "ScrSync", targets: ["ScrSync"]),
    ],
    targets: [
        ffi,
        .target(name: "ScrSync", dependencies: ["ScrSyncFFI"], path: "Sources/ScrSync"),
        .testTarget(name: "ScrSyncTests", dependencies: ["ScrSync"], path: "Tests/ScrSyncTests"),
    ]
)
