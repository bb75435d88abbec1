/// One write, for batches.
public enum StoreCommand: Sendable, Equatable {
    /// Set key to value.
    case set(key: [UInt8], value: [UInt8])
    /// Delete key.
    case delete(key: [UInt8])

    /// Set with string key and value (UTF-8).
    public static func set(_ key: String, _ value: String) -> StoreCommand {
        .set(key: Array(key.utf8), value: Array(value.utf8))
    }

    /// Delete with a string key (UTF-8).
    public static func delete(_ key: String) -> StoreCommand { .delete(key: Array(key.utf8)) }

    var key: [UInt8] {
        switch self {
        case .set(let key, _), .delete(let key): key
        }
    }
}
