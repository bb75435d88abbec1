import NIOCore
import WALCore
import WalrusProtocol
import WalrusStore

/// Pub/sub for the whole server: which connections listen to which channels and patterns, and
/// the delivery of a PUBLISH to each of them (Redis's `server.pubsub_channels` and
/// `server.pubsub_patterns`).
///
/// PUBLISH runs on the publisher's event loop; each receiving connection gets the message on its
/// own loop (`PubSubSubscriber.deliver` hops there), in the order that publisher sent them.
/// Channel subscribers get it first, then pattern subscribers, one `pmessage` per matching
/// pattern, as in Redis. Nothing is stored: a message reaches who listens now.
final class PubSubHub: Sendable {
    /// What a subscription names: a channel, or a glob pattern over channel names.
    enum Kind: Sendable {
        case channel, pattern
    }

    private struct State {
        var channels: [ByteKey: [Int: PubSubSubscriber]] = [:]
        var patterns: [ByteKey: [Int: PubSubSubscriber]] = [:]

        subscript(kind: Kind) -> [ByteKey: [Int: PubSubSubscriber]] {
            get { kind == .channel ? self.channels : self.patterns }
            set { if kind == .channel { self.channels = newValue } else { self.patterns = newValue } }
        }
    }

    private let state = LockedValue(State())

    /// Add `subscriber` to the channel or pattern `name`.
    func subscribe(_ subscriber: PubSubSubscriber, to name: ByteKey, _ kind: Kind) {
        self.state.withLock { state in state[kind][name, default: [:]][subscriber.id] = subscriber }
    }

    /// Remove `subscriber` from the channel or pattern `name`.
    func unsubscribe(_ subscriber: PubSubSubscriber, from name: ByteKey, _ kind: Kind) {
        self.state.withLock { state in
            state[kind][name]?[subscriber.id] = nil
            if state[kind][name]?.isEmpty == true { state[kind][name] = nil }
        }
    }

    /// Deliver `message` to every subscriber of `channel` and of each pattern it matches;
    /// returns how many deliveries that made (PUBLISH's reply).
    @discardableResult
    func publish(channel: ByteKey, message: ByteBuffer) -> Int {
        let (direct, matched) = self.state.withLock { state -> ([PubSubSubscriber], [(ByteKey, PubSubSubscriber)]) in
            let direct = state.channels[channel].map { Array($0.values) } ?? []
            var matched: [(ByteKey, PubSubSubscriber)] = []
            if !state.patterns.isEmpty {
                channel.bytes.withUnsafeBytes { name in
                    for (pattern, subscribers) in state.patterns where GlobPattern.matches(pattern.bytes, name) {
                        for subscriber in subscribers.values { matched.append((pattern, subscriber)) }
                    }
                }
            }
            return (direct, matched)
        }
        for subscriber in direct { subscriber.deliver(.message(channel: channel, message: message)) }
        for (pattern, subscriber) in matched { subscriber.deliver(.patternMessage(pattern: pattern, channel: channel, message: message)) }
        return direct.count + matched.count
    }

    /// PUBSUB CHANNELS [pattern]: the channels with at least one subscriber.
    func channels(matching pattern: [UInt8]?) -> [ByteKey] {
        self.state.withLock { state in
            state.channels.keys.filter { channel in
                guard let pattern else { return true }
                return channel.bytes.withUnsafeBytes { GlobPattern.matches(pattern, $0) }
            }
        }
    }

    /// PUBSUB NUMSUB: subscribers of each channel.
    func subscriberCount(_ channel: ByteKey) -> Int {
        self.state.withLock { $0.channels[channel]?.count ?? 0 }
    }

    /// Channels and patterns with at least one subscriber (PUBSUB NUMPAT, INFO's pubsub_channels
    /// and pubsub_patterns).
    var counts: (channels: Int, patterns: Int) { self.state.withLock { ($0.channels.count, $0.patterns.count) } }
}

/// One connection as pub/sub sees it: its client id, and how a message reaches it.
final class PubSubSubscriber: Sendable {
    enum Delivery: Sendable {
        case message(channel: ByteKey, message: ByteBuffer)
        case patternMessage(pattern: ByteKey, channel: ByteKey, message: ByteBuffer)
    }

    let id: Int
    /// Called on any thread; the connection hops to its event loop.
    let deliver: @Sendable (Delivery) -> Void

    init(id: Int, deliver: @escaping @Sendable (Delivery) -> Void) {
        self.id = id
        self.deliver = deliver
    }
}

/// A connection's subscriptions (on its event loop only, in its `ClientSession`).
final class PubSubSubscriptions {
    let subscriber: PubSubSubscriber
    var channels: Set<ByteKey> = []
    var patterns: Set<ByteKey> = []

    init(_ subscriber: PubSubSubscriber) { self.subscriber = subscriber }

    subscript(kind: PubSubHub.Kind) -> Set<ByteKey> {
        get { kind == .channel ? self.channels : self.patterns }
        set { if kind == .channel { self.channels = newValue } else { self.patterns = newValue } }
    }

    /// Channels and patterns together (the count each (un)subscribe reply carries).
    var count: Int { self.channels.count + self.patterns.count }
}

extension ByteBuffer {
    /// A message or pmessage as the subscriber's protocol writes it.
    mutating func writeDelivery(_ delivery: PubSubSubscriber.Delivery, resp3: Bool) {
        switch delivery {
        case .message(let channel, let message):
            self.writePushHeader(3, resp3: resp3)
            self.writeBulkReply("message")
            channel.bytes.withUnsafeBytes { self.writeBulkReply($0) }
            self.writeBulkReply(message)
        case .patternMessage(let pattern, let channel, let message):
            self.writePushHeader(4, resp3: resp3)
            self.writeBulkReply("pmessage")
            pattern.bytes.withUnsafeBytes { self.writeBulkReply($0) }
            channel.bytes.withUnsafeBytes { self.writeBulkReply($0) }
            self.writeBulkReply(message)
        }
    }
}
