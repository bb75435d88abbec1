import NIOCore
import WalrusProtocol

/// ROLE, from the node's status, with Redis's reply shape; offsets are record indexes.
extension CommandExecutor {
    func writeRole(_ buffer: inout ByteBuffer) {
        let status = self.status.capture()
        if status.isFollower {
            buffer.writeArrayHeader(5)
            buffer.writeBulkReply("slave")
            buffer.writeBulkReply(status.primaryHost ?? "")
            buffer.writeIntegerReply(ServerInfo.primaryClientPort(status))
            let state: String =
                switch status.linkState {
                case "handshake": "handshake"
                case "snapshot", "catching up": "sync"
                case "streaming": "connected"
                default: "connect"
                }
            buffer.writeBulkReply(state)
            buffer.writeIntegerReply(Int(status.appliedIndex))
            return
        }
        let replicas = (status.replicas ?? []).filter { $0.state != .disconnected }
        buffer.writeArrayHeader(3)
        buffer.writeBulkReply("master")
        buffer.writeIntegerReply(Int(status.sealedIndex))
        buffer.writeArrayHeader(replicas.count)
        for replica in replicas {
            buffer.writeArrayHeader(3)
            buffer.writeBulkReply(replica.host)
            buffer.writeBulkReply(String(replica.clientPort))
            buffer.writeBulkReply(String(replica.durable))
        }
    }
}
