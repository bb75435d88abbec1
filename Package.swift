// swift-tools-version: 6.1
import PackageDescription

// Layers point one way: WALCore ← WalrusStore ← WalrusReplication ← WalrusServer ← walrusd.
// WALCore has no networking; the C libraries come in through pkg-config system libraries.
// Release builds leave out the run-time exclusivity checks on walrus's own code (debug builds, which
// the tests and ThreadSanitizer run, keep them): callgrind counted them at ~1,700 of the ~27,300
// instructions a durable SET costs walrusd at -c 1 (swift_beginAccess and its thread-local access
// set), for properties of classes that only their own event loop or lock touches.
let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "walrus",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "WALCore", targets: ["WALCore"]),
        .library(name: "WalrusStore", targets: ["WalrusStore"]),
        .executable(name: "walrusctl", targets: ["walrusctl"]),
        .executable(name: "walrusd", targets: ["walrusd"]),
        .executable(name: "walrus", targets: ["walrus"]),
        .executable(name: "walrus-bench", targets: ["walrus-bench"]),
        .executable(name: "walrus-fuzz", targets: ["walrus-fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        // Already in the graph through swift-nio: Deque for the log's seal waiters.
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        // TLS for the client and replication links; only walrusd (and its tests) link it.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .systemLibrary(
            name: "CISAL",
            pkgConfig: "libisal",
            providers: [.apt(["libisal-dev"])]
        ),
        .systemLibrary(
            name: "CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        .systemLibrary(
            name: "CCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CEditLine",
            pkgConfig: "libedit",
            providers: [.apt(["libedit-dev"])]
        ),
        // Lua 5.1 (what Redis embeds) with cjson and bit, for scripts; CLuaBridge is the only
        // code that calls the Lua API (a Lua error unwinds with longjmp, never through Swift).
        .systemLibrary(
            name: "CLua",
            pkgConfig: "lua5.1",
            providers: [.apt(["liblua5.1-0-dev", "lua-cjson-dev", "lua-bitop-dev"])]
        ),
        .target(
            name: "CLuaBridge", dependencies: ["CLua"],
            linkerSettings: [.linkedLibrary("lua5.1-cjson"), .linkedLibrary("lua5.1-bitop"), .linkedLibrary("lua5.1")]
        ),
        // One thread-local variable (Swift has none) for WALCore's inline seal.
        .target(name: "CThreadState"),
        .target(name: "CMallocTuning"),
        .target(
            name: "WALCore",
            dependencies: [
                "CISAL",
                "CThreadState",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        // One inline C function: a cache prefetch hint for the store's hash map.
        .target(name: "CPrefetch"),
        .target(
            name: "WalrusStore",
            dependencies: [
                "WALCore",
                "CPrefetch",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "WalrusProtocol",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strictSettings
        ),
        .target(
            name: "WalrusReplication",
            dependencies: [
                "WalrusStore",
                "WalrusProtocol",
                "CCrypto",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "WalrusServer",
            dependencies: [
                "WalrusStore",
                "WalrusClient",
                "WalrusProtocol",
                "WalrusReplication",
                "CLuaBridge",
                "CCrypto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSettings
        ),
        // TLS (swift-nio-ssl, BoringSSL) behind WalrusProtocol's TransportSecurity: the server and
        // replication layers, the fuzz targets and the embedding API do not link it.
        .target(
            name: "WalrusTLS",
            dependencies: [
                "WalrusProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "WalrusSystemd",
            dependencies: ["CSystemd", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),
        .target(
            name: "WalrusClient",
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "walrusd",
            dependencies: [
                "CMallocTuning",
                "WalrusServer",
                "WalrusReplication",
                "WalrusSystemd",
                "WalrusStore",
                "WalrusTLS",
                "WalrusProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "walrusctl",
            dependencies: [
                "WalrusClient",
                "WalrusProtocol",
                "WALCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "walrus",
            dependencies: [
                "WalrusStore",
                "WalrusClient",
                "CEditLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "walrus-bench",
            dependencies: [
                "WALCore",
                "WalrusClient",
                "WalrusStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // Fuzz targets (no ArgumentParser). The command layer's target runs WalrusServer's executor.
        .target(name: "CFuzzerDriver"),
        .target(
            name: "WalrusFuzzTargets",
            dependencies: [
                "WALCore", "WalrusStore", "WalrusProtocol", "WalrusServer",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "walrus-fuzz",
            dependencies: ["WalrusFuzzTargets", "CFuzzerDriver"],
            swiftSettings: strictSettings
        ),
        .target(
            name: "WalrusTestKit",
            dependencies: ["WALCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "WALCoreTests",
            dependencies: ["WALCore", "WalrusTestKit", "CZlib"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "WalrusStoreTests",
            dependencies: ["WalrusStore", "WALCore", "WalrusTestKit"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "WalrusProtocolTests",
            dependencies: [
                "WalrusProtocol",
                "WALCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "WalrusServerTests",
            dependencies: [
                "WalrusServer", "WalrusStore", "WalrusTestKit", "WalrusClient", "walrusd", "walrusctl", "walrus-bench",
                "WalrusFuzzTargets",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "WalrusReplicationTests",
            dependencies: [
                "WalrusReplication", "WalrusProtocol", "WalrusStore", "WALCore", "WalrusTestKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "WalrusShellTests",
            dependencies: ["walrus", "WalrusStore", "WalrusTestKit"],
            swiftSettings: strictSettings
        ),
    ]
)
