import CoreMetrics
import Foundation
public import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
public import Prometheus
public import ServiceLifecycle
import Synchronization
import WALCore
public import WalrusReplication
public import WalrusStore

/// Commands by type and outcome, and their latency, recorded by the connection handler through
/// swift-metrics when the metrics endpoint is on (nil otherwise: nothing on the hot path).
public final class CommandMetrics: Sendable {
    struct Entry: Sendable {
        let ok: CoreMetrics.Counter
        let error: CoreMetrics.Counter
        let latency: CoreMetrics.Timer
    }

    /// Every command in the table has its own label; anything else is counted as "other".
    static var names: [String] { CommandTable.commands.map { $0.name.uppercased() } }
    let entries: [String: Entry]
    let other: Entry

    public init() {
        func entry(_ name: String) -> Entry {
            Entry(
                ok: Counter(label: "walrus_commands_total", dimensions: [("command", name), ("outcome", "ok")]),
                error: Counter(label: "walrus_commands_total", dimensions: [("command", name), ("outcome", "error")]),
                latency: Timer(label: "walrus_command_duration_seconds", dimensions: [("command", name)]))
        }
        self.entries = Dictionary(uniqueKeysWithValues: Self.names.map { ($0, entry($0)) })
        self.other = entry("other")
    }

    func entry(for name: ByteBuffer) -> Entry {
        guard name.readableBytes <= 16 else { return self.other }
        let upper = String(decoding: name.readableBytesView.map { $0 >= 97 && $0 <= 122 ? $0 - 32 : $0 }, as: UTF8.self)
        return self.entries[upper] ?? self.other
    }

    /// One command answered: an error reply starts with `-`.
    func record(_ entry: Entry, reply: ByteBuffer, startedNanoseconds: UInt64) {
        let isError = reply.readableBytesView.first == UInt8(ascii: "-")
        (isError ? entry.error : entry.ok).increment()
        entry.latency.recordNanoseconds(Int64(monotonicNanoseconds() &- startedNanoseconds))
    }
}

/// What the endpoint publishes besides the event-time histograms: read at scrape time from the
/// same counters INFO and `walrusctl status` read, so the three agree.
public final class MetricsCollector: Sendable {
    let registry: PrometheusCollectorRegistry
    let store: KeyValueStore
    let server: RESPServer
    let replication: ReplicationNode?
    /// What each counter was last published at (counters only go up: publish the difference).
    private let published = LockedValue<[String: Int64]>([:])
    /// The followers that have per-follower gauges now.
    private let followerGauges = LockedValue<[String: [Prometheus.Gauge]]>([:])

    public init(registry: PrometheusCollectorRegistry, store: KeyValueStore, server: RESPServer, replication: ReplicationNode?) {
        self.registry = registry
        self.store = store
        self.server = server
        self.replication = replication
    }

    private func counter(_ name: String, _ help: String, _ value: some BinaryInteger) {
        let counter = self.registry.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "total", helpText: help))
        let now = Int64(value)
        let delta = self.published.withLock { published -> Int64 in
            defer { published[name] = now }
            return now - (published[name] ?? 0)
        }
        if delta > 0 { counter.increment(by: delta) }
    }

    private func gauge(_ name: String, _ unit: String, _ help: String, _ value: Double, labels: [(String, String)] = []) -> Prometheus.Gauge {
        let gauge = self.registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: unit, helpText: help), labels: labels)
        gauge.set(value)
        return gauge
    }

    /// Refresh the scrape-time values and render everything in the Prometheus text format.
    public func scrape() -> [UInt8] {
        let wal = self.store.wal
        let statistics = wal.statistics
        self.counter("walrus_wal_appended_records", "Records appended to the write-ahead log.", statistics.recordsAppended)
        self.counter("walrus_wal_written_bytes", "Bytes written to the write-ahead log.", statistics.bytesWritten)
        self.counter("walrus_wal_fsyncs", "fdatasync calls on the write-ahead log.", statistics.fsyncCount)
        self.counter("walrus_wal_write_batches", "Batches written by the log's flusher (group commit).", statistics.writeBatches)
        self.counter("walrus_wal_disk_full_refusals", "Writes refused because the disk was full (a limit hit).", statistics.diskFullRefusals)
        let segments = wal.segmentSummaries
        _ = self.gauge("walrus_wal_segments", "", "Segment files of the log.", Double(segments.count))
        _ = self.gauge("walrus_wal_size", "bytes", "Bytes in the log's segments.", Double(segments.reduce(Int64(0)) { $0 + $1.bytes }))
        _ = self.gauge("walrus_wal_sealed_index", "", "The last record made durable.", Double(wal.sealedIndex))
        _ = self.gauge("walrus_keys", "", "Keys in the store.", Double(self.store.count))
        _ = self.gauge("walrus_applied_index", "", "The last record applied to the store.", Double(self.store.appliedIndex))
        _ = self.gauge(
            "walrus_snapshot_age", "seconds", "Age of the newest snapshot (-1: none yet).", Self.snapshotAge(self.store.configuration.directory))

        let server = self.server.statistics
        _ = self.gauge("walrus_connected_clients", "", "Client connections open now.", Double(server.connectedClients.load(ordering: .relaxed)))
        self.counter("walrus_connections", "Client connections accepted.", server.totalConnections.load(ordering: .relaxed))
        self.counter(
            "walrus_rejected_connections", "Client connections refused at max-clients (a limit hit).",
            server.rejectedConnections.load(ordering: .relaxed))
        self.counter("walrus_protocol_errors", "Requests refused as malformed.", server.protocolErrors.load(ordering: .relaxed))
        self.counter("walrus_commands_processed", "Commands processed (INFO total_commands_processed).", server.totalCommands.load(ordering: .relaxed))

        if let replication = self.replication {
            _ = self.gauge("walrus_is_primary", "", "1 on a primary, 0 on a follower.", replication.isFollower ? 0 : 1)
            self.counter(
                "walrus_replication_refused_peers", "Replication connections refused: too many waiting for HELLO (a limit hit).",
                replication.primary.refusedHandshakeCount)
            var current: [String: [Prometheus.Gauge]] = [:]
            if !replication.isFollower {
                for replica in replication.primary.replicas() where replica.state != .disconnected {
                    let labels = [("follower", replica.nodeID)]
                    current[replica.nodeID] = [
                        self.gauge("walrus_replication_lag", "records", "Records the follower has not made durable.", Double(replica.lagRecords), labels: labels),
                        self.gauge("walrus_replication_lag", "bytes", "Bytes of log the follower has not made durable.", Double(replica.lagBytes), labels: labels),
                        self.gauge(
                            "walrus_replication_lag", "seconds", "Age of the oldest write the follower has not applied.",
                            replica.dataAgeSeconds, labels: labels),
                    ]
                }
            }
            // Followers that left: their series end.
            let gone = self.followerGauges.withLock { previous -> [Prometheus.Gauge] in
                defer { previous = current }
                return previous.filter { current[$0.key] == nil }.flatMap(\.value)
            }
            for gauge in gone { self.registry.unregisterGauge(gauge) }
        }
        return self.registry.emitToBuffer()
    }

    /// Seconds since the newest snapshot file was written, or -1.
    static func snapshotAge(_ directory: String) -> Double {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return -1 }
        let newest = names.compactMap { name in SnapshotName.parse(name).map { (index: $0, name: name) } }.max { $0.index < $1.index }
        guard let newest, let modified = FileIO.fileStatus(directory + "/" + newest.name)?.modified else { return -1 }
        return max(0, Date().timeIntervalSince1970 - Double(modified))
    }
}

/// `GET /metrics` over HTTP/1.1 on its own port (`metrics-port`, `metrics-bind`).
public final class MetricsService: Service, Sendable {
    let collector: MetricsCollector
    let host: String
    let port: Int
    let logger: Logger
    let onBound: @Sendable (Int) -> Void

    public init(collector: MetricsCollector, host: String, port: Int, logger: Logger, onBound: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.collector = collector
        self.host = host
        self.port = port
        self.logger = logger
        self.onBound = onBound
    }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let collector = self.collector
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 64)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(IdleStateHandler(readTimeout: .seconds(60)))
                        try sync.configureHTTPServerPipeline(withErrorHandling: true)
                        try sync.addHandler(MetricsHTTPHandler(collector: collector))
                    }
                }
                .bind(host: self.host, port: self.port)
                .get()
        } catch {
            try? await group.shutdownGracefully()
            throw MetricsBindError(
                description: "Cannot serve metrics on \(self.host):\(self.port): \(error). Pick a free port with metrics-port, or leave it unset to turn metrics off.")
        }
        let port = channel.localAddress?.port ?? self.port
        self.logger.info("Metrics endpoint listening", metadata: ["metrics.address": "\(self.host)", "metrics.port": "\(port)"])
        self.onBound(port)
        try? await gracefulShutdown()
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    struct MetricsBindError: Error, CustomStringConvertible {
        var description: String
    }
}

/// One HTTP connection of the metrics endpoint.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let collector: MetricsCollector
    /// The request being read (the handler lives on its channel's event loop).
    private var head: HTTPRequestHead?

    init(collector: MetricsCollector) { self.collector = collector }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head = self.head else { return }
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            let status: HTTPResponseStatus
            var body: [UInt8]
            var contentType = "text/plain; charset=utf-8"
            if head.method != .GET && head.method != .HEAD {
                status = .methodNotAllowed
                body = Array("Only GET /metrics is served here.\n".utf8)
            } else if path != "/metrics" {
                status = .notFound
                body = Array("Not found: \(path.prefix(200)). The metrics are at /metrics.\n".utf8)
            } else {
                status = .ok
                body = self.collector.scrape()
                contentType = "text/plain; version=0.0.4; charset=utf-8"
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: String(body.count))
            if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
            if head.method == .HEAD { body = [] }
            context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            var buffer = context.channel.allocator.buffer(capacity: body.count)
            buffer.writeBytes(body)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            let keepAlive = head.isKeepAlive
            context.writeAndFlush(self.wrapOutboundOut(.end(nil))).whenComplete { [channel = context.channel] _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
