// Long-lived threads for spawn jobs, so the event-loop thread never creates a thread per spawn.
#pragma once

namespace corral {

using SpawnPoolFn = void* (*)(void*);

// Runs fn(arg) on a pool thread (detached; fn owns arg). Never creates a thread on the calling
// thread, except the pool's one manager thread on first use. Returns 0, or an errno (EAGAIN when
// the manager thread cannot be created): then fn was not queued.
int SubmitSpawnJob(SpawnPoolFn fn, void* arg);

}  // namespace corral
