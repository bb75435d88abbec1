import Synchronization
import WALCore

/// Calls `ready` once every listener has reported that it is bound.
final class ReadinessGate: Sendable {
    private let state: LockedValue<(remaining: Int, port: Int?)>
    private let ready: @Sendable (Int) -> Void

    init(listeners: Int, ready: @escaping @Sendable (Int) -> Void) {
        self.state = LockedValue((listeners, nil))
        self.ready = ready
    }

    /// One listener is bound (the client listener passes its port).
    func bound(port: Int?) {
        let fire = self.state.withLock { state -> Int? in
            if let port { state.port = port }
            state.remaining -= 1
            return state.remaining == 0 ? state.port ?? 0 : nil
        }
        if let port = fire { self.ready(port) }
    }
}
