import NIOCore
import Synchronization
import WalrusStore

/// Redis's keyspace notifications (notify.c): with `notify-keyspace-events` set, a command that
/// changes a key publishes `__keyspace@0__:<key>` → event and `__keyevent@0__:<event>` → key,
/// for the classes the setting names. Off (empty) by default, as in Redis; then nothing is
/// built per command but one atomic read.
struct KeyspaceEventFlags: OptionSet, Sendable {
    let rawValue: Int
    static let keyspace = Self(rawValue: 1 << 0)  // K
    static let keyevent = Self(rawValue: 1 << 1)  // E
    static let generic = Self(rawValue: 1 << 2)  // g
    static let string = Self(rawValue: 1 << 3)  // $
    static let list = Self(rawValue: 1 << 4)  // l
    static let set = Self(rawValue: 1 << 5)  // s
    static let hash = Self(rawValue: 1 << 6)  // h
    static let zset = Self(rawValue: 1 << 7)  // z
    static let expired = Self(rawValue: 1 << 8)  // x
    static let evicted = Self(rawValue: 1 << 9)  // e
    static let stream = Self(rawValue: 1 << 10)  // t
    static let keyMiss = Self(rawValue: 1 << 11)  // m
    static let module = Self(rawValue: 1 << 12)  // d
    static let new = Self(rawValue: 1 << 13)  // n
    /// A: every class but m and n.
    static let all: Self = [.generic, .string, .list, .set, .hash, .zset, .expired, .evicted, .stream, .module]

    /// The setting's text, or nil when a character is not a class (Redis's keyspaceEventsStringToFlags).
    init?(parsing text: String) {
        var flags: Self = []
        for character in text {
            switch character {
            case "A": flags.formUnion(.all)
            case "g": flags.insert(.generic)
            case "$": flags.insert(.string)
            case "l": flags.insert(.list)
            case "s": flags.insert(.set)
            case "h": flags.insert(.hash)
            case "z": flags.insert(.zset)
            case "x": flags.insert(.expired)
            case "e": flags.insert(.evicted)
            case "K": flags.insert(.keyspace)
            case "E": flags.insert(.keyevent)
            case "t": flags.insert(.stream)
            case "m": flags.insert(.keyMiss)
            case "d": flags.insert(.module)
            case "n": flags.insert(.new)
            default: return nil
            }
        }
        self = flags
    }

    init(rawValue: Int) { self.rawValue = rawValue }

    /// The text CONFIG GET answers (Redis's keyspaceEventsFlagsToString).
    var text: String {
        var result = ""
        if self.isSuperset(of: .all) {
            // Redis writes "A" alone and so loses n (its CONFIG REWRITE drops it); here it stays.
            result = self.contains(.new) ? "An" : "A"
        } else {
            for (flag, letter) in [
                (Self.generic, "g"), (.string, "$"), (.list, "l"), (.set, "s"), (.hash, "h"), (.zset, "z"), (.expired, "x"),
                (.evicted, "e"), (.stream, "t"), (.module, "d"), (.new, "n"),
            ] where self.contains(flag) {
                result += letter
            }
        }
        if self.contains(.keyspace) { result += "K" }
        if self.contains(.keyevent) { result += "E" }
        if self.contains(.keyMiss) { result += "m" }
        return result
    }
}

/// Where notifications are sent from: the flags in force (changed by CONFIG SET) and the hub.
final class KeyspaceEvents: Sendable {
    private let flags = Atomic<Int>(0)
    /// The settings generation the flags were read at (-1: never).
    private let generation = Atomic<Int>(-1)
    let hub: PubSubHub
    let settings: ServerSettings
    let store: KeyValueStore

    init(hub: PubSubHub, settings: ServerSettings, store: KeyValueStore) {
        self.hub = hub
        self.settings = settings
        self.store = store
        _ = self.current
    }

    /// The flags in force, re-read when CONFIG SET or a reload changed the settings.
    private var current: KeyspaceEventFlags {
        let generation = self.settings.generation
        if generation != self.generation.load(ordering: .relaxed) {
            let text = self.settings.snapshot.notifyKeyspaceEvents
            let flags = KeyspaceEventFlags(parsing: text) ?? []  // (checked when set)
            let before = KeyspaceEventFlags(rawValue: self.flags.exchange(flags.rawValue, ordering: .relaxed))
            self.generation.store(generation, ordering: .relaxed)
            // Expired keys are the store's to name (a read that finds one, the expiry cycle).
            let wantsExpired = flags.contains(.expired) && !flags.isDisjoint(with: [.keyspace, .keyevent])
            let wanted = before.contains(.expired) && !before.isDisjoint(with: [.keyspace, .keyevent])
            if wantsExpired != wanted {
                if wantsExpired {
                    let observer: @Sendable ([[UInt8]]) -> Void = { [weak self] keys in
                        guard let self else { return }
                        for key in keys { key.withUnsafeBytes { bytes in self.notify(.expired, "expired", key: bytes) } }
                    }
                    self.store.setExpiredObserver(observer)
                } else {
                    self.store.setExpiredObserver(nil)
                }
            }
            return flags
        }
        return KeyspaceEventFlags(rawValue: self.flags.load(ordering: .relaxed))
    }

    /// Whether any notification is on (the in-place GET/SET path stands aside then).
    var enabled: Bool { !self.current.isEmpty }

    /// Whether events of class `type` are sent.
    func wants(_ type: KeyspaceEventFlags) -> Bool {
        let flags = self.current
        return flags.contains(type) && !flags.isDisjoint(with: [.keyspace, .keyevent])
    }

    /// Publish `event` on `key` for class `type`, if the setting asks for it.
    func notify(_ type: KeyspaceEventFlags, _ event: String, key: UnsafeRawBufferPointer) {
        let flags = self.current
        guard flags.contains(type) else { return }
        if flags.contains(.keyspace) {
            var channel = Array("__keyspace@0__:".utf8)
            channel.append(contentsOf: key)
            self.hub.publish(channel: ByteKey(channel), message: ByteBuffer(string: event))
        }
        if flags.contains(.keyevent) {
            self.hub.publish(channel: ByteKey(Array("__keyevent@0__:\(event)".utf8)), message: ByteBuffer(bytes: key))
        }
    }
}

extension CommandCall {
    /// A keyspace notification for `key` (the command's own words for the event).
    func notify(_ type: KeyspaceEventFlags, _ event: String, key: UnsafeRawBufferPointer) {
        self.executor.keyspaceEvents.notify(type, event, key: key)
    }

    /// "new" (class n) when `key` is about to be created: call before the write.
    func notifyNew(_ key: UnsafeRawBufferPointer, _ store: inout StoreTransaction) throws {
        let events = self.executor.keyspaceEvents
        guard events.wants(.new) else { return }
        if try !store.exists(key) { events.notify(.new, "new", key: key) }
    }
}
