// clone3(2) with a child function on a separate stack (needed with CLONE_VM: the child must not
// return into the parent's frames). x86_64 only; elsewhere kHaveClone3Trampoline is false and
// spawn falls back to glibc clone() + writing cgroup.procs.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace corral {

// struct clone_args as of Linux 5.7 (CLONE_INTO_CGROUP), 88 bytes.
struct CloneArgs {
  uint64_t flags;
  uint64_t pidfd;
  uint64_t child_tid;
  uint64_t parent_tid;
  uint64_t exit_signal;
  uint64_t stack;
  uint64_t stack_size;
  uint64_t tls;
  uint64_t set_tid;
  uint64_t set_tid_size;
  uint64_t cgroup;
};

#if defined(__x86_64__)
constexpr bool kHaveClone3Trampoline = true;
#else
constexpr bool kHaveClone3Trampoline = false;
#endif

}  // namespace corral

// Parent: returns the child's pid, or -errno (raw kernel value; errno is not touched).
// Child: runs fn(arg) on args->stack and then exit_group(fn's return value); never returns.
extern "C" long corral_clone3(corral::CloneArgs* args, size_t size, int (*fn)(void*), void* arg);
