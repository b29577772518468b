// ProcessHandle (pidfd.cc): the JS object that owns one process's pidfd. spawn.cc hands every
// spawned child's pidfd to it, so no fd number ever reaches JavaScript.
#pragma once
#include <napi.h>
#include <sys/types.h>

namespace corral {

// Wraps pidfd (ownership passes, closed on failure too) in a ProcessHandle. proc_env is what
// InitPidfd returned for this env. `child`: our own child (spawned here), reaped at env teardown.
Napi::Value WrapProcess(Napi::Env env, void* proc_env, int pidfd, pid_t pid, bool child);

// Reaps our child `pid` whenever it exits, on a small detached thread (env teardown: nobody will
// watch it any more, and it must not stay a zombie for the life of the process).
void ReapLater(pid_t pid);

// Registers openProcess and the ProcessHandle class; returns the per-env state for WrapProcess.
void* InitPidfd(Napi::Env env, Napi::Object exports);

}  // namespace corral
