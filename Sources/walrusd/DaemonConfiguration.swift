import WalrusServer

/// Everything walrusd can be told: `DaemonSettings`, whose key table (WalrusServer) gives the
/// flags, the config file, reload, CONFIG GET/SET and the README's table.
typealias DaemonConfiguration = DaemonSettings
