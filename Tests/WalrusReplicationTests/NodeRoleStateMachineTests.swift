import Testing
import WalrusReplication

/// The role machine: every transition from every role, with its actions and refusals.
struct NodeRoleStateMachineTests {
    typealias Machine = NodeRole.StateMachine

    func machine(_ role: NodeRole) -> Machine { Machine(role) }

    /// A follower promotes: stop following, then the epoch record; behind refuses unless forced.
    @Test func followerPromotes() {
        var m = self.machine(.following(host: "p", port: 1))
        #expect(m.handle(.promote(epoch: 3, force: false, behind: 2)) == .failure(.behind(records: 2)))
        #expect(m.role == .following(host: "p", port: 1))
        #expect(m.handle(.promote(epoch: 3, force: true, behind: 2)) == .success([.stopFollowing, .beginEpoch(3)]))
        #expect(m.role == .primary)
        var caughtUp = self.machine(.following(host: "p", port: 1))
        #expect(caughtUp.handle(.promote(epoch: 2, force: false, behind: 0)) == .success([.stopFollowing, .beginEpoch(2)]))
    }

    /// A primary is already primary; a fenced one takes over again only when forced.
    @Test func primaryAndFencedPromotion() {
        var primary = self.machine(.primary)
        #expect(primary.handle(.promote(epoch: 2, force: true, behind: 0)) == .failure(.alreadyPrimary))
        var fenced = self.machine(.fenced(reason: "stale"))
        #expect(fenced.handle(.promote(epoch: 5, force: false, behind: 0)) == .failure(.alreadyPrimary))
        #expect(fenced.handle(.promote(epoch: 5, force: true, behind: 0)) == .success([.beginEpoch(5)]))
        #expect(fenced.role == .primary)
    }

    /// Follow from any role: followers let go, the new link starts; a follower re-points.
    @Test func follow() {
        for role in [NodeRole.primary, .fenced(reason: "x")] {
            var m = self.machine(role)
            #expect(
                m.handle(.follow(host: "h", port: 7)) == .success([.dropFollowers(reason: "this node now follows h:7"), .startFollowing(host: "h", port: 7)]))
            #expect(m.role == .following(host: "h", port: 7))
        }
        var follower = self.machine(.following(host: "a", port: 1))
        #expect(follower.handle(.follow(host: "b", port: 2)) == .success([.stopFollowing, .startFollowing(host: "b", port: 2)]))
        var paused = self.machine(.paused(target: "t"))
        #expect(paused.handle(.follow(host: "b", port: 2)) == .failure(.switchoverInProgress(target: "t")))
    }

    /// A switchover: primary → paused → (failed → primary | unconfirmed → fenced | done → follows).
    @Test func switchover() {
        var m = self.machine(.primary)
        #expect(m.handle(.beginSwitchover(target: "t:1")) == .success([]))
        #expect(m.role == .paused(target: "t:1"))
        #expect(m.role.writeRefusal?.hasPrefix("TRYAGAIN") == true)
        #expect(m.handle(.beginSwitchover(target: "u")) == .failure(.switchoverInProgress(target: "t:1")))
        #expect(m.handle(.promote(epoch: 2, force: true, behind: 0)) == .failure(.switchoverInProgress(target: "t:1")))
        var failed = m
        #expect(failed.handle(.switchoverFailed) == .success([]) && failed.role == .primary)
        var unconfirmed = m
        #expect(unconfirmed.handle(.switchoverUnconfirmed(reason: "r")) == .success([]) && unconfirmed.role == .fenced(reason: "r"))
        var done = m
        #expect(
            done.handle(.switchoverCompleted(host: "t", port: 9))
                == .success([.dropFollowers(reason: "this node now follows t:9"), .startFollowing(host: "t", port: 9)]))
        #expect(done.role == .following(host: "t", port: 9))
        var follower = self.machine(.following(host: "a", port: 1))
        #expect(follower.handle(.beginSwitchover(target: "t")) == .failure(.notPrimary))
        #expect(follower.handle(.switchoverFailed) == .failure(.notPrimary))
    }

    /// REPLICAOF host port: writes refused at once (joining), then follow — unless a later word
    /// (REPLICAOF NO ONE) or a failed probe came first; a follower or fenced node stays as it is
    /// until it is told where to stream from.
    @Test func joining() {
        var m = self.machine(.primary)
        #expect(m.handle(.beginJoining(target: "p:6379")) == .success([]))
        #expect(m.role == .joining(target: "p:6379") && m.role.writeRefusal?.hasPrefix("READONLY") == true && !m.role.isFollower)
        var joined = m
        #expect(
            joined.handle(.joined(target: "p:6379", host: "p", port: 7000))
                == .success([.dropFollowers(reason: "this node now follows p:7000"), .startFollowing(host: "p", port: 7000)]))
        #expect(joined.role == .following(host: "p", port: 7000))
        var failed = m
        #expect(failed.handle(.joiningFailed(target: "p:6379")) == .success([]) && failed.role == .primary)
        var overtaken = m
        #expect(overtaken.handle(.promote(epoch: 4, force: true, behind: 0)) == .success([]) && overtaken.role == .primary)
        #expect(overtaken.handle(.joined(target: "p:6379", host: "p", port: 7000)) == .failure(.alreadyPrimary))
        var repointed = m
        #expect(repointed.handle(.beginJoining(target: "q:1")) == .success([]))
        #expect(repointed.handle(.joined(target: "p:6379", host: "p", port: 7000)) == .failure(.notPrimary))
        #expect(repointed.handle(.joiningFailed(target: "p:6379")) == .success([]) && repointed.role == .joining(target: "q:1"))
        var follower = self.machine(.following(host: "a", port: 1))
        #expect(follower.handle(.beginJoining(target: "p:6379")) == .success([]) && follower.role == .following(host: "a", port: 1))
        #expect(follower.handle(.joined(target: "p:6379", host: "p", port: 7000)) == .success([.stopFollowing, .startFollowing(host: "p", port: 7000)]))
        var paused = self.machine(.paused(target: "t"))
        #expect(paused.handle(.beginJoining(target: "p:1")) == .failure(.switchoverInProgress(target: "t")))
    }

    /// A newer epoch fences a primary (paused too); the first reason stands; a follower ignores it.
    @Test func fencing() {
        var m = self.machine(.primary)
        #expect(m.handle(.metHigherEpoch(reason: "first")) == .success([]))
        #expect(m.role == .fenced(reason: "first") && m.role.writeRefusal == "READONLY first")
        #expect(m.handle(.metHigherEpoch(reason: "second")) == .success([]))
        #expect(m.role == .fenced(reason: "first"))
        var paused = self.machine(.paused(target: "t"))
        #expect(paused.handle(.metHigherEpoch(reason: "r")) == .success([]) && paused.role == .fenced(reason: "r"))
        var follower = self.machine(.following(host: "a", port: 1))
        #expect(follower.handle(.metHigherEpoch(reason: "r")) == .success([]) && follower.role.isFollower)
    }

    /// The primary this node followed handed over: it takes writes once following stops.
    @Test func promotedBySwitchover() {
        var m = self.machine(.following(host: "a", port: 1))
        #expect(m.handle(.promotedBySwitchover) == .success([.stopFollowing]) && m.role == .primary)
        var primary = self.machine(.primary)
        #expect(primary.handle(.promotedBySwitchover) == .failure(.notPrimary))
    }

    /// Writes: only a primary takes them; each other role refuses with Redis's code.
    @Test func writeRefusals() {
        #expect(NodeRole.primary.writeRefusal == nil)
        #expect(NodeRole.following(host: "a", port: 1).writeRefusal == "READONLY You can't write against a read only replica.")
        #expect(NodeRole.fenced(reason: "x").writeRefusal == "READONLY x")
        #expect(NodeRole.paused(target: "h:1").writeRefusal?.contains("h:1") == true)
    }
}
