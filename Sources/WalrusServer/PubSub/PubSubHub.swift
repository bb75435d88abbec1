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
    private struct State {
        var channels: [ByteKey: [Int: PubSubSubscriber]] = [:]
        var patterns: [ByteKey: [Int: PubSubSubscriber]] = [:]
    }

    private let state = LockedValue(State())

    /// Add `subscriber` to `channel`; false when it was there already.
    func subscribe(_ subscriber: PubSubSubscriber, channel: ByteKey) -> Bool {
        self.state.withLock { state in
            state.channels[channel, default: [:]].updateValue(subscriber, forKey: subscriber.id) == nil
        }
    }

    /// Remove `subscriber` from `channel`; false when it was not there.
    func unsubscribe(_ subscriber: PubSubSubscriber, channel: ByteKey) -> Bool {
        self.state.withLock { state in
            guard state.channels[channel]?.removeValue(forKey: subscriber.id) != nil else { return false }
            if state.channels[channel]?.isEmpty == true { state.channels[channel] = nil }
            return true
        }
    }

    func psubscribe(_ subscriber: PubSubSubscriber, pattern: ByteKey) -> Bool {
        self.state.withLock { state in
            state.patterns[pattern, default: [:]].updateValue(subscriber, forKey: subscriber.id) == nil
        }
    }

    func punsubscribe(_ subscriber: PubSubSubscriber, pattern: ByteKey) -> Bool {
        self.state.withLock { state in
            guard state.patterns[pattern]?.removeValue(forKey: subscriber.id) != nil else { return false }
            if state.patterns[pattern]?.isEmpty == true { state.patterns[pattern] = nil }
            return true
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

    /// PUBSUB NUMPAT: patterns with at least one subscriber.
    var patternCount: Int { self.state.withLock { $0.patterns.count } }

    /// INFO's pubsub_channels.
    var channelCount: Int { self.state.withLock { $0.channels.count } }
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

    /// Channels and patterns together (the count each (un)subscribe reply carries).
    var count: Int { self.channels.count + self.patterns.count }
}

extension ByteBuffer {
    /// A pub/sub notification: a RESP3 push (`>`), or in RESP2 a plain array.
    mutating func writePushHeader(_ count: Int, resp3: Bool) {
        if resp3 {
            self.writeInteger(UInt8(ascii: ">"))
            self.writeString(String(count))
            self.writeStaticString("\r\n")
        } else {
            self.writeArrayHeader(count)
        }
    }

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
