import CoreMetrics

/// Distributions the flusher records as they happen, through swift-metrics: no-ops unless the
/// process bootstraps a backend (walrusd does with `metrics-port`). Totals (records, bytes,
/// fdatasyncs) live in `WALStatistics`, which INFO, `walrusctl status` and the metrics endpoint
/// all read, so the three always agree.
struct WALMetrics: Sendable {
    /// How long each fdatasync of the log took.
    let fsync = CoreMetrics.Timer(label: "walrus_wal_fsync_seconds")
    /// How many records each fdatasync sealed (group commit at work: > 1 under concurrent writers).
    let groupCommit = Recorder(label: "walrus_wal_group_commit_records", aggregate: true)
}
