import Logging
import NIOPosix
import ServiceLifecycle
import ServiceLifecycleTestKit
import WALCore
import WalrusClient
import WalrusServer
import WalrusStore
import WalrusTestKit

let quietLogger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

/// Run a real RESPServer on 127.0.0.1 with a port chosen at run time, over a store in a fresh
/// directory; `body` gets the port; the server is shut down gracefully afterwards.
func withServer<T: Sendable>(
    fsync: FsyncMode = .always,
    directory: TemporaryDirectory? = nil,
    configure: (inout ServerConfiguration) -> Void = { _ in },
    _ body: @Sendable (Int, KeyValueStore) async throws -> T
) async throws -> T {
    let owned = directory == nil
    let directory = directory ?? TemporaryDirectory()
    defer { if owned { directory.remove() } }
    var storeConfiguration = StoreConfiguration(directory: directory.path)
    storeConfiguration.wal.fsyncMode = fsync
    let store = try KeyValueStore.open(storeConfiguration, logger: quietLogger)
    defer { store.close() }
    var configuration = ServerConfiguration()
    configuration.port = 0
    configuration.eventLoopThreads = 2
    configure(&configuration)
    let (ports, portContinuation) = AsyncStream<Int>.makeStream()
    // The shared group serves every test's servers (as one group serves every listener of a daemon).
    let server = RESPServer(
        store: store, configuration: configuration, logger: quietLogger, group: MultiThreadedEventLoopGroup.singleton,
        onBound: { port in portContinuation.yield(port) })
    return try await testGracefulShutdown { trigger in
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                try await server.run()
                return nil
            }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw RESPConnection.ConnectionError(description: "server did not bind") }
            let result = try await body(port, store)
            trigger.triggerGracefulShutdown()
            try await group.waitForAll()
            return result
        }
    }
}

func connect(_ port: Int) throws -> RESPConnection { try RESPConnection(host: "127.0.0.1", port: port) }

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// `words` as one RESP multibulk request, for tests that send a pipeline in one write.
func request(_ words: String...) -> String {
    "*\(words.count)\r\n" + words.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined()
}
