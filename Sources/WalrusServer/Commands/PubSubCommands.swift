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
        Self.subscribe(&call, .channel, confirming: "subscribe")
    }

    /// PSUBSCRIBE pattern [pattern ...]
    @Sendable static func psubscribe(_ call: inout CommandCall) throws -> CommandOutcome {
        Self.subscribe(&call, .pattern, confirming: "psubscribe")
    }

    /// UNSUBSCRIBE [channel ...]: the named channels, or every one; always at least one reply.
    @Sendable static func unsubscribe(_ call: inout CommandCall) throws -> CommandOutcome {
        Self.unsubscribe(&call, .channel, confirming: "unsubscribe")
    }

    /// PUNSUBSCRIBE [pattern ...]
    @Sendable static func punsubscribe(_ call: inout CommandCall) throws -> CommandOutcome {
        Self.unsubscribe(&call, .pattern, confirming: "punsubscribe")
    }

    private static func subscribe(_ call: inout CommandCall, _ kind: PubSubHub.Kind, confirming word: String) -> CommandOutcome {
        let subscriptions = Self.subscriptions(call)
        for index in 1..<call.count {
            let name = ByteKey(call.bytes(index))
            if subscriptions[kind].insert(name).inserted { call.executor.pubsub.subscribe(subscriptions.subscriber, to: name, kind) }
            Self.confirm(&call, word, name, count: subscriptions.count)
        }
        return .reply
    }

    private static func unsubscribe(_ call: inout CommandCall, _ kind: PubSubHub.Kind, confirming word: String) -> CommandOutcome {
        let subscriptions = Self.subscriptions(call)
        let names = call.count > 1 ? (1..<call.count).map { ByteKey(call.bytes($0)) } : Array(subscriptions[kind])
        if names.isEmpty { Self.confirm(&call, word, nil, count: subscriptions.count) }
        for name in names {
            if subscriptions[kind].remove(name) != nil { call.executor.pubsub.unsubscribe(subscriptions.subscriber, from: name, kind) }
            Self.confirm(&call, word, name, count: subscriptions.count)
        }
        return .reply
    }

    /// Every subscription of `session` ends (a disconnect, RESET).
    static func unsubscribeAll(_ session: ClientSession, hub: PubSubHub) {
        guard let subscriptions = session.pubsub else { return }
        for channel in subscriptions.channels { hub.unsubscribe(subscriptions.subscriber, from: channel, .channel) }
        for pattern in subscriptions.patterns { hub.unsubscribe(subscriptions.subscriber, from: pattern, .pattern) }
        session.pubsub = nil
    }

    /// PUBLISH channel message: the number of clients that received it. A primary's publish
    /// also goes to its followers' subscribers, as Redis propagates it to replicas.
    @Sendable static func publish(_ call: inout CommandCall) throws -> CommandOutcome {
        let channel = ByteKey(call.bytes(1))
        let message = call.arguments[2]
        // A PUBLISH of its own (not inside EXEC or a script) delivers to this connection at once,
        // so a RESP3 subscriber publishing to itself gets the message before the count, as from
        // Redis (inside EXEC or a script it comes after the whole reply, as Redis 7.2 orders it).
        let inline = !call.inTransaction
        if inline { call.session.publishing = true }
        defer { if inline { call.session.publishing = false } }
        let receivers = call.executor.pubsub.publish(channel: channel, message: message)
        call.executor.replication?.propagatePublish(channel: channel.bytes, message: Array(message.readableBytesView))
        call.integer(reply: receivers)
        return .reply
    }

    /// PUBSUB CHANNELS [pattern]
    @Sendable static func channels(_ call: inout CommandCall) throws -> CommandOutcome {
        guard call.count <= 3 else {
            throw CommandError("ERR unknown subcommand or wrong number of arguments for 'channels'. Try PUBSUB HELP.")
        }
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
        call.integer(reply: call.executor.pubsub.counts.patterns)
        return .reply
    }

    /// PING while subscribed in RESP2: Redis answers a two-element array.
    static func subscribedPing(_ call: inout CommandCall) {
        call.array(2)
        call.bulk("pong")
        if call.count == 2 { call.bulk(call.bytes(1)) } else { call.bulk("") }
    }
}
