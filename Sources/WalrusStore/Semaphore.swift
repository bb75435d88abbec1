import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A one-shot wait for synchronous callers (the shell, checkpoints) on the store's callback API.
final class Semaphore: @unchecked Sendable {
    private var semaphore = sem_t()

    init() { sem_init(&self.semaphore, 0, 0) }
    deinit { sem_destroy(&self.semaphore) }

    func signal() { sem_post(&self.semaphore) }

    func wait() {
        while sem_wait(&self.semaphore) != 0 && errno == EINTR {}
    }
}
