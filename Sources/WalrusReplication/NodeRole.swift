/// This node's part in replication, as one state: everything that asks "may I write?", "do I
/// serve followers?", "whom do I follow?" reads it, and only `NodeRole.StateMachine` changes it.
public enum NodeRole: Sendable, Equatable, CustomStringConvertible {
    /// Takes writes and serves followers.
    case primary
    /// A switchover to `target` (its client address) is under way: writes get TRYAGAIN.
    case paused(target: String)
    /// A stale primary (a newer epoch exists, or a switchover's outcome is unknown): writes get
    /// READONLY with `reason`.
    case fenced(reason: String)
    /// Follows the primary at `host:port` (its replication port): writes get READONLY.
    case following(host: String, port: Int)
    /// Told to follow `target` (REPLICAOF host port, its client address) and finding its
    /// replication port: writes are refused from the moment the command arrived.
    case joining(target: String)

    /// Why writes are refused, in Redis's words (clients act on the codes), or nil.
    public var writeRefusal: String? {
        switch self {
        case .primary: nil
        case .paused(let target):
            "TRYAGAIN Switchover in progress: the primary is moving to \(target); retry there in a moment."
        case .fenced(let reason): "READONLY " + reason
        case .following: "READONLY You can't write against a read only replica."
        case .joining(let target): "READONLY This node is becoming a replica of \(target) (REPLICAOF); write to the primary."
        }
    }

    /// Whether this node follows another.
    public var isFollower: Bool {
        if case .following = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .primary: "primary"
        case .paused(let target): "primary (paused for a switchover to \(target))"
        case .fenced: "primary (fenced)"
        case .following(let host, let port): "follower of \(DaemonAddress.format(host, port))"
        case .joining(let target): "becoming a follower of \(target)"
        }
    }

    /// The transitions, as pure functions of (state, event) → (state, actions): the node performs
    /// the actions (the shape of `GroupCommit.decide`). A refused event leaves the state alone.
    public struct StateMachine: Sendable, Equatable {
        public private(set) var role: NodeRole

        public init(_ role: NodeRole) { self.role = role }

        public enum Event: Sendable, Equatable {
            /// An operator (or REPLICAOF NO ONE) asks this node to become the primary of epoch
            /// `epoch`; `behind` says how many records it knows it is missing.
            case promote(epoch: UInt64, force: Bool, behind: UInt64)
            /// Follow `host:port` from now on.
            case follow(host: String, port: Int)
            /// A switchover to the follower at `target` begins.
            case beginSwitchover(target: String)
            /// The switchover failed before PROMOTE was sent: writes resume here.
            case switchoverFailed
            /// PROMOTE was sent but not confirmed: the target may be primary now.
            case switchoverUnconfirmed(reason: String)
            /// The target confirmed: follow it.
            case switchoverCompleted(host: String, port: Int)
            /// A peer knows a newer epoch: this primary is stale.
            case metHigherEpoch(reason: String)
            /// The primary this node follows handed over to it (switchover), epoch record written.
            case promotedBySwitchover
            /// REPLICAOF `target` (a client address) arrived: refuse writes while its
            /// replication port is found.
            case beginJoining(target: String)
            /// `target`'s replication port is `host:port`: follow it.
            case joined(target: String, host: String, port: Int)
            /// `target` could not be asked: take writes again if nothing else happened meanwhile.
            case joiningFailed(target: String)
        }

        public enum Action: Sendable, Equatable {
            case stopFollowing
            case startFollowing(host: String, port: Int)
            case dropFollowers(reason: String)
            /// Write the epoch record (sealed) and the epoch history before taking writes.
            case beginEpoch(UInt64)
        }

        public enum Refusal: Error, Sendable, Equatable {
            case alreadyPrimary
            case behind(records: UInt64)
            case switchoverInProgress(target: String)
            case notPrimary
        }

        /// Apply `event`: the actions to perform, in order, or why it is refused.
        public mutating func handle(_ event: Event) -> Result<[Action], Refusal> {
            switch (self.role, event) {
            case (.following, .promote(let epoch, let force, let behind)):
                if behind > 0 && !force { return .failure(.behind(records: behind)) }
                self.role = .primary
                return .success([.stopFollowing, .beginEpoch(epoch)])
            case (.fenced, .promote(let epoch, let force, _)):
                // A fenced node may take over again only on the operator's explicit word.
                guard force else { return .failure(.alreadyPrimary) }
                self.role = .primary
                return .success([.beginEpoch(epoch)])
            case (.primary, .promote):
                return .failure(.alreadyPrimary)
            case (.paused(let target), .promote), (.paused(let target), .follow), (.paused(let target), .beginSwitchover),
                (.paused(let target), .beginJoining):
                return .failure(.switchoverInProgress(target: target))
            case (.joining, .promote):
                // REPLICAOF NO ONE after REPLICAOF host port: the last word wins; this node
                // never left its epoch.
                self.role = .primary
                return .success([])

            case (.primary, .beginJoining(let target)), (.joining, .beginJoining(let target)):
                self.role = .joining(target: target)
                return .success([])
            case (_, .beginJoining):
                // A follower or a fenced node refuses writes already.
                return .success([])
            case (.joining(let current), .joined(let target, let host, let port)):
                guard current == target else { return .failure(.notPrimary) }
                self.role = .following(host: host, port: port)
                return .success([
                    .dropFollowers(reason: "this node now follows \(DaemonAddress.format(host, port))"),
                    .startFollowing(host: host, port: port),
                ])
            case (.primary, .joined):
                // Promoted meanwhile (REPLICAOF NO ONE): that word came last.
                return .failure(.alreadyPrimary)
            case (_, .joined(_, let host, let port)):
                return self.handle(.follow(host: host, port: port))
            case (.joining(let current), .joiningFailed(let target)):
                guard current == target else { return .success([]) }
                self.role = .primary
                return .success([])
            case (_, .joiningFailed):
                return .success([])

            case (.following, .follow(let host, let port)):
                self.role = .following(host: host, port: port)
                return .success([.stopFollowing, .startFollowing(host: host, port: port)])
            case (_, .follow(let host, let port)):
                self.role = .following(host: host, port: port)
                return .success([
                    .dropFollowers(reason: "this node now follows \(DaemonAddress.format(host, port))"),
                    .startFollowing(host: host, port: port),
                ])

            case (.primary, .beginSwitchover(let target)):
                self.role = .paused(target: target)
                return .success([])
            case (_, .beginSwitchover):
                return .failure(.notPrimary)

            case (.paused, .switchoverFailed):
                self.role = .primary
                return .success([])
            case (.paused, .switchoverUnconfirmed(let reason)):
                self.role = .fenced(reason: reason)
                return .success([])
            case (.paused, .switchoverCompleted(let host, let port)):
                self.role = .following(host: host, port: port)
                return .success([
                    .dropFollowers(reason: "this node now follows \(DaemonAddress.format(host, port))"),
                    .startFollowing(host: host, port: port),
                ])
            case (_, .switchoverFailed), (_, .switchoverUnconfirmed), (_, .switchoverCompleted):
                return .failure(.notPrimary)

            case (.primary, .metHigherEpoch(let reason)), (.paused, .metHigherEpoch(let reason)), (.joining, .metHigherEpoch(let reason)):
                self.role = .fenced(reason: reason)
                return .success([])
            case (.fenced, .metHigherEpoch), (.following, .metHigherEpoch):
                // Already refusing writes; the first reason stands.
                return .success([])

            case (.following, .promotedBySwitchover):
                self.role = .primary
                return .success([.stopFollowing])
            case (_, .promotedBySwitchover):
                return .failure(.notPrimary)
            }
        }
    }
}

/// `host:port`, with brackets around an IPv6 host.
public enum DaemonAddress {
    public static func format(_ host: String, _ port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
