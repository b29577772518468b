// See child.h. The code that runs in the child is built without sanitizer instrumentation: it runs
// on a stack the sanitizer does not know, in a process that exits without unwinding, and shares our
// memory (and so the sanitizer's shadow memory) until execve.
#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clone3.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#define CORRAL_NO_SANITIZE __attribute__((no_sanitize("address", "undefined"), noinline))
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define CORRAL_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define CORRAL_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace corral {

namespace {

enum Step : int {
  kNone = 0,
  kJoinOpen,
  kJoinWrite,
  kSetsid,
  kOomOpen,
  kOomWrite,
  kSetgroups,
  kSetgid,
  kSetuid,
  kChdir,
  kDevNull,
  kDup,
  kCtty,
  kExecve,
};

}  // namespace

const char* StepSyscall(int step) {
  switch (step) {
    case kJoinOpen: return "open";
    case kJoinWrite: return "write";
    case kSetsid: return "setsid";
    case kOomOpen: return "open";
    case kOomWrite: return "write";
    case kSetgroups: return "setgroups";
    case kSetgid: return "setgid";
    case kSetuid: return "setuid";
    case kChdir: return "chdir";
    case kDevNull: return "open";
    case kDup: return "dup2";
    case kCtty: return "ioctl";
    case kExecve: return "execve";
    default: return "spawn";
  }
}

namespace {

const char kOomPath[] = "/proc/self/oom_score_adj";
const char kDevNullPath[] = "/dev/null";


// Kernel layout of struct sigaction for rt_sigaction (x86_64, arm64 and most others).
struct KSigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)(void);
  uint64_t mask;
};

[[noreturn]] CORRAL_NO_SANITIZE void ChildFail(ChildCtx* c, int step, const char* path) {
  c->err = errno != 0 ? errno : EIO;
  c->step = step;
  c->err_path = path;
  syscall(SYS_exit_group, 127);
  __builtin_unreachable();
}

CORRAL_NO_SANITIZE long Sys(long nr, long a = 0, long b = 0, long c = 0, long d = 0) {
  long r;
  do {
    r = syscall(nr, a, b, c, d);
  } while (r < 0 && errno == EINTR);
  return r;
}

CORRAL_NO_SANITIZE void WriteFileOrFail(ChildCtx* c, const char* path, const char* data, size_t len, int open_step, int write_step) {
  long fd = Sys(SYS_openat, AT_FDCWD, reinterpret_cast<long>(path), O_WRONLY | O_CLOEXEC);
  if (fd < 0) ChildFail(c, open_step, path);
  if (Sys(SYS_write, fd, reinterpret_cast<long>(data), static_cast<long>(len)) != static_cast<long>(len))
    ChildFail(c, write_step, path);
  syscall(SYS_close, fd);
}

CORRAL_NO_SANITIZE int ChildMain(void* arg) {
  ChildCtx* c = static_cast<ChildCtx*>(arg);
  errno = 0;

  // 1. Into the cgroups (v1 / fallback) before anything else.
  for (size_t i = 0; i < c->njoins; i++) WriteFileOrFail(c, c->joins[i], "0", 1, kJoinOpen, kJoinWrite);

  // 2. Every disposition back to SIG_DFL (Node ignores SIGPIPE; handlers must never run here).
  //    All signals are still blocked (the parent blocked them around the clone).
  KSigaction dfl = {SIG_DFL, 0, nullptr, 0};
  for (long sig = 1; sig < 65; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    syscall(SYS_rt_sigaction, sig, &dfl, nullptr, 8);
  }

  if (c->setsid && Sys(SYS_setsid) < 0) ChildFail(c, kSetsid, nullptr);
  if (c->oom != nullptr) WriteFileOrFail(c, kOomPath, c->oom, c->oom_len, kOomOpen, kOomWrite);

  // Raw syscalls: glibc's set*id would broadcast to the parent's threads (shared memory).
  if (c->set_groups && Sys(SYS_setgroups, static_cast<long>(c->ngroups), reinterpret_cast<long>(c->groups)) < 0)
    ChildFail(c, kSetgroups, nullptr);
  if (c->has_gid && Sys(SYS_setgid, static_cast<long>(c->gid)) < 0) ChildFail(c, kSetgid, nullptr);
  if (c->has_uid && Sys(SYS_setuid, static_cast<long>(c->uid)) < 0) ChildFail(c, kSetuid, nullptr);
  if (c->cwd != nullptr && Sys(SYS_chdir, reinterpret_cast<long>(c->cwd)) < 0) ChildFail(c, kChdir, c->cwd);

  // 3. stdio. First give every source that sits on 0..2 (but not on its own slot) a new number
  //    >= 3, so that no dup2 clobbers a source another slot still needs.
  int src[3];
  for (int i = 0; i < 3; i++) {
    src[i] = c->stdio[i];
    if (src[i] < 0) {
      long fd = Sys(SYS_openat, AT_FDCWD, reinterpret_cast<long>(kDevNullPath), (i == 0 ? O_RDONLY : O_RDWR) | O_CLOEXEC);
      if (fd < 0) ChildFail(c, kDevNull, kDevNullPath);
      src[i] = static_cast<int>(fd);
    }
  }
  for (int i = 0; i < 3; i++) {
    if (src[i] < 3 && src[i] != i) {
      long fd = Sys(SYS_fcntl, src[i], F_DUPFD_CLOEXEC, 3);
      if (fd < 0) ChildFail(c, kDup, nullptr);
      src[i] = static_cast<int>(fd);
    }
  }
  for (int i = 0; i < 3; i++) {
    if (src[i] == i) {
      if (Sys(SYS_fcntl, i, F_SETFD, 0) < 0) ChildFail(c, kDup, nullptr);
    } else if (Sys(SYS_dup3, src[i], i, 0) < 0) {  // dup3, not dup2: arm64 has no dup2 syscall (src != i here)
      ChildFail(c, kDup, nullptr);
    }
  }

  if (c->ctty && Sys(SYS_ioctl, 0, TIOCSCTTY, 0) < 0) ChildFail(c, kCtty, nullptr);

  // 4. Every other fd closed.
  if (syscall(SYS_close_range, 3, ~0U, 0) < 0) {
    for (long fd = 3; fd < c->max_fd; fd++) syscall(SYS_close, fd);
  }

  // 5. Unblock and exec.
  uint64_t none = 0;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, nullptr, 8);
  syscall(SYS_execve, c->file, c->argv, c->envp);
  ChildFail(c, kExecve, c->file);
}

// The child's stack: a small anonymous mapping with a guard page at the bottom.
class ChildStack {
 public:
  static constexpr size_t kSize = 128 * 1024;
  ChildStack() {
    void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) return;
    base_ = static_cast<char*>(p);
    mprotect(base_, 4096, PROT_NONE);
  }
  ~ChildStack() {
    // The child ran instrumented callees (libc wrappers) on this stack: clear what they poisoned
    // before the pages go back, or a later mapping at this address inherits it.
    if (base_ != nullptr) {
      CORRAL_UNPOISON(base_ + 4096, kSize - 4096);
      munmap(base_, kSize);
    }
  }
  ChildStack(const ChildStack&) = delete;
  ChildStack& operator=(const ChildStack&) = delete;
  bool ok() const { return base_ != nullptr; }
  char* base() const { return base_; }
  char* top() const { return base_ + kSize; }  // 16-byte aligned (page aligned)

 private:
  char* base_ = nullptr;
};

// Blocks every signal (including glibc's internal ones) for the duration of the clone.
class BlockAllSignals {
 public:
  BlockAllSignals() {
    uint64_t all = ~0ULL;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old_, 8);
  }
  ~BlockAllSignals() { syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old_, nullptr, 8); }

 private:
  uint64_t old_ = 0;
};

}  // namespace

bool CloneChild(ChildCtx* c, int cgroup_fd, const std::string& cgroup_dir, std::vector<const char*>* joins,
                volatile int* pidfd, long* pid, const char** placement, SysError* err) {
  ChildStack stack;
  if (!stack.ok()) {
    err->set(errno, "mmap", std::string());
    return false;
  }
  std::string fallback_join;
  *pid = -1;
  *placement = "none";
  BlockAllSignals blocked;
  if (cgroup_fd >= 0 && kHaveClone3Trampoline) {
    c->joins = joins->data();
    c->njoins = joins->size();
    CloneArgs ca = {};
    ca.flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD | CLONE_INTO_CGROUP;
    ca.pidfd = reinterpret_cast<uint64_t>(pidfd);
    ca.exit_signal = SIGCHLD;
    ca.stack = reinterpret_cast<uint64_t>(stack.base());
    ca.stack_size = ChildStack::kSize;
    ca.cgroup = static_cast<uint64_t>(cgroup_fd);
    long r = corral_clone3(&ca, sizeof ca, ChildMain, c);
    if (r >= 0) {
      *pid = r;
      *placement = "clone3";
      return true;
    }
    // No clone3 (ENOSYS), a seccomp profile older than clone3 (EPERM), a kernel with a shorter
    // clone_args (E2BIG) or without CLONE_INTO_CGROUP (EINVAL): the join path below.
    if (r != -ENOSYS && r != -EPERM && r != -E2BIG && r != -EINVAL) {
      err->set(static_cast<int>(-r), "clone3", cgroup_dir);
      return false;
    }
  }
  if (cgroup_fd >= 0) {
    fallback_join = cgroup_dir + "/cgroup.procs";
    joins->push_back(fallback_join.c_str());
  }
  c->joins = joins->data();
  c->njoins = joins->size();
  // glibc's clone stores the pidfd through its parent_tid argument (CLONE_PIDFD).
  *pid = clone(ChildMain, stack.top(), CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, c,
               const_cast<int*>(pidfd));
  if (*pid < 0) {
    err->set(errno, "clone", std::string());
    return false;
  }
  *placement = c->njoins > 0 ? "join" : "none";
  return true;
}

}  // namespace corral
