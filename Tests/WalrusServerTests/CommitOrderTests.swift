import NIOCore
import Testing

@testable import WalrusServer

/// The reply queue's answer to a commit callback, when callbacks come out of order.
struct CommitOrderTests {
    typealias Reply = RESPConnectionHandler.Reply

    private static func awaiting() -> Reply {
        let reply = Reply()
        reply.awaitingCommit = true
        return reply
    }

    private static let ok: ByteBuffer = ByteBuffer(string: "+OK\r\n")

    /// A late callback (its read was answered by a later read's commit) must not answer the
    /// writes queued since, which are not durable yet.
    @Test func aLateCallbackAnswersNothing() {
        let first = Self.awaiting(), second = Self.awaiting()
        var replies = CircularBuffer<Reply>([first, second])
        // The later read's callback runs first and answers both; the loop sends them.
        #expect(RESPConnectionHandler.fill(&replies, committedThrough: second, with: Self.ok, failed: false))
        #expect(first.buffer == Self.ok && second.buffer == Self.ok)
        replies.removeAll()
        // A new write waits for its seal; the earlier read's callback arrives now.
        let third = Self.awaiting()
        replies.append(third)
        #expect(!RESPConnectionHandler.fill(&replies, committedThrough: first, with: Self.ok, failed: false))
        #expect(third.buffer == nil)
    }

    /// In order: replies up to `last` are answered, the ones behind it wait; a reply that answers
    /// with more than +OK once durable gets what it holds.
    @Test func anInOrderCallbackAnswersUpToItsRead() {
        let first = Self.awaiting(), later = Self.awaiting()
        first.held = ByteBuffer(string: "$1\r\nx\r\n")
        let ready = Reply(ByteBuffer(string: "$-1\r\n"))
        var replies = CircularBuffer<Reply>([first, ready, later])
        #expect(RESPConnectionHandler.fill(&replies, committedThrough: first, with: Self.ok, failed: false))
        #expect(first.buffer == ByteBuffer(string: "$1\r\nx\r\n"))
        #expect(later.buffer == nil)
        // A failed seal answers with the error, not what the write holds.
        let failedReply = Self.awaiting()
        failedReply.held = ByteBuffer(string: ":1\r\n")
        let error = ByteBuffer(string: "-ERR failed\r\n")
        var failedReplies = CircularBuffer<Reply>([failedReply])
        #expect(RESPConnectionHandler.fill(&failedReplies, committedThrough: failedReply, with: error, failed: true))
        #expect(failedReply.buffer == error)
    }

    /// Answered replies are kept for later SETs (`LoopCommits.keepAnswered`), reset — but not one
    /// its connection's queue still holds (behind a reply not ready yet): reset, it would never
    /// be written there.
    @Test func onlyRepliesNothingElseHoldsAreReused() {
        // Only the group holds the first (its connection wrote it); the second is still queued.
        let queued = Self.awaiting()
        queued.buffer = Self.ok
        var group: [Reply] = [Self.awaiting(), queued]
        group[0].buffer = Self.ok
        // A connection's queue: a SAVE's reply (not ready), then `queued`.
        let queue = CircularBuffer<Reply>([Reply(), queued])
        var spares: [Reply] = []
        LoopCommits.keepAnswered(&group, in: &spares)
        #expect(spares.count == 1 && spares.first === group[0])
        #expect(group[0].buffer == nil && !group[0].awaitingCommit)
        #expect(queue.last === queued && queued.buffer == Self.ok && queued.awaitingCommit)
        // The pool is bounded: a full one takes no more.
        var full = (0..<LoopCommits.spareRepliesLimit).map { _ in Reply() }
        var more: [Reply] = [Self.awaiting()]
        LoopCommits.keepAnswered(&more, in: &full)
        #expect(full.count == LoopCommits.spareRepliesLimit)
    }
}
