import WalrusStore

/// What the shell talks to: the store embedded in this process (as the original), or a daemon.
protocol ShellBackend: AnyObject {
    /// Where the data is, for messages.
    var location: String { get }
    func set(_ key: [UInt8], _ value: [UInt8]) throws
    func get(_ key: [UInt8]) throws -> [UInt8]?
    func delete(_ key: [UInt8]) throws -> Bool
    func has(_ key: [UInt8]) throws -> Bool
    func keys() throws -> [[UInt8]]
    func count() throws -> Int
    func commit() throws
    func close()
}

/// The store opened on a data directory in this process.
final class EmbeddedBackend: ShellBackend {
    let store: KeyValueStore
    var location: String { self.store.configuration.directory }

    init(store: KeyValueStore) { self.store = store }

    func set(_ key: [UInt8], _ value: [UInt8]) throws { try self.store.setBlocking(key, value) }
    func get(_ key: [UInt8]) throws -> [UInt8]? { self.store.get(key: key) }
    func delete(_ key: [UInt8]) throws -> Bool { try self.store.deleteBlocking(key) }
    func has(_ key: [UInt8]) throws -> Bool { self.store.has(key: key) }
    func keys() throws -> [[UInt8]] { self.store.keys().sorted().map(\.bytes) }
    func count() throws -> Int { self.store.count }
    func commit() throws { try self.store.commitBlocking() }
    func close() { self.store.close() }
}
