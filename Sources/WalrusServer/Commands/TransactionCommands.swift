import NIOCore
import WalrusStore

/// MULTI, EXEC, DISCARD, WATCH, UNWATCH with Redis's rules (multi.c): a command refused while
/// queueing makes EXEC answer EXECABORT; a runtime error fails only its command; a WATCHed key
/// changed by anyone fails the EXEC (a null array). An EXEC's writes are one log record.
enum TransactionCommands {
    /// MULTI
    @Sendable static func multi(_ call: inout CommandCall) throws -> CommandOutcome {
        guard !call.session.inMulti else { throw CommandError("ERR MULTI calls can not be nested") }
        call.session.queued = []
        call.ok()
        return .reply
    }

    /// A placeholder for a reply that has been moved out.
    private static let noReply = ByteBufferAllocator().buffer(capacity: 0)

    /// EXEC: the queued commands in one transaction, their replies in one array.
    @Sendable static func exec(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        let session = call.session
        guard let queued = session.queued else { throw CommandError("ERR EXEC without MULTI") }
        let failedWhileQueueing = session.queueFailed
        session.endMulti()
        let (watchFailed, _) = store.endWatch(session.watch)
        if failedWhileQueueing { throw CommandError("EXECABORT Transaction discarded because of previous errors.") }
        // The role may have changed since the commands were queued: Redis checks again at EXEC.
        if queued.contains(where: { $0.spec.flags.contains(.write) }), let refusal = call.executor.writeRefusal {
            throw CommandError("EXECABORT Transaction discarded because of: " + refusal)
        }
        if watchFailed { return call.nullArray() }
        call.array(queued.count)
        for command in queued {
            var inner = CommandCall(
                spec: command.spec, arguments: command.arguments, out: Self.noReply, session: session, executor: call.executor,
                allocator: call.allocator, inTransaction: true)
            // The reply moves in and out (swapped, never copied: a second reference to it would
            // make each command's first write copy the whole EXEC reply so far).
            swap(&inner.out, &call.out)
            call.executor.runInside(&inner, transaction: &store)
            swap(&inner.out, &call.out)
        }
    }

    /// DISCARD
    @Sendable static func discard(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        guard call.session.inMulti else { throw CommandError("ERR DISCARD without MULTI") }
        call.session.endMulti()
        store.unwatch(call.session.watch)
        call.ok()
    }

    /// WATCH key [key …]
    @Sendable static func watch(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        guard !call.session.inMulti else { throw CommandError("ERR WATCH inside MULTI is not allowed") }
        // A client already dirty will fail its EXEC anyway.
        if !call.session.watch.dirty {
            for index in 1..<call.count { store.watch(call.bytes(index), token: call.session.watch) }
        }
        call.ok()
    }

    /// UNWATCH
    @Sendable static func unwatch(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        store.unwatch(call.session.watch)
        call.ok()
    }
}
