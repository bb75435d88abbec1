import NIOCore
import WalrusStore

/// Every command walrus answers, one entry each: name, arity, flags, key positions, group,
/// handler (Redis 7.0's src/commands/*.json give the facts). Dispatch, COMMAND INFO / DOCS /
/// COUNT, a follower's READONLY refusal, MULTI's queueing rules and the metrics labels read it;
/// nothing else lists commands.
///
/// Data types walrus does not have (lists, hashes, sets, sorted sets, streams) are not here, so
/// their commands get Redis's unknown-command error.
enum CommandTable {
    typealias Keyspace = @Sendable (inout CommandCall, inout StoreTransaction) throws -> Void
    typealias Plain = @Sendable (inout CommandCall) throws -> CommandOutcome

    private static func spec(
        _ name: String, _ arity: Int, _ flags: CommandFlags, keys: (Int, Int, Int) = (0, 0, 0), group: String,
        since: String, _ summary: String, container: String? = nil, _ handler: CommandHandler,
        subcommands: [CommandSpec] = []
    ) -> CommandSpec {
        var categories: [String] = []
        if flags.contains(.write) { categories.append("@write") }
        if flags.contains(.readonly) { categories.append("@read") }
        switch group {
        case "string": categories.append("@string")
        case "bitmap": categories.append("@bitmap")
        case "generic": categories.append("@keyspace")
        case "transactions": categories.append("@transaction")
        case "connection": categories.append("@connection")
        case "pubsub": categories.append("@pubsub")
        case "scripting": categories.append("@scripting")
        default: break
        }
        if flags.contains(.admin) { categories += ["@admin", "@dangerous"] }
        categories.append(flags.contains(.fast) ? "@fast" : "@slow")
        return CommandSpec(
            name: name, arity: arity, flags: flags, firstKey: keys.0, lastKey: keys.1, keyStep: keys.2, group: group,
            categories: categories, summary: summary, since: since, handler: handler,
            subcommands: Dictionary(uniqueKeysWithValues: subcommands.map { ($0.name.uppercased(), $0) }),
            container: container)
    }

    private static func keyspace(_ handler: @escaping Keyspace) -> CommandHandler { .keyspace(handler) }
    private static func plain(_ handler: @escaping Plain) -> CommandHandler { .plain(handler) }

    // MARK: The table

    static let commands: [CommandSpec] = {
        let rw: CommandFlags = [.write, .denyOOM]
        let one = (1, 1, 1)
        var list: [CommandSpec] = [
            // Strings
            spec("get", 2, [.readonly, .fast], keys: one, group: "string", since: "1.0.0", "Get the value of a key", keyspace(StringCommands.get)),
            spec("set", -3, rw, keys: one, group: "string", since: "1.0.0", "Set the string value of a key", keyspace(StringCommands.set)),
            spec("setnx", 3, rw.union(.fast), keys: one, group: "string", since: "1.0.0", "Set the value of a key, only if the key does not exist", keyspace(StringCommands.setnx)),
            spec("setex", 4, rw, keys: one, group: "string", since: "2.0.0", "Set the value and expiration of a key", keyspace(StringCommands.setWithExpiry(milliseconds: false))),
            spec("psetex", 4, rw, keys: one, group: "string", since: "2.6.0", "Set the value and expiration in milliseconds of a key", keyspace(StringCommands.setWithExpiry(milliseconds: true))),
            spec("getset", 3, rw.union(.fast), keys: one, group: "string", since: "1.0.0", "Set the string value of a key and return its old value", keyspace(StringCommands.getset)),
            spec("getdel", 2, [.write, .fast], keys: one, group: "string", since: "6.2.0", "Get the value of a key and delete the key", keyspace(StringCommands.getdel)),
            spec("getex", -2, [.write, .fast], keys: one, group: "string", since: "6.2.0", "Get the value of a key and optionally set its expiration", keyspace(StringCommands.getex)),
            spec("mset", -3, rw, keys: (1, -1, 2), group: "string", since: "1.0.1", "Set multiple keys to multiple values", keyspace(StringCommands.mset)),
            spec("msetnx", -3, rw, keys: (1, -1, 2), group: "string", since: "1.0.1", "Set multiple keys to multiple values, only if none of the keys exist", keyspace(StringCommands.msetnx)),
            spec("mget", -2, [.readonly, .fast], keys: (1, -1, 1), group: "string", since: "1.0.0", "Get the values of all the given keys", keyspace(StringCommands.mget)),
            spec("append", 3, rw.union(.fast), keys: one, group: "string", since: "2.0.0", "Append a value to a key", keyspace(StringCommands.append)),
            spec("strlen", 2, [.readonly, .fast], keys: one, group: "string", since: "2.2.0", "Get the length of the value stored in a key", keyspace(StringCommands.strlen)),
            spec("getrange", 4, [.readonly], keys: one, group: "string", since: "2.4.0", "Get a substring of the string stored at a key", keyspace(StringCommands.getrange)),
            spec("substr", 4, [.readonly], keys: one, group: "string", since: "1.0.0", "Get a substring of the string stored at a key", keyspace(StringCommands.getrange)),
            spec("setrange", 4, rw, keys: one, group: "string", since: "2.2.0", "Overwrite part of a string at key starting at the specified offset", keyspace(StringCommands.setrange)),
            spec("incr", 2, rw.union(.fast), keys: one, group: "string", since: "1.0.0", "Increment the integer value of a key by one", keyspace(StringCommands.increment(by: 1, negate: false))),
            spec("decr", 2, rw.union(.fast), keys: one, group: "string", since: "1.0.0", "Decrement the integer value of a key by one", keyspace(StringCommands.increment(by: -1, negate: false))),
            spec("incrby", 3, rw.union(.fast), keys: one, group: "string", since: "1.0.0", "Increment the integer value of a key by the given amount", keyspace(StringCommands.increment(by: nil, negate: false))),
            spec("decrby", 3, rw.union(.fast), keys: one, group: "string", since: "1.0.0", "Decrement the integer value of a key by the given number", keyspace(StringCommands.increment(by: nil, negate: true))),
            spec("incrbyfloat", 3, rw.union(.fast), keys: one, group: "string", since: "2.6.0", "Increment the float value of a key by the given amount", keyspace(StringCommands.incrbyfloat)),
            spec("lcs", -3, [.readonly], keys: (1, 2, 1), group: "string", since: "7.0.0", "Find longest common substring", keyspace(StringCommands.lcs)),
            spec("setbit", 4, rw, keys: one, group: "bitmap", since: "2.2.0", "Sets or clears the bit at offset in the string value stored at key", keyspace(BitCommands.setbit)),
            spec("getbit", 3, [.readonly, .fast], keys: one, group: "bitmap", since: "2.2.0", "Returns the bit value at offset in the string value stored at key", keyspace(BitCommands.getbit)),
            spec("bitcount", -2, [.readonly], keys: one, group: "bitmap", since: "2.6.0", "Count set bits in a string", keyspace(BitCommands.bitcount)),
            spec("bitpos", -3, [.readonly], keys: one, group: "bitmap", since: "2.8.7", "Find first bit set or clear in a string", keyspace(BitCommands.bitpos)),
            spec("bitop", -4, rw, keys: (2, -1, 1), group: "bitmap", since: "2.6.0", "Perform bitwise operations between strings", keyspace(BitCommands.bitop)),
            // Keys
            spec("del", -2, [.write], keys: (1, -1, 1), group: "generic", since: "1.0.0", "Delete a key", keyspace(KeyCommands.del)),
            spec("unlink", -2, [.write, .fast], keys: (1, -1, 1), group: "generic", since: "4.0.0", "Delete a key asynchronously in another thread. Otherwise it is just as DEL, but non blocking.", keyspace(KeyCommands.del)),
            spec("exists", -2, [.readonly, .fast], keys: (1, -1, 1), group: "generic", since: "1.0.0", "Determine if a key exists", keyspace(KeyCommands.exists)),
            spec("expire", -3, [.write, .fast], keys: one, group: "generic", since: "1.0.0", "Set a key's time to live in seconds", keyspace(KeyCommands.expire(milliseconds: false, absolute: false))),
            spec("pexpire", -3, [.write, .fast], keys: one, group: "generic", since: "2.6.0", "Set a key's time to live in milliseconds", keyspace(KeyCommands.expire(milliseconds: true, absolute: false))),
            spec("expireat", -3, [.write, .fast], keys: one, group: "generic", since: "1.2.0", "Set the expiration for a key as a UNIX timestamp", keyspace(KeyCommands.expire(milliseconds: false, absolute: true))),
            spec("pexpireat", -3, [.write, .fast], keys: one, group: "generic", since: "2.6.0", "Set the expiration for a key as a UNIX timestamp specified in milliseconds", keyspace(KeyCommands.expire(milliseconds: true, absolute: true))),
            spec("ttl", 2, [.readonly, .fast], keys: one, group: "generic", since: "1.0.0", "Get the time to live for a key in seconds", keyspace(KeyCommands.ttl(milliseconds: false, absolute: false))),
            spec("pttl", 2, [.readonly, .fast], keys: one, group: "generic", since: "2.6.0", "Get the time to live for a key in milliseconds", keyspace(KeyCommands.ttl(milliseconds: true, absolute: false))),
            spec("expiretime", 2, [.readonly, .fast], keys: one, group: "generic", since: "7.0.0", "Get the expiration Unix timestamp for a key", keyspace(KeyCommands.ttl(milliseconds: false, absolute: true))),
            spec("pexpiretime", 2, [.readonly, .fast], keys: one, group: "generic", since: "7.0.0", "Get the expiration Unix timestamp for a key in milliseconds", keyspace(KeyCommands.ttl(milliseconds: true, absolute: true))),
            spec("persist", 2, [.write, .fast], keys: one, group: "generic", since: "2.2.0", "Remove the expiration from a key", keyspace(KeyCommands.persist)),
            spec("type", 2, [.readonly, .fast], keys: one, group: "generic", since: "1.0.0", "Determine the type stored at key", keyspace(KeyCommands.type)),
            spec("rename", 3, [.write], keys: (1, 2, 1), group: "generic", since: "1.0.0", "Rename a key", keyspace(KeyCommands.rename(onlyIfAbsent: false))),
            spec("renamenx", 3, [.write, .fast], keys: (1, 2, 1), group: "generic", since: "1.0.0", "Rename a key, only if the new key does not exist", keyspace(KeyCommands.rename(onlyIfAbsent: true))),
            spec("copy", -3, rw, keys: (1, 2, 1), group: "generic", since: "6.2.0", "Copy a key", keyspace(KeyCommands.copy)),
            spec("touch", -2, [.readonly, .fast], keys: (1, -1, 1), group: "generic", since: "3.2.1", "Alters the last access time of a key(s). Returns the number of existing keys specified.", keyspace(KeyCommands.touch)),
            spec("randomkey", 1, [.readonly, .touchesArbitraryKeys], group: "generic", since: "1.0.0", "Return a random key from the keyspace", keyspace(KeyCommands.randomkey)),
            spec("scan", -2, [.readonly, .touchesArbitraryKeys], group: "generic", since: "2.8.0", "Incrementally iterate the keys space", keyspace(KeyCommands.scan)),
            spec("keys", 2, [.readonly], group: "generic", since: "1.0.0", "Find all keys matching the given pattern", keyspace(KeyCommands.keys)),
            spec("dbsize", 1, [.readonly, .fast], group: "server", since: "1.0.0", "Return the number of keys in the selected database", keyspace(KeyCommands.dbsize)),
            spec("flushdb", -1, [.write], group: "server", since: "1.0.0", "Remove all keys from the current database", keyspace(KeyCommands.flushall)),
            spec("flushall", -1, [.write], group: "server", since: "1.0.0", "Remove all keys from all databases", keyspace(KeyCommands.flushall)),
            // Transactions
            spec("multi", 1, [.noscript, .loading, .stale, .fast, .allowBusy], group: "transactions", since: "1.2.0", "Mark the start of a transaction block", plain(TransactionCommands.multi)),
            spec("exec", 1, [.noscript, .loading, .stale], group: "transactions", since: "1.2.0", "Execute all commands issued after MULTI", keyspace(TransactionCommands.exec)),
            spec("discard", 1, [.noscript, .loading, .stale, .fast, .allowBusy], group: "transactions", since: "2.0.0", "Discard all commands issued after MULTI", keyspace(TransactionCommands.discard)),
            spec("watch", -2, [.noscript, .loading, .stale, .fast, .allowBusy], keys: (1, -1, 1), group: "transactions", since: "2.2.0", "Watch the given keys to determine execution of the MULTI/EXEC block", keyspace(TransactionCommands.watch)),
            spec("unwatch", 1, [.noscript, .loading, .stale, .fast, .allowBusy], group: "transactions", since: "2.2.0", "Forget about all watched keys", keyspace(TransactionCommands.unwatch)),
            // Scripting
            spec("eval", -3, [.noscript, .mayReplicate, .noMandatoryKeys, .stale], group: "scripting", since: "2.6.0", "Execute a Lua script server side", .script(ScriptCommands.eval(bySHA: false, readOnly: false))),
            spec("evalsha", -3, [.noscript, .mayReplicate, .noMandatoryKeys, .stale], group: "scripting", since: "2.6.0", "Execute a Lua script server side", .script(ScriptCommands.eval(bySHA: true, readOnly: false))),
            spec("eval_ro", -3, [.noscript, .noMandatoryKeys, .stale, .readonly], group: "scripting", since: "7.0.0", "Execute a read-only Lua script server side", .script(ScriptCommands.eval(bySHA: false, readOnly: true))),
            spec("evalsha_ro", -3, [.noscript, .noMandatoryKeys, .stale, .readonly], group: "scripting", since: "7.0.0", "Execute a read-only Lua script server side", .script(ScriptCommands.eval(bySHA: true, readOnly: true))),
            spec(
                "script", -2, [], group: "scripting", since: "2.6.0", "A container for Lua scripts management commands", .container,
                subcommands: [
                    spec("load", 3, [.noscript, .stale], group: "scripting", since: "2.6.0", "Load the specified Lua script into the script cache.", container: "script", plain(ScriptCommands.load)),
                    spec("exists", -3, [.noscript], group: "scripting", since: "2.6.0", "Check existence of scripts in the script cache.", container: "script", plain(ScriptCommands.exists)),
                    spec("flush", -2, [.noscript], group: "scripting", since: "2.6.0", "Remove all the scripts from the script cache.", container: "script", plain(ScriptCommands.flush)),
                    spec("kill", 2, [.noscript, .allowBusy], group: "scripting", since: "2.6.0", "Kill the script currently in execution.", container: "script", plain(ScriptCommands.kill)),
                    spec("debug", 3, [.noscript], group: "scripting", since: "3.2.0", "Set the debug mode for executed scripts.", container: "script", plain(ScriptCommands.debug)),
                    spec("help", 2, [.loading, .stale], group: "scripting", since: "5.0.0", "Show helpful text about the different subcommands", container: "script", plain(ScriptCommands.help)),
                ]),
            // Connection
            spec("ping", -1, [.fast, .sentinel], group: "connection", since: "1.0.0", "Ping the server", plain(ConnectionCommands.ping)),
            spec("echo", 2, [.loading, .stale, .fast], group: "connection", since: "1.0.0", "Echo the given string", plain(ConnectionCommands.echo)),
            spec("select", 2, [.loading, .stale, .fast], group: "connection", since: "1.0.0", "Change the selected database for the current connection", plain(ConnectionCommands.select)),
            spec("quit", -1, [.allowBusy, .noscript, .loading, .stale, .fast, .noAuth], group: "connection", since: "1.0.0", "Close the connection", plain(ConnectionCommands.quit)),
            spec("reset", 1, [.noscript, .loading, .stale, .fast, .noAuth, .allowBusy], group: "connection", since: "6.2.0", "Reset the connection", plain(ConnectionCommands.reset)),
            spec("hello", -1, [.noscript, .loading, .stale, .fast, .noAuth, .sentinel, .allowBusy], group: "connection", since: "6.0.0", "Handshake with Redis", plain(ConnectionCommands.hello)),
            spec(
                "client", -2, [.sentinel], group: "connection", since: "2.4.0", "A container for client connection commands", .container,
                subcommands: [
                    spec("id", 2, [.noscript, .loading, .stale, .sentinel], group: "connection", since: "5.0.0", "Returns the client ID for the current connection", container: "client", plain(ConnectionCommands.clientID)),
                    spec("setname", 3, [.noscript, .loading, .stale, .sentinel], group: "connection", since: "2.6.9", "Set the current connection name", container: "client", plain(ConnectionCommands.clientSetName)),
                    spec("getname", 2, [.noscript, .loading, .stale, .sentinel], group: "connection", since: "2.6.9", "Get the current connection name", container: "client", plain(ConnectionCommands.clientGetName)),
                    spec("setinfo", 4, [.noscript, .loading, .stale, .sentinel], group: "connection", since: "7.2.0", "Set client or connection specific info", container: "client", plain(ConnectionCommands.clientSetInfo)),
                    spec("info", 2, [.noscript, .loading, .stale, .sentinel], group: "connection", since: "6.2.0", "Returns information about the current client connection.", container: "client", plain(ConnectionCommands.clientInfo)),
                    spec("no-evict", 3, [.admin, .noscript, .loading, .stale, .sentinel], group: "connection", since: "7.0.0", "Set client eviction mode for the current connection", container: "client", plain(ConnectionCommands.clientOnOff)),
                    spec("no-touch", 3, [.noscript, .loading, .stale], group: "connection", since: "7.2.0", "Controls whether commands sent by the client will alter the LRU/LFU of the keys they access.", container: "client", plain(ConnectionCommands.clientOnOff)),
                    spec("reply", 3, [.noscript, .loading, .stale, .sentinel], group: "connection", since: "3.2.0", "Instruct the server whether to reply to commands", container: "client", plain(ConnectionCommands.clientReply)),
                    spec("list", -2, [.admin, .noscript, .loading, .stale, .sentinel], group: "connection", since: "2.4.0", "Get the list of client connections", container: "client", plain(ConnectionCommands.clientList)),
                    spec("kill", -3, [.admin, .noscript, .loading, .stale, .sentinel], group: "connection", since: "2.4.0", "Kill the connection of a client", container: "client", plain(ConnectionCommands.clientKill)),
                ]),
            // Pub/sub
            spec("subscribe", -2, [.pubsub, .noscript, .loading, .stale], group: "pubsub", since: "2.0.0", "Listen for messages published to the given channels", plain(PubSubCommands.subscribe)),
            spec("unsubscribe", -1, [.pubsub, .noscript, .loading, .stale], group: "pubsub", since: "2.0.0", "Stop listening for messages posted to the given channels", plain(PubSubCommands.unsubscribe)),
            spec("psubscribe", -2, [.pubsub, .noscript, .loading, .stale], group: "pubsub", since: "2.0.0", "Listen for messages published to channels matching the given patterns", plain(PubSubCommands.psubscribe)),
            spec("punsubscribe", -1, [.pubsub, .noscript, .loading, .stale], group: "pubsub", since: "2.0.0", "Stop listening for messages posted to channels matching the given patterns", plain(PubSubCommands.punsubscribe)),
            spec("publish", 3, [.pubsub, .loading, .stale, .fast, .mayReplicate, .sentinel], group: "pubsub", since: "2.0.0", "Post a message to a channel", plain(PubSubCommands.publish)),
            spec(
                "pubsub", -2, [], group: "pubsub", since: "2.8.0", "A container for Pub/Sub commands", .container,
                subcommands: [
                    spec("channels", -2, [.pubsub, .loading, .stale], group: "pubsub", since: "2.8.0", "List active channels", container: "pubsub", plain(PubSubCommands.channels)),
                    spec("numsub", -2, [.pubsub, .loading, .stale], group: "pubsub", since: "2.8.0", "Get the count of subscribers for channels", container: "pubsub", plain(PubSubCommands.numsub)),
                    spec("numpat", 2, [.pubsub, .loading, .stale], group: "pubsub", since: "2.8.0", "Get the count of unique patterns pattern subscriptions", container: "pubsub", plain(PubSubCommands.numpat)),
                ]),
            // Server
            spec("info", -1, [.loading, .stale, .sentinel], group: "server", since: "1.0.0", "Get information and statistics about the server", plain(ServerCommands.info)),
            spec("replicaof", 3, [.admin, .noscript, .stale], group: "server", since: "5.0.0", "Make the server a replica of another instance, or promote it as master.", plain(ServerCommands.replicaof)),
            spec("slaveof", 3, [.admin, .noscript, .stale], group: "server", since: "1.0.0", "Make the server a replica of another instance, or promote it as master. Deprecated starting with Redis 5. Use REPLICAOF instead.", plain(ServerCommands.replicaof)),
            spec("role", 1, [.noscript, .loading, .stale, .fast, .sentinel], group: "server", since: "2.8.12", "Return the role of the instance in the context of replication", plain(ServerCommands.role)),
            spec("wait", 3, [.noscript], group: "generic", since: "3.0.0", "Wait for the synchronous replication of all the write commands sent in the context of the current connection", plain(ServerCommands.wait)),
            spec("time", 1, [.loading, .stale, .fast], group: "server", since: "2.6.0", "Return the current server time", plain(ServerCommands.time)),
            spec("lastsave", 1, [.loading, .stale, .fast], group: "server", since: "1.0.0", "Get the UNIX time stamp of the last successful save to disk", plain(ServerCommands.lastsave)),
            spec("save", 1, [.admin, .noscript, .noMulti], group: "server", since: "1.0.0", "Synchronously save the dataset to disk", plain(ServerCommands.save)),
            spec("bgsave", -1, [.admin, .noscript], group: "server", since: "1.0.0", "Asynchronously save the dataset to disk", plain(ServerCommands.bgsave)),
            spec("shutdown", -1, [.admin, .noscript, .loading, .stale, .noMulti, .sentinel, .allowBusy], group: "server", since: "1.0.0", "Synchronously save the dataset to disk and then shut down the server", plain(ServerCommands.shutdown)),
            spec("commit", 1, [.fast], group: "server", since: "walrus", "Seal every write made so far (fdatasync); answer once durable", plain(ServerCommands.commit)),
            spec("digest", 1, [.readonly], group: "server", since: "walrus", "A checksum of every key, value and deadline, equal on nodes that hold the same data", keyspace(ServerCommands.digest)),
            spec(
                "config", -2, [], group: "server", since: "2.0.0", "A container for server configuration commands", .container,
                subcommands: [
                    spec("get", -3, [.admin, .noscript, .loading, .stale], group: "server", since: "2.0.0", "Get the values of configuration parameters", container: "config", plain(ServerCommands.configGet)),
                    spec("set", -4, [.admin, .noscript, .loading, .stale], group: "server", since: "2.0.0", "Set configuration parameters to the given values", container: "config", plain(ServerCommands.configSet)),
                    spec("resetstat", 2, [.admin, .noscript, .loading, .stale], group: "server", since: "2.0.0", "Reset the stats returned by INFO", container: "config", plain(ServerCommands.configResetStat)),
                    spec("rewrite", 2, [.admin, .noscript, .loading, .stale], group: "server", since: "2.8.0", "Rewrite the configuration file with the in memory configuration", container: "config", plain(ServerCommands.configRewrite)),
                    spec("help", 2, [.loading, .stale], group: "server", since: "5.0.0", "Show helpful text about the different subcommands", container: "config", plain(ServerCommands.configHelp)),
                ]),
            spec(
                "memory", -2, [], group: "server", since: "4.0.0", "A container for memory diagnostics commands", .container,
                subcommands: [
                    spec("usage", -3, [.readonly], keys: (2, 2, 1), group: "server", since: "4.0.0", "Estimate the memory usage of a key", container: "memory", keyspace(KeyCommands.memoryUsage)),
                ]),
            spec(
                "function", -2, [], group: "scripting", since: "7.0.0", "A container for function commands", .container,
                subcommands: [
                    spec("flush", -2, [.write, .noscript], group: "scripting", since: "7.0.0", "Deleting all functions", container: "function", plain(ServerCommands.functionFlush)),
                    spec("list", -2, [.noscript], group: "scripting", since: "7.0.0", "List information about all the functions", container: "function", plain(ServerCommands.functionList)),
                    spec("load", -3, [.write, .denyOOM, .noscript], group: "scripting", since: "7.0.0", "Create a function with the given arguments (name, code, description)", container: "function", plain(ServerCommands.functionLoad)),
                ]),
            spec(
                "command", -1, [.loading, .stale, .sentinel], group: "server", since: "2.8.13", "Get array of Redis command details", .plain(IntrospectionCommands.command),
                subcommands: [
                    spec("count", 2, [.loading, .stale, .sentinel], group: "server", since: "2.8.13", "Get total number of Redis commands", container: "command", plain(IntrospectionCommands.count)),
                    spec("info", -2, [.loading, .stale, .sentinel], group: "server", since: "2.8.13", "Get array of specific Redis command details, or all when no argument is given.", container: "command", plain(IntrospectionCommands.info)),
                    spec("docs", -2, [.loading, .stale, .sentinel], group: "server", since: "7.0.0", "Get array of specific Redis command documentation", container: "command", plain(IntrospectionCommands.docs)),
                    spec("list", -2, [.loading, .stale, .sentinel], group: "server", since: "7.0.0", "Get an array of Redis command names", container: "command", plain(IntrospectionCommands.list)),
                    spec("getkeys", -4, [.loading, .stale, .sentinel], group: "server", since: "2.8.13", "Extract keys given a full Redis command", container: "command", plain(IntrospectionCommands.getkeys)),
                ]),
        ]
        list.sort { $0.name < $1.name }
        // Statistics slots, top-level entries then subcommands (assigned before the table is
        // shared, never changed after).
        var slot = 0
        for spec in list {
            spec.assignSlot(slot)
            slot += 1
            for sub in spec.subcommands.values.sorted(by: { $0.name < $1.name }) {
                sub.assignSlot(slot)
                slot += 1
            }
        }
        return list
    }()

    /// Every entry with its subcommands, in statistics-slot order.
    static let allEntries: [CommandSpec] = Self.commands.flatMap { spec in
        [spec] + spec.subcommands.values.sorted(by: { $0.name < $1.name })
    }

    /// Upper-case name → entry.
    static let byName: [String: CommandSpec] = Dictionary(uniqueKeysWithValues: commands.map { ($0.name.uppercased(), $0) })

    /// The original walrus shell's words, where they do not clash with Redis commands.
    static let aliases = ["HAS": "EXISTS", "LEN": "DBSIZE", "DELETE": "DEL"]

    /// What a RESP2 connection with subscriptions may still send (Redis's list).
    static func allowedWhileSubscribed(_ spec: CommandSpec) -> Bool {
        spec.container == nil && ["subscribe", "unsubscribe", "psubscribe", "punsubscribe", "ping", "quit", "reset"].contains(spec.name)
    }

    /// Commands a MULTI runs at once instead of queueing (Redis's list in processCommand).
    static func runsInsideMulti(_ spec: CommandSpec) -> Bool { spec.runsInsideMulti }

    /// The entry for a request (a subcommand's for a container), or the error Redis gives:
    /// unknown command, unknown subcommand, wrong number of arguments.
    static func resolve(_ arguments: [ByteBuffer]) -> Result<CommandSpec, CommandError> {
        guard let spec = Self.find(arguments[0]) else {
            // As Redis prints them (with C's %s): each word up to its first NUL byte.
            func printable(_ word: ByteBuffer, _ room: Int) -> String {
                String(decoding: word.readableBytesView.prefix(room).prefix { $0 != 0 }, as: UTF8.self)
            }
            var words = ""
            for argument in arguments.dropFirst() where words.utf8.count < 128 {
                words += "'" + printable(argument, 128 - words.utf8.count) + "' "
            }
            let shown = printable(arguments[0], 128)
            return .failure(CommandError("ERR unknown command '\(shown)', with args beginning with: \(words)"))
        }
        if spec.subcommands.isEmpty || (arguments.count == 1 && spec.arity == -1) {
            return spec.accepts(wordCount: arguments.count) ? .success(spec) : .failure(.arity(spec.fullName))
        }
        guard arguments.count >= 2 else { return .failure(.arity(spec.fullName)) }
        guard let sub = spec.subcommands[Self.upper(arguments[1])] else {
            let shown = String(decoding: arguments[1].readableBytesView.prefix(128), as: UTF8.self)
            return .failure(CommandError("ERR unknown subcommand '\(shown)'. Try \(spec.name.uppercased()) HELP."))
        }
        return sub.accepts(wordCount: arguments.count) ? .success(sub) : .failure(.arity(sub.fullName))
    }

    /// The entry for a command name alone (COMMAND INFO), subcommands as `config|get`.
    static func lookup(_ name: String) -> CommandSpec? {
        let parts = name.uppercased().split(separator: "|", maxSplits: 1).map(String.init)
        guard let first = parts.first, let spec = Self.byName[first] else { return nil }
        if parts.count == 2 { return spec.subcommands[parts[1]] }
        return spec
    }

    /// The entry named by `word` (any case, the shell's aliases too), without building a String:
    /// a command name is looked up on every request.
    static func find(_ word: ByteBuffer) -> CommandSpec? {
        word.withUnsafeReadableBytes { bytes in
            guard let key = NameKey(bytes) else { return nil }
            return Self.byKey.find(key)
        }
    }

    /// A name up to 24 bytes, upper-cased, packed into three words, with its length: without it
    /// a name and the same name with NUL bytes after it ("GET\0") would pack alike.
    struct NameKey: Hashable {
        var a: UInt64 = 0
        var b: UInt64 = 0
        var c: UInt64 = 0
        var count: Int

        /// The empty key (no name has it): a free slot of `NameTable`.
        init() { self.count = 0 }

        init?(_ bytes: UnsafeRawBufferPointer) {
            guard bytes.count > 0, bytes.count <= 24 else { return nil }
            self.count = bytes.count
            for (i, byte) in bytes.enumerated() {
                let upper = UInt64(byte >= 97 && byte <= 122 ? byte - 32 : byte)
                switch i >> 3 {
                case 0: self.a |= upper << (UInt64(i & 7) * 8)
                case 1: self.b |= upper << (UInt64(i & 7) * 8)
                default: self.c |= upper << (UInt64(i & 7) * 8)
                }
            }
        }

        init?(_ name: String) {
            let key = Array(name.utf8).withUnsafeBytes { NameKey($0) }
            guard let key else { return nil }
            self = key
        }
    }

    private static let byKey: NameTable = {
        var entries: [(NameKey, CommandSpec)] = []
        for (name, spec) in Self.byName { entries.append((NameKey(name)!, spec)) }
        for (alias, name) in Self.aliases { entries.append((NameKey(alias)!, Self.byName[name]!)) }
        return NameTable(entries)
    }()

    /// Names to entries, open addressing over a multiplicative hash of the packed name: a
    /// `Dictionary` hashes each lookup with SipHash (~300 instructions per command, callgrind),
    /// this with three multiplies. Fixed once built; a quarter full, so probes are short.
    struct NameTable: Sendable {
        private let keys: [NameKey]
        private let specs: [CommandSpec?]
        private let shift: UInt64

        init(_ entries: [(NameKey, CommandSpec)]) {
            var bits: UInt64 = 4
            while (1 << bits) < entries.count * 4 { bits += 1 }
            self.shift = 64 - bits
            var keys = [NameKey](repeating: NameKey(), count: 1 << bits)
            var specs = [CommandSpec?](repeating: nil, count: 1 << bits)
            for (key, spec) in entries {
                var slot = Self.home(key, shift: self.shift)
                while specs[slot] != nil && keys[slot] != key { slot = (slot + 1) & (keys.count - 1) }
                keys[slot] = key
                specs[slot] = spec
            }
            self.keys = keys
            self.specs = specs
        }

        @inline(__always)
        private static func home(_ key: NameKey, shift: UInt64) -> Int {
            var h = key.a &* 0x9E37_79B9_7F4A_7C15
            h ^= key.b &* 0xC2B2_AE3D_27D4_EB4F
            h ^= key.c &* 0x1656_67B1_9E37_79F9
            h ^= UInt64(key.count) &* 0xD6E8_FEB8_6659_FD93
            return Int(truncatingIfNeeded: h >> shift)
        }

        func find(_ key: NameKey) -> CommandSpec? {
            var slot = Self.home(key, shift: self.shift)
            while let spec = self.specs[slot] {
                if self.keys[slot] == key { return spec }
                slot = (slot + 1) & (self.keys.count - 1)
            }
            return nil
        }
    }

    static func upper(_ word: ByteBuffer) -> String {
        word.withUnsafeReadableBytes { bytes in
            String(unsafeUninitializedCapacity: bytes.count) { out in
                for (i, byte) in bytes.enumerated() { out[i] = byte >= 97 && byte <= 122 ? byte - 32 : byte }
                return bytes.count
            }
        }
    }

    /// The GET and SET entries, which the connection handler's in-place path asks.
    static let get = byName["GET"]!
    static let set = byName["SET"]!
}
