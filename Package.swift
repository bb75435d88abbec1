// swift-tools-version: 6.1
import PackageDescription

// Layers point one way: WALCore ← WalrusStore ← (replication ← server ← walrusd, later).
// WALCore has no networking; the C libraries come in through pkg-config system libraries.
let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "walrus",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "WALCore", targets: ["WALCore"]),
        .library(name: "WalrusStore", targets: ["WalrusStore"]),
        .executable(name: "walrus", targets: ["walrus"]),
        .executable(name: "walrus-bench", targets: ["walrus-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
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
            name: "CEditLine",
            pkgConfig: "libedit",
            providers: [.apt(["libedit-dev"])]
        ),
        .target(
            name: "WALCore",
            dependencies: [
                "CISAL",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "WalrusStore",
            dependencies: [
                "WALCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "walrus",
            dependencies: [
                "WalrusStore",
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
                "WalrusStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "WalrusTestKit",
            dependencies: [.product(name: "Logging", package: "swift-log")],
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
            name: "WalrusShellTests",
            dependencies: ["walrus", "WalrusStore", "WalrusTestKit"],
            swiftSettings: strictSettings
        ),
    ]
)
