import CoreMetrics
import Foundation
public import Logging
public import NIOCore
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

    /// Refresh the scrape-time values (from one status snapshot, as INFO and walrusctl read it)
    /// and render everything in the Prometheus text format.
    public func scrape() -> [UInt8] {
        let status = self.server.status.capture()
        let statistics = self.store.wal.statistics
        self.counter("walrus_wal_appended_records", "Records appended to the write-ahead log.", statistics.recordsAppended)
        self.counter("walrus_wal_written_bytes", "Bytes written to the write-ahead log.", statistics.bytesWritten)
        self.counter("walrus_wal_fsyncs", "fdatasync calls on the write-ahead log.", status.fsyncs)
        self.counter("walrus_wal_write_batches", "Batches written by the log's flusher (group commit).", statistics.writeBatches)
        self.counter("walrus_wal_disk_full_refusals", "Writes refused because the disk was full (a limit hit).", statistics.diskFullRefusals)
        _ = self.gauge("walrus_wal_segments", "", "Segment files of the log.", Double(status.walSegments))
        _ = self.gauge("walrus_wal_size", "bytes", "Bytes in the log's segments.", Double(status.walBytes))
        _ = self.gauge("walrus_wal_sealed_index", "", "The last record made durable.", Double(status.sealedIndex))
        _ = self.gauge("walrus_keys", "", "Keys in the store.", Double(status.keys))
        _ = self.gauge("walrus_expiring_keys", "", "Keys with a deadline.", Double(status.expiringKeys))
        self.counter("walrus_expired_keys", "Keys deleted because their deadline passed.", status.expiredKeys)
        _ = self.gauge("walrus_applied_index", "", "The last record applied to the store.", Double(status.appliedIndex))
        _ = self.gauge("walrus_snapshot_age", "seconds", "Age of the newest snapshot (-1: none yet).", status.snapshotAgeSeconds)
        _ = self.gauge("walrus_connected_clients", "", "Client connections open now.", Double(status.connectedClients))
        if let tls = status.tls {
            _ = self.gauge(
                "walrus_tls_certificate_expiry", "seconds", "When the TLS certificate in force expires (Unix time).",
                Double(tls.certificateExpires), labels: [("certificate", "server")])
            _ = self.gauge(
                "walrus_tls_certificate_expiry", "seconds", "When the TLS certificate in force expires (Unix time).",
                Double(tls.clientCertificateExpires), labels: [("certificate", "client")])
            _ = self.gauge("walrus_tls_reloads", "", "Certificate reloads that took effect.", Double(tls.reloads))
        }
        self.counter("walrus_connections", "Client connections accepted.", status.totalConnections)
        self.counter("walrus_rejected_connections", "Client connections refused at max-clients (a limit hit).", status.rejectedConnections)
        self.counter("walrus_protocol_errors", "Requests refused as malformed.", status.protocolErrors)
        self.counter("walrus_commands_processed", "Commands processed (INFO total_commands_processed).", status.totalCommands)

        if let replication = self.replication {
            _ = self.gauge("walrus_is_primary", "", "1 on a primary, 0 on a follower.", status.isFollower ? 0 : 1)
            self.counter(
                "walrus_replication_refused_peers", "Replication connections refused: too many waiting for HELLO (a limit hit).",
                replication.primary.refusedHandshakeCount)
            var current: [String: [Prometheus.Gauge]] = [:]
            for replica in status.replicas ?? [] where replica.state != .disconnected {
                let labels = [("follower", replica.nodeID)]
                current[replica.nodeID] = [
                    self.gauge("walrus_replication_lag", "records", "Records the follower has not made durable.", Double(replica.lagRecords), labels: labels),
                    self.gauge("walrus_replication_lag", "bytes", "Bytes of log the follower has not made durable.", Double(replica.lagBytes), labels: labels),
                    self.gauge(
                        "walrus_replication_lag", "seconds", "Age of the oldest write the follower has not applied.",
                        replica.dataAgeSeconds, labels: labels),
                ]
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
}

/// `GET /metrics` over HTTP/1.1 on its own port (`metrics-port`, `metrics-bind`).
public final class MetricsService: Service, Sendable {
    let collector: MetricsCollector
    let host: String
    let port: Int
    let logger: Logger
    /// The daemon's one event-loop group (not owned).
    let group: any EventLoopGroup
    let onBound: @Sendable (Int) -> Void

    public init(
        collector: MetricsCollector, host: String, port: Int, logger: Logger, group: any EventLoopGroup,
        onBound: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.collector = collector
        self.host = host
        self.port = port
        self.logger = logger
        self.group = group
        self.onBound = onBound
    }

    private let listener = LockedValue<(any Channel)?>(nil)

    /// Bind the endpoint (before the daemon serves); `run` binds if this was not called.
    public func bind() async throws {
        guard self.listener.withLock({ $0 }) == nil else { return }
        let group = self.group
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
            throw MetricsBindError(
                description: "Cannot serve metrics on \(self.host):\(self.port): \(error). Pick a free port with metrics-port, or leave it unset to turn metrics off.")
        }
        let port = channel.localAddress?.port ?? self.port
        self.collector.server.ports.metricsPort = port
        self.logger.info("Metrics endpoint listening", metadata: ["metrics.address": "\(self.host)", "metrics.port": "\(port)"])
        self.listener.withLock { $0 = channel }
        self.onBound(port)
    }

    public func run() async throws {
        try await self.bind()
        guard let channel = self.listener.withLock({ $0 }) else { return }
        try? await gracefulShutdown()
        try? await channel.close()
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
