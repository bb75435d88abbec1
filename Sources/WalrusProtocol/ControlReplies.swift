/// The control socket's replies, one `Codable` type per verb: the daemon encodes them, walrusctl
/// decodes them, and a script reads the same JSON (`walrusctl --json` prints it).
///
/// Every reply line is `{"ok": true, "result": {…}}` or `{"ok": false, "error": "…"}`.
public struct ControlReply<Result: Codable & Sendable>: Codable, Sendable {
    public var ok: Bool
    public var result: Result?
    public var error: String?

    public init(result: Result) {
        self.ok = true
        self.result = result
        self.error = nil
    }

    public init(error: String) {
        self.ok = false
        self.result = nil
        self.error = error
    }
}

/// A reply whose result is not looked at (an error, or an unknown shape).
public struct AnyControlReply: Codable, Sendable {
    public var ok: Bool
    public var error: String?
}

public struct FlushReply: Codable, Sendable, Equatable {
    public var sealedIndex: UInt64
    public init(sealedIndex: UInt64) { self.sealedIndex = sealedIndex }
}

public struct CheckpointReply: Codable, Sendable, Equatable {
    public var index: UInt64
    public var path: String
    public var bytes: Int64
    public var keys: Int
    public var removedSegments: [String]
    public var removedSnapshots: [String]
    public var milliseconds: UInt64

    public init(
        index: UInt64, path: String, bytes: Int64, keys: Int, removedSegments: [String], removedSnapshots: [String],
        milliseconds: UInt64
    ) {
        self.index = index
        self.path = path
        self.bytes = bytes
        self.keys = keys
        self.removedSegments = removedSegments
        self.removedSnapshots = removedSnapshots
        self.milliseconds = milliseconds
    }
}

public struct LogLevelReply: Codable, Sendable, Equatable {
    public var level: String
    public var previous: String?
    public init(level: String, previous: String?) {
        self.level = level
        self.previous = previous
    }
}

public struct ReloadReply: Codable, Sendable, Equatable {
    public var result: String
    public init(result: String) { self.result = result }
}

public struct ReplicasReply: Codable, Sendable, Equatable {
    public var replicas: [ReplicaStatus]
    public init(replicas: [ReplicaStatus]) { self.replicas = replicas }
}

public struct DigestReply: Codable, Sendable, Equatable {
    public var digest: String
    public var index: UInt64
    public var keys: Int
    public init(digest: String, index: UInt64, keys: Int) {
        self.digest = digest
        self.index = index
        self.keys = keys
    }
}

public struct PromoteReply: Codable, Sendable, Equatable {
    public var epoch: UInt64
    public var index: UInt64
    public var role: String
    /// What the operator should change (a config that still says `follow`).
    public var note: String?
    public init(epoch: UInt64, index: UInt64, role: String, note: String?) {
        self.epoch = epoch
        self.index = index
        self.role = role
        self.note = note
    }
}

public struct FollowReply: Codable, Sendable, Equatable {
    public var role: String
    public var primary: String
    public init(role: String, primary: String) {
        self.role = role
        self.primary = primary
    }
}

public struct SwitchoverReply: Codable, Sendable, Equatable {
    public var newPrimary: String
    public var clientAddress: String
    public var replicationAddress: String
    public var epoch: UInt64
    public var sealedIndex: UInt64
    public var catchUpMilliseconds: Double
    public var pausedMilliseconds: Double

    public init(
        newPrimary: String, clientAddress: String, replicationAddress: String, epoch: UInt64, sealedIndex: UInt64,
        catchUpMilliseconds: Double, pausedMilliseconds: Double
    ) {
        self.newPrimary = newPrimary
        self.clientAddress = clientAddress
        self.replicationAddress = replicationAddress
        self.epoch = epoch
        self.sealedIndex = sealedIndex
        self.catchUpMilliseconds = catchUpMilliseconds
        self.pausedMilliseconds = pausedMilliseconds
    }
}
