import WALCore

/// The async and String conveniences of the original's API: `set`, `get`, `delete`, `has`,
/// `keys`, `count`, `commit`, `batch`.
extension KeyValueStore {
    /// Set and wait for the durability the fsync mode promises.
    public func set(_ key: [UInt8], _ value: [UInt8]) async throws {
        try await Self.awaitDurable { callback in try self.set(key: key, value: value, onDurable: callback) }
    }

    /// Set (UTF-8 strings) and wait for durability.
    public func set(_ key: String, _ value: String) async throws {
        try await self.set(Array(key.utf8), Array(value.utf8))
    }

    /// Delete and wait for durability; returns whether the key existed.
    @discardableResult
    public func delete(_ key: [UInt8]) async throws -> Bool {
        var existed = false
        try await Self.awaitDurable { callback in existed = try self.delete(key: key, onDurable: callback) }
        return existed
    }

    /// Delete (UTF-8 string) and wait for durability; returns whether the key existed.
    @discardableResult
    public func delete(_ key: String) async throws -> Bool { try await self.delete(Array(key.utf8)) }

    /// Apply commands atomically and wait for durability.
    public func batch(_ commands: [StoreCommand]) async throws {
        try await Self.awaitDurable { callback in try self.apply(batch: commands, onDurable: callback) }
    }

    /// The value of a UTF-8 key as a string.
    public func get(_ key: String) -> String? {
        self.get(key: Array(key.utf8)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Whether a UTF-8 key is set.
    public func has(_ key: String) -> Bool { self.has(key: Array(key.utf8)) }

    /// Seal every write made so far and wait.
    public func commit() async throws {
        try await Self.awaitDurable { callback in self.commit(onDurable: callback) }
    }

    /// Seal every write made so far, blocking the calling thread (for synchronous tools).
    public func commitBlocking() throws {
        do {
            try self.wal.commitBlocking()
        } catch let error as WALError {
            throw StoreError(error)
        }
    }

    /// Set and block the calling thread until durable (for synchronous tools like the shell).
    public func setBlocking(_ key: [UInt8], _ value: [UInt8]) throws {
        try Self.blockUntilDurable { callback in try self.set(key: key, value: value, onDurable: callback) }
    }

    /// Delete and block the calling thread until durable; returns whether the key existed.
    @discardableResult
    public func deleteBlocking(_ key: [UInt8]) throws -> Bool {
        var existed = false
        try Self.blockUntilDurable { callback in existed = try self.delete(key: key, onDurable: callback) }
        return existed
    }

    static func blockUntilDurable(_ start: (@escaping WriteAheadLog.SealCallback) throws -> Void) throws {
        let semaphore = BlockingSemaphore()
        let box = ErrorBox()
        try start { error in
            box.error = error
            semaphore.signal()
        }
        semaphore.wait()
        if let error = box.error { throw StoreError(error) }
    }

    /// Run a write in the callback form and wait for its callback. In interval mode the log calls
    /// back only on commit, so the write returns as soon as it is applied.
    static func awaitDurable(_ start: (@escaping WriteAheadLog.SealCallback) throws -> Void) async throws {
        let error: WALError? = try await withUnsafeThrowingContinuation { continuation in
            do {
                try start { continuation.resume(returning: $0) }
            } catch {
                continuation.resume(throwing: error)
            }
        }
        if let error { throw StoreError(error) }
    }
}

private final class ErrorBox: @unchecked Sendable {
    var error: WALError?
}
