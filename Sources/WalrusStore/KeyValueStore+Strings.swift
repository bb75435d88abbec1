public import WALCore

/// When a conditional SET writes (Redis's NX and XX).
public enum SetCondition: Sendable {
    /// Always.
    case always
    /// Only if the key does not exist (NX).
    case ifAbsent
    /// Only if the key exists (XX).
    case ifPresent
}

/// The Redis string semantics for programs that embed the store, without RESP: deadlines,
/// conditional sets, counters, and transactions that fail when a watched key changed. Each
/// write waits for the durability the fsync mode promises, as `set` does.
extension KeyValueStore {
    /// Run `body` as one transaction (one record) and wait until what it wrote is durable.
    public func transaction<R: Sendable>(_ body: (inout StoreTransaction) throws -> R) async throws -> R {
        var result: R?
        try await Self.awaitDurable { callback in
            result = try self.perform(onDurable: callback, body).result
        }
        return result!
    }

    /// Set `key` to `value` with an optional deadline (ms since the Unix epoch) if `condition`
    /// holds; returns whether it was set.
    @discardableResult
    public func set(
        _ key: [UInt8], _ value: [UInt8], expiresAt deadline: Int64? = nil, condition: SetCondition = .always
    ) async throws -> Bool {
        try await self.transaction { store in
            let exists = try key.withUnsafeBytes { try store.exists($0) }
            switch condition {
            case .ifAbsent where exists, .ifPresent where !exists: return false
            default: break
            }
            try store.set(key, value, deadline: deadline)
            return true
        }
    }

    /// Give `key` a deadline (ms since the Unix epoch); one in the past deletes it (as Redis's
    /// EXPIRE does). Returns false when the key is absent.
    @discardableResult
    public func expire(_ key: [UInt8], at deadline: Int64) async throws -> Bool {
        try await self.transaction { store in
            try key.withUnsafeBytes { key in
                guard try store.exists(key) else { return false }
                if deadline <= store.now { return try store.delete(key) }
                return try store.setDeadline(key, deadline)
            }
        }
    }

    /// Remove `key`'s deadline; returns whether it had one.
    @discardableResult
    public func persist(_ key: [UInt8]) async throws -> Bool {
        try await self.transaction { store in
            try key.withUnsafeBytes { key in
                guard let deadline = try store.deadline(key), deadline != nil else { return false }
                return try store.setDeadline(key, nil)
            }
        }
    }

    /// Milliseconds until `key` expires: nil when absent, `.some(nil)` when it has no deadline.
    public func timeToLive(_ key: [UInt8]) throws -> Int64?? {
        try self.perform(expiresKeys: false) { store -> Int64?? in
            guard let deadline = try key.withUnsafeBytes({ try store.deadline($0) }) else { return nil }
            return .some(deadline.map { max($0 - store.now, 0) })
        }.result
    }

    /// Add `delta` to the 64-bit integer at `key` (absent counts as 0), keeping its deadline;
    /// returns the new value. Throws `.invalidArgument` when the value is not an integer or the
    /// sum would overflow (Redis's INCRBY errors).
    @discardableResult
    public func increment(_ key: [UInt8], by delta: Int64 = 1) async throws -> Int64 {
        try await self.transaction { store in
            let old = try key.withUnsafeBytes { try store.entry($0) }
            var current: Int64 = 0
            if let old {
                guard let text = String(validating: old.value, as: UTF8.self), let parsed = Int64(text),
                    String(parsed) == text
                else {
                    throw StoreError(.invalidArgument, "The value of the key is not an integer.")
                }
                current = parsed
            }
            let (sum, overflow) = current.addingReportingOverflow(delta)
            guard !overflow else { throw StoreError(.invalidArgument, "Incrementing by \(delta) would overflow.") }
            try store.set(key, Array(String(sum).utf8), deadline: old?.deadline)
            return sum
        }
    }

    /// Watch `keys`: a transaction started with the token fails if any of them changes before it
    /// runs (Redis's WATCH … MULTI … EXEC).
    public func watch(_ keys: [[UInt8]]) -> WatchToken {
        let token = WatchToken()
        self.watch(keys, token: token)
        return token
    }

    /// Run `body` as one transaction unless a key `token` watches changed since; returns nil (and
    /// writes nothing) when one did. The watch ends either way.
    public func transaction<R: Sendable>(
        ifUnchanged token: WatchToken, _ body: (inout StoreTransaction) throws -> R
    ) async throws -> R? {
        try await self.transaction { store -> R? in
            guard !store.endWatch(token).failed else { return nil }
            return try body(&store)
        }
    }
}
