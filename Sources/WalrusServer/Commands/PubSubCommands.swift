import NIOCore
import WalrusProtocol
import WalrusStore

/// SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH and PUBSUB, with Redis 7.0's replies:
/// one confirmation per channel or pattern, carrying the connection's subscription count; RESP3
/// connections get them (and messages) as push replies.
enum PubSubCommands {
    /// The connection's subscriptions, made on first use.
    private static func subscriptions(_ call: CommandCall) -> PubSubSubscriptions {
        let session = call.session
        if let existing = session.pubsub { return existing }
        let made = PubSubSubscriptions(PubSubSubscriber(id: session.id, deliver: session.pushDelivery ?? { _ in }))
        session.pubsub = made
        return made
    }

    private static func confirm(_ call: inout CommandCall, _ kind: String, _ name: ByteKey?, count: Int) {
        // Redis marks these as pushes in RESP2 too: CLIENT REPLY OFF does not silence them.
        call.session.repliedWithPush = true
        call.out.writePushHeader(3, resp3: call.resp3)
        call.bulk(kind)
        if let name { call.bulk(name.bytes) } else { call.null() }
        call.integer(reply: count)
    }

    /// SUBSCRIBE channel [channel ...]
    @Sendable static func subscribe(_ call: inout CommandCall) throws -> CommandOutcome {
        let subscriptions = Self.subscriptions(call)
        for index in 1..<call.count {
            let channel = ByteKey(call.bytes(index))
            if subscriptions.channels.insert(channel).inserted {
                _ = call.executor.pubsub.subscribe(subscriptions.subscriber, channel: channel)
            }
            Self.confirm(&call, "subscribe", channel, count: subscriptions.count)
        }
        return .reply
    }

    /// PSUBSCRIBE pattern [pattern ...]
    @Sendable static func psubscribe(_ call: inout CommandCall) throws -> CommandOutcome {
        let subscriptions = Self.subscriptions(call)
        for index in 1..<call.count {
            let pattern = ByteKey(call.bytes(index))
            if subscriptions.patterns.insert(pattern).inserted {
                _ = call.executor.pubsub.psubscribe(subscriptions.subscriber, pattern: pattern)
            }
            Self.confirm(&call, "psubscribe", pattern, count: subscriptions.count)
        }
        return .reply
    }

    /// UNSUBSCRIBE [channel ...]: the named channels, or every one; always at least one reply.
    @Sendable static func unsubscribe(_ call: inout CommandCall) throws -> CommandOutcome {
        let subscriptions = Self.subscriptions(call)
        let names = call.count > 1 ? (1..<call.count).map { ByteKey(call.bytes($0)) } : Array(subscriptions.channels)
        if names.isEmpty { Self.confirm(&call, "unsubscribe", nil, count: subscriptions.count) }
        for channel in names {
            if subscriptions.channels.remove(channel) != nil {
                _ = call.executor.pubsub.unsubscribe(subscriptions.subscriber, channel: channel)
            }
            Self.confirm(&call, "unsubscribe", channel, count: subscriptions.count)
        }
        return .reply
    }

    /// PUNSUBSCRIBE [pattern ...]
    @Sendable static func punsubscribe(_ call: inout CommandCall) throws -> CommandOutcome {
        let subscriptions = Self.subscriptions(call)
        let names = call.count > 1 ? (1..<call.count).map { ByteKey(call.bytes($0)) } : Array(subscriptions.patterns)
        if names.isEmpty { Self.confirm(&call, "punsubscribe", nil, count: subscriptions.count) }
        for pattern in names {
            if subscriptions.patterns.remove(pattern) != nil {
                _ = call.executor.pubsub.punsubscribe(subscriptions.subscriber, pattern: pattern)
            }
            Self.confirm(&call, "punsubscribe", pattern, count: subscriptions.count)
        }
        return .reply
    }

    /// Every subscription of `session` ends (a disconnect, RESET).
    static func unsubscribeAll(_ session: ClientSession, hub: PubSubHub) {
        guard let subscriptions = session.pubsub else { return }
        for channel in subscriptions.channels { _ = hub.unsubscribe(subscriptions.subscriber, channel: channel) }
        for pattern in subscriptions.patterns { _ = hub.punsubscribe(subscriptions.subscriber, pattern: pattern) }
        session.pubsub = nil
    }

    /// PUBLISH channel message: the number of clients that received it. A primary's publish
    /// also goes to its followers' subscribers, as Redis propagates it to replicas.
    @Sendable static func publish(_ call: inout CommandCall) throws -> CommandOutcome {
        let channel = ByteKey(call.bytes(1))
        let message = call.arguments[2]
        let receivers = call.executor.pubsub.publish(channel: channel, message: message)
        call.executor.replication?.propagatePublish(channel: channel.bytes, message: Array(message.readableBytesView))
        call.integer(reply: receivers)
        return .reply
    }

    /// PUBSUB CHANNELS [pattern]
    @Sendable static func channels(_ call: inout CommandCall) throws -> CommandOutcome {
        guard call.count <= 3 else { throw call.arityError }
        let channels = call.executor.pubsub.channels(matching: call.count == 3 ? call.bytes(2) : nil)
        call.array(channels.count)
        for channel in channels { call.bulk(channel.bytes) }
        return .reply
    }

    /// PUBSUB NUMSUB [channel ...]
    @Sendable static func numsub(_ call: inout CommandCall) throws -> CommandOutcome {
        let names = (2..<max(call.count, 2)).map { ByteKey(call.bytes($0)) }
        // An array in RESP3 too, as Redis 7.0 answers.
        call.array(names.count * 2)
        for name in names {
            call.bulk(name.bytes)
            call.integer(reply: call.executor.pubsub.subscriberCount(name))
        }
        return .reply
    }

    /// PUBSUB NUMPAT
    @Sendable static func numpat(_ call: inout CommandCall) throws -> CommandOutcome {
        call.integer(reply: call.executor.pubsub.patternCount)
        return .reply
    }

    /// PING while subscribed in RESP2: Redis answers a two-element array.
    static func subscribedPing(_ call: inout CommandCall) {
        call.array(2)
        call.bulk("pong")
        if call.count == 2 { call.bulk(call.bytes(1)) } else { call.bulk("") }
    }
}
