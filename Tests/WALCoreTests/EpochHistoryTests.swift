import Testing
@testable import WALCore

/// Where a follower's log parts from its primary's, from the epoch histories alone.
@Suite struct EpochHistoryTests {
    typealias E = MetaFile.EpochStart
    static let one = [E(epoch: 1, firstIndex: 1)]
    static let promotedAt101 = [E(epoch: 1, firstIndex: 1), E(epoch: 2, firstIndex: 101)]

    struct Case: Sendable, CustomStringConvertible {
        var name: String
        var follower: [E]
        var followerLast: UInt64
        var primary: [E]
        var primaryLast: UInt64
        var cut: UInt64?
        var description: String { self.name }
    }

    @Test(arguments: [
        Case(name: "equal histories, equal ends", follower: one, followerLast: 50, primary: one, primaryLast: 50, cut: nil),
        Case(name: "follower behind", follower: one, followerLast: 10, primary: one, primaryLast: 50, cut: nil),
        Case(name: "both empty", follower: one, followerLast: 0, primary: one, primaryLast: 0, cut: nil),
        Case(name: "empty follower", follower: one, followerLast: 0, primary: promotedAt101, primaryLast: 300, cut: nil),
        Case(name: "empty primary, follower has records", follower: one, followerLast: 5, primary: one, primaryLast: 0, cut: 0),
        Case(name: "follower ahead in the same epoch", follower: one, followerLast: 80, primary: one, primaryLast: 60, cut: 60),
        Case(
            name: "old primary ahead in the old epoch", follower: one, followerLast: 150, primary: promotedAt101,
            primaryLast: 200, cut: 100),
        Case(
            name: "old primary ended exactly where the new epoch began", follower: one, followerLast: 100,
            primary: promotedAt101, primaryLast: 200, cut: nil),
        Case(
            name: "follower behind the promotion point", follower: one, followerLast: 90, primary: promotedAt101,
            primaryLast: 200, cut: nil),
        Case(
            name: "follower already in the new epoch", follower: promotedAt101, followerLast: 150, primary: promotedAt101,
            primaryLast: 200, cut: nil),
        Case(
            name: "two promotions, follower of the middle epoch ahead",
            follower: [E(epoch: 1, firstIndex: 1), E(epoch: 2, firstIndex: 101)], followerLast: 180,
            primary: [E(epoch: 1, firstIndex: 1), E(epoch: 2, firstIndex: 101), E(epoch: 3, firstIndex: 151)],
            primaryLast: 400, cut: 150),
        Case(
            name: "split brain: both promoted from epoch 1 at different points",
            follower: [E(epoch: 1, firstIndex: 1), E(epoch: 3, firstIndex: 121)], followerLast: 130,
            primary: [E(epoch: 1, firstIndex: 1), E(epoch: 2, firstIndex: 101)], primaryLast: 300, cut: 100),
        Case(
            name: "histories fork at index 0", follower: one, followerLast: 40, primary: [E(epoch: 2, firstIndex: 1)],
            primaryLast: 40, cut: 0),
        Case(
            name: "a history entry past the log's end is ignored", follower: promotedAt101, followerLast: 100, primary: one,
            primaryLast: 100, cut: nil),
    ])
    func divergence(_ c: Case) {
        #expect(
            EpochHistory.divergence(
                follower: c.follower, followerLast: c.followerLast, primary: c.primary, primaryLast: c.primaryLast) == c.cut)
    }

    @Test func epochAtIndex() {
        #expect(EpochHistory.epoch(at: 100, in: Self.promotedAt101) == 1)
        #expect(EpochHistory.epoch(at: 101, in: Self.promotedAt101) == 2)
        #expect(EpochHistory.epoch(at: 0, in: Self.promotedAt101) == nil)
    }
}
