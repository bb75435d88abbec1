import WalrusClient
import WalrusStore

/// What the shell talks to: the store embedded in this process (as the original), or a daemon.
protocol ShellBackend: AnyObject, Sendable {
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
final class EmbeddedBackend: ShellBackend, @unchecked Sendable {
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

/// A walrusd (or any Redis-protocol server) over TCP.
final class RemoteBackend: ShellBackend, @unchecked Sendable {
    let connection: RESPConnection
    let location: String

    struct ServerError: Error, CustomStringConvertible {
        var description: String
    }

    init(host: String, port: Int) throws {
        self.connection = try RESPConnection(host: host, port: port)
        self.location = "\(host):\(port)"
    }

    private func call(_ arguments: [[UInt8]]) throws -> RESPValue {
        let reply = try self.connection.command(arguments)
        if case .error(let message) = reply { throw ServerError(description: message) }
        return reply
    }

    func set(_ key: [UInt8], _ value: [UInt8]) throws { _ = try self.call([Array("SET".utf8), key, value]) }

    func get(_ key: [UInt8]) throws -> [UInt8]? {
        guard case .bulk(let value) = try self.call([Array("GET".utf8), key]) else { return nil }
        return value
    }

    func delete(_ key: [UInt8]) throws -> Bool { try self.call([Array("DEL".utf8), key]) == .integer(1) }
    func has(_ key: [UInt8]) throws -> Bool { try self.call([Array("EXISTS".utf8), key]) == .integer(1) }

    func keys() throws -> [[UInt8]] {
        guard case .array(let values?) = try self.call([Array("KEYS".utf8), Array("*".utf8)]) else { return [] }
        return values.compactMap { value -> [UInt8]? in
            if case .bulk(let bytes?) = value { return bytes }
            return nil
        }.sorted { $0.lexicographicallyPrecedes($1) }
    }

    func count() throws -> Int {
        guard case .integer(let count) = try self.call([Array("DBSIZE".utf8)]) else { return 0 }
        return count
    }

    func commit() throws { _ = try self.call([Array("COMMIT".utf8)]) }
    func close() {}
}
