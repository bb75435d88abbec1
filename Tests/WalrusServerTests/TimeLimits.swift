import Testing

extension Trait where Self == TimeLimitTrait {
    /// The hang guard of a test that starts servers and waits on them. Generous on purpose: a
    /// time limit counts from the test's start, and its synchronous body then waits for one of the
    /// cooperative pool's threads — two on a 2-core machine, held by whichever blocking tests
    /// started first. Under ThreadSanitizer that queue alone reached 260 s in CI, so a 3-minute
    /// limit failed a test whose own load loop is bounded at 60 s. Each test bounds its own work;
    /// this only catches a real hang.
    static var serverTest: Self { .timeLimit(.minutes(15)) }
}
