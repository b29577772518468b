// spawn: a child that is inside its cgroup before its first instruction, created vfork-style
// (CLONE_VM|CLONE_VFORK on a separate small stack) so the cost does not grow with our memory.
//   v2 (cgroupDir): clone3(CLONE_INTO_CGROUP) via the x86_64 trampoline in clone3.cc.
//   v1 / fallback (joinProcs, or clone3 missing): glibc clone(); the child writes "0" to each
//   cgroup.procs before anything else.
// The child shares our memory until execve: it uses only raw syscalls on data the parent prepared,
// and reports a failure (errno, step, path) through ChildCtx, which the parent turns into an error.
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "clone3.h"
#include "errors.h"
#include "fd.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
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

const char kOomPath[] = "/proc/self/oom_score_adj";
const char kDevNullPath[] = "/dev/null";

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

// Kernel layout of struct sigaction for rt_sigaction (x86_64 and most others).
struct KSigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)(void);
  uint64_t mask;
};

[[noreturn]] void ChildFail(ChildCtx* c, int step, const char* path) {
  c->err = errno != 0 ? errno : EIO;
  c->step = step;
  c->err_path = path;
  syscall(SYS_exit_group, 127);
  __builtin_unreachable();
}

long Sys(long nr, long a = 0, long b = 0, long c = 0, long d = 0) {
  long r;
  do {
    r = syscall(nr, a, b, c, d);
  } while (r < 0 && errno == EINTR);
  return r;
}

void WriteFileOrFail(ChildCtx* c, const char* path, const char* data, size_t len, int open_step, int write_step) {
  long fd = Sys(SYS_openat, AT_FDCWD, reinterpret_cast<long>(path), O_WRONLY | O_CLOEXEC);
  if (fd < 0) ChildFail(c, open_step, path);
  if (Sys(SYS_write, fd, reinterpret_cast<long>(data), static_cast<long>(len)) != static_cast<long>(len))
    ChildFail(c, write_step, path);
  syscall(SYS_close, fd);
}

int ChildMain(void* arg) {
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
    } else if (Sys(SYS_dup2, src[i], i) < 0) {
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
    if (base_ != nullptr) munmap(base_, kSize);
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

bool HasNul(const std::string& s) { return s.find('\0') != std::string::npos; }

bool StringArray(const Napi::Value& v, std::vector<std::string>* out) {
  if (!v.IsArray()) return false;
  Napi::Array a = v.As<Napi::Array>();
  uint32_t n = a.Length();
  out->reserve(n);
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value e = a[i];
    if (!e.IsString()) return false;
    out->push_back(e.As<Napi::String>().Utf8Value());
    if (HasNul(out->back())) return false;
  }
  return true;
}

std::vector<char*> CPointers(std::vector<std::string>& strs) {
  std::vector<char*> p;
  p.reserve(strs.size() + 1);
  for (auto& s : strs) p.push_back(&s[0]);
  p.push_back(nullptr);
  return p;
}

bool OptString(const Napi::Object& o, const char* key, bool* present, std::string* out) {
  Napi::Value v = o.Get(key);
  *present = false;
  if (v.IsUndefined() || v.IsNull()) return true;
  if (!v.IsString()) return false;
  *out = v.As<Napi::String>().Utf8Value();
  *present = true;
  return !HasNul(*out);
}

bool OptInt(const Napi::Object& o, const char* key, bool* present, int64_t* out) {
  Napi::Value v = o.Get(key);
  *present = false;
  if (v.IsUndefined() || v.IsNull()) return true;
  if (!v.IsNumber()) return false;
  *out = v.As<Napi::Number>().Int64Value();
  *present = true;
  return true;
}

// spawn(opts: SpawnOptions): { pid, pidfd, placement }
Napi::Value Spawn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) return ThrowType(env, "spawn(opts: SpawnOptions)");
  Napi::Object o = info[0].As<Napi::Object>();

  bool has_file = false, has_cwd = false, has_cg = false;
  std::string file, cwd, cgroup_dir;
  if (!OptString(o, "file", &has_file, &file) || !has_file || file.empty())
    return ThrowType(env, "spawn: opts.file must be a non-empty string");
  std::vector<std::string> argv_s, envp_s, joins_s;
  if (!StringArray(o.Get("argv"), &argv_s)) return ThrowType(env, "spawn: opts.argv must be an array of strings without NUL");
  if (!StringArray(o.Get("envp"), &envp_s)) return ThrowType(env, "spawn: opts.envp must be an array of strings without NUL");
  if (!OptString(o, "cwd", &has_cwd, &cwd)) return ThrowType(env, "spawn: opts.cwd must be a string");
  if (!OptString(o, "cgroupDir", &has_cg, &cgroup_dir)) return ThrowType(env, "spawn: opts.cgroupDir must be a string");
  Napi::Value jv = o.Get("joinProcs");
  if (!jv.IsUndefined() && !jv.IsNull() && !StringArray(jv, &joins_s))
    return ThrowType(env, "spawn: opts.joinProcs must be an array of strings");

  bool has_uid = false, has_gid = false, has_oom = false;
  int64_t uid = 0, gid = 0, oom = 0;
  if (!OptInt(o, "uid", &has_uid, &uid) || (has_uid && (uid < 0 || uid > 0xfffffffeLL)))
    return ThrowType(env, "spawn: opts.uid must be a valid uid");
  if (!OptInt(o, "gid", &has_gid, &gid) || (has_gid && (gid < 0 || gid > 0xfffffffeLL)))
    return ThrowType(env, "spawn: opts.gid must be a valid gid");
  if (!OptInt(o, "oomScoreAdj", &has_oom, &oom) || (has_oom && (oom < -1000 || oom > 1000)))
    return ThrowType(env, "spawn: opts.oomScoreAdj must be an integer in -1000..1000");
  std::vector<gid_t> groups;
  Napi::Value gv = o.Get("groups");
  bool has_groups = !gv.IsUndefined() && !gv.IsNull();
  if (has_groups) {
    if (!gv.IsArray()) return ThrowType(env, "spawn: opts.groups must be an array of gids");
    Napi::Array ga = gv.As<Napi::Array>();
    for (uint32_t i = 0; i < ga.Length(); i++) {
      Napi::Value e = ga[i];
      if (!e.IsNumber()) return ThrowType(env, "spawn: opts.groups must be an array of gids");
      groups.push_back(static_cast<gid_t>(e.As<Napi::Number>().Int64Value()));
    }
  }
  Napi::Value sv = o.Get("stdio");
  if (!sv.IsArray() || sv.As<Napi::Array>().Length() != 3)
    return ThrowType(env, "spawn: opts.stdio must be [stdin, stdout, stderr] fds (-1 = /dev/null)");
  int stdio[3];
  for (uint32_t i = 0; i < 3; i++) {
    Napi::Value e = sv.As<Napi::Array>()[i];
    if (!e.IsNumber()) return ThrowType(env, "spawn: opts.stdio entries must be numbers");
    stdio[i] = e.As<Napi::Number>().Int32Value();
    if (stdio[i] < -1) stdio[i] = -1;
  }
  bool setsid_flag = o.Get("setsid").ToBoolean().Value();
  bool ctty_flag = o.Get("controllingTty").ToBoolean().Value();
  if (ctty_flag && !setsid_flag) return ThrowType(env, "spawn: opts.controllingTty needs opts.setsid");

  // Everything the child reads is prepared here.
  std::vector<char*> argv_p = CPointers(argv_s);
  std::vector<char*> envp_p = CPointers(envp_s);
  std::string oom_s = has_oom ? std::to_string(oom) : std::string();
  struct rlimit rl;
  int max_fd = 65536;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 65536)
    max_fd = static_cast<int>(rl.rlim_cur);

  UniqueFd cgfd;
  if (has_cg) {
    cgfd.reset(open(cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cgfd.valid()) return ThrowErrno(env, errno, "open", cgroup_dir.c_str());
  }

  ChildStack stack;
  if (!stack.ok()) return ThrowErrno(env, errno, "mmap");

  ChildCtx c = {};
  c.file = file.c_str();
  c.argv = argv_p.data();
  c.envp = envp_p.data();
  c.cwd = has_cwd ? cwd.c_str() : nullptr;
  c.oom = has_oom ? oom_s.c_str() : nullptr;
  c.oom_len = oom_s.size();
  c.setsid = setsid_flag;
  c.ctty = ctty_flag;
  c.set_groups = has_groups || has_uid || has_gid;
  c.groups = groups.data();
  c.ngroups = groups.size();
  c.has_gid = has_gid;
  c.gid = static_cast<gid_t>(gid);
  c.has_uid = has_uid;
  c.uid = static_cast<uid_t>(uid);
  for (int i = 0; i < 3; i++) c.stdio[i] = stdio[i];
  c.max_fd = max_fd;

  std::vector<const char*> joins_p;
  for (auto& j : joins_s) joins_p.push_back(j.c_str());
  std::string fallback_join;

  int pidfd = -1;
  long pid = -1;
  const char* placement = "none";
  {
    BlockAllSignals blocked;
    if (has_cg && kHaveClone3Trampoline) {
      c.joins = joins_p.data();
      c.njoins = joins_p.size();
      CloneArgs ca = {};
      ca.flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD | CLONE_INTO_CGROUP;
      ca.pidfd = reinterpret_cast<uint64_t>(&pidfd);
      ca.exit_signal = SIGCHLD;
      ca.stack = reinterpret_cast<uint64_t>(stack.base());
      ca.stack_size = ChildStack::kSize;
      ca.cgroup = static_cast<uint64_t>(cgfd.get());
      long r = corral_clone3(&ca, sizeof ca, ChildMain, &c);
      if (r >= 0) {
        pid = r;
        placement = "clone3";
      } else if (r != -ENOSYS && r != -EINVAL && r != -E2BIG) {
        return ThrowErrno(env, static_cast<int>(-r), "clone3", cgroup_dir.c_str());
      }
    }
    if (pid < 0) {
      if (has_cg) {
        // Old kernel (or no trampoline): join the v2 group by writing its cgroup.procs.
        fallback_join = cgroup_dir + "/cgroup.procs";
        joins_p.push_back(fallback_join.c_str());
      }
      c.joins = joins_p.data();
      c.njoins = joins_p.size();
      pid = clone(ChildMain, stack.top(), CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &c, &pidfd);
      if (pid < 0) return ThrowErrno(env, errno, "clone");
      placement = c.njoins > 0 ? "join" : "none";
    }
  }

  if (c.err != 0) {
    // The child failed before execve and has exited (vfork: we resume only after that). Reap it.
    int status;
    while (waitpid(static_cast<pid_t>(pid), &status, 0) < 0 && errno == EINTR) {
    }
    if (pidfd >= 0) close(pidfd);
    return ThrowErrno(env, c.err, StepSyscall(c.step), c.err_path);
  }

  Napi::Object r = Napi::Object::New(env);
  r.Set("pid", Napi::Number::New(env, static_cast<double>(pid)));
  r.Set("pidfd", Napi::Number::New(env, pidfd));
  r.Set("placement", Napi::String::New(env, placement));
  return r;
}

}  // namespace

void InitSpawn(Napi::Env env, Napi::Object exports) {
  exports.Set("spawn", Napi::Function::New(env, Spawn, "spawn"));
}

}  // namespace corral
