// The child side of spawn: what runs between clone and execve, sharing the parent's memory
// (CLONE_VM|CLONE_VFORK), and the clone itself. Used by spawn.cc from its spawn thread.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "errors.h"

namespace corral {

// Everything the child needs, prepared by the parent; plus the failure report.
struct ChildCtx {
  const char* file;
  char* const* argv;
  char* const* envp;
  const char* cwd;  // nullptr: inherit
  const char* const* joins;
  size_t njoins;
  const char* oom;  // nullptr: leave alone
  size_t oom_len;
  bool setsid;
  bool ctty;  // make stdin (a pty slave) the controlling terminal of the new session
  bool set_groups;
  const gid_t* groups;
  size_t ngroups;
  bool has_gid;
  gid_t gid;
  bool has_uid;
  uid_t uid;
  int stdio[3];
  int max_fd;  // for the close loop when close_range is missing
  // Report (written by the child only on failure).
  volatile int err;
  volatile int step;
  const char* volatile err_path;
};

// The syscall name of a failed child step (for the error).
const char* StepSyscall(int step);

// Creates the child (clone3 into cgroup_fd when >= 0, falling back to joining cgroup_dir's
// cgroup.procs on ENOSYS/EPERM/E2BIG/EINVAL; glibc clone otherwise) and returns once it has
// exec'd or failed. The kernel stores the child's pidfd in *pidfd before the child runs, so another
// thread may read it while this one is suspended. Returns false with *err set when no child was
// created. The child's own failure is in c->err (the child has exited then; not reaped).
bool CloneChild(ChildCtx* c, int cgroup_fd, const std::string& cgroup_dir, std::vector<const char*>* joins,
                volatile int* pidfd, long* pid, const char** placement, SysError* err);

}  // namespace corral
