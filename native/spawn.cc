// spawn: a child that is inside its cgroup before its first instruction (child.cc), created off the
// main thread and bounded.
//
// Each spawn runs on a thread of its own: the vfork-style clone suspends the calling thread until
// the child has exec'd, and a child that freezes while joining its group (a frozen v1 freezer or v2
// group) would suspend it for as long as the group stays frozen. A dedicated thread is what gets
// stuck then, never the event loop and never a libuv pool thread. Before cloning, the thread reads
// the groups' freeze state (cheap) and fails at once with syscall 'cgroup-frozen'.
// A timer on the loop bounds the whole spawn: on expiry the callback gets ETIMEDOUT (syscall
// 'spawn'), the job is abandoned, and the child is SIGKILLed through its pidfd; the thread, when the
// kernel lets it go, kills and reaps the child and closes the pidfd itself.
//
// Results come back through one uv_async_t per env. Job states change under the hub's mutex only:
// running -> done (thread) | abandoned (timer or env teardown). Whoever makes the transition owns
// what follows, so the pidfd has exactly one owner at every moment.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "spawn_pool.h"
#include "args.h"
#include "cgroupfs.h"
#include "child.h"
#include "errors.h"
#include "fd.h"
#include "process.h"

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

namespace corral {

namespace {

struct Job;

// Per-env meeting point of spawn threads and the loop. Shared (shared_ptr) by the env and every job
// thread, so a thread that outlives the env still has a mutex to take.
struct Hub {
  std::mutex mu;
  bool alive = true;           // env not torn down (guarded by mu; informational)
  std::vector<Job*> done;      // finished jobs waiting for the loop (guarded by mu)
  uv_async_t* async = nullptr;  // closed by the env cleanup hook
  std::unordered_set<Job*> pending;  // loop thread only: jobs whose callback has not run
  void* proc_env = nullptr;
  napi_env env = nullptr;
};

enum class State { kRunning, kDone, kAbandoned };

struct Job {
  std::shared_ptr<Hub> hub;
  // Inputs, owned here: the child reads them through ctx until execve.
  std::string file, cwd, cgroup_dir, oom;
  bool has_cwd = false, has_cg = false, has_oom = false;
  std::vector<std::string> argv_s, envp_s, joins_s;
  std::vector<char*> argv_p, envp_p;
  std::vector<const char*> joins_p;
  std::vector<gid_t> groups;
  ChildCtx ctx = {};
  int64_t timeout_ms = 0;
  // Results.
  State state = State::kRunning;  // guarded by hub->mu
  volatile int pidfd = -1;        // written by the kernel during clone; read by the timer under mu
  long pid = -1;
  const char* placement = "none";
  SysError err;
  // Loop side.
  uv_timer_t* timer = nullptr;
  napi_ref callback = nullptr;
  napi_async_context async = nullptr;
  // The thread's and the loop's claims; each side drops its own once it will not touch the job again.
  std::atomic<int> refs{2};

  void Unref() {
    if (--refs == 0) delete this;
  }
  void ReleaseNapi(napi_env env) {
    if (callback != nullptr) napi_delete_reference(env, callback);
    callback = nullptr;
    if (async != nullptr) napi_async_destroy(env, async);
    async = nullptr;
  }
};

std::vector<char*> CPointers(std::vector<std::string>& strs) {
  std::vector<char*> p;
  p.reserve(strs.size() + 1);
  for (auto& s : strs) p.push_back(&s[0]);
  p.push_back(nullptr);
  return p;
}

std::string DirOf(const std::string& file) {
  size_t slash = file.rfind('/');
  return slash == std::string::npos ? std::string(".") : file.substr(0, slash);
}

// Is a group this child is about to enter frozen? v1: freezer.state beside a joined cgroup.procs
// (FROZEN or FREEZING; a frozen ancestor shows here too). v2: "frozen 1" in cgroup.events.
bool FrozenGroup(const Job& j, std::string* which) {
  std::string text;
  const char* sc = "";
  for (const auto& procs : j.joins_s) {
    std::string dir = DirOf(procs);
    if (ReadWhole((dir + "/freezer.state").c_str(), &text, &sc) == 0 && text.compare(0, 6, "THAWED") != 0) {
      *which = dir;
      return true;
    }
    if (ReadWhole((dir + "/cgroup.events").c_str(), &text, &sc) == 0 && text.find("frozen 1") != std::string::npos) {
      *which = dir;
      return true;
    }
  }
  if (j.has_cg && ReadWhole((j.cgroup_dir + "/cgroup.events").c_str(), &text, &sc) == 0 &&
      text.find("frozen 1") != std::string::npos) {
    *which = j.cgroup_dir;
    return true;
  }
  return false;
}

// Kills (if it exec'd) and reaps the child of an abandoned or failed job, and closes its pidfd.
// Runs on the job's thread, which may block here until a frozen group thaws.
// wait=false (env teardown, on the loop): SIGKILL, then reaped in the background (ReapLater).
void DisposeChild(Job* j, bool kill_it, bool wait = true) {
  if (j->pid > 0) {
    if (kill_it && j->pidfd >= 0) syscall(SYS_pidfd_send_signal, j->pidfd, SIGKILL, nullptr, 0);
    int status;
    if (wait) {
      while (waitpid(static_cast<pid_t>(j->pid), &status, __WALL) < 0 && errno == EINTR) {
      }
    } else {
      ReapLater(static_cast<pid_t>(j->pid));
    }
  }
  if (j->pidfd >= 0) close(j->pidfd);
  j->pidfd = -1;
  j->pid = -1;
}

void* ThreadMain(void* arg) {
  Job* j = static_cast<Job*>(arg);
  std::string frozen;
  UniqueFd cgfd;
  bool cloned = false;
  if (FrozenGroup(*j, &frozen)) {
    j->err.set(EBUSY, "cgroup-frozen", frozen);
    j->err.detail = "cgroup is frozen";
  } else {
    if (j->has_cg) cgfd.reset(open(j->cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (j->has_cg && !cgfd.valid()) {
      j->err.set(errno, "open", j->cgroup_dir);
    } else {
      cloned = CloneChild(&j->ctx, cgfd.get(), j->cgroup_dir, &j->joins_p, &j->pidfd, &j->pid, &j->placement, &j->err);
    }
  }
  cgfd.reset();
  std::shared_ptr<Hub> hub = j->hub;
  {
    // One critical section: while the job is running the timer may signal the published pidfd, so
    // no fd is closed before the state changes; and env teardown marks running jobs abandoned.
    std::unique_lock<std::mutex> lock(hub->mu);
    if (j->state != State::kAbandoned) {
      if (cloned && j->ctx.err != 0) {
        // The child failed before execve and has exited (vfork: we resume only after that): the
        // reap does not wait.
        j->err.set(j->ctx.err, StepSyscall(j->ctx.step), j->ctx.err_path != nullptr ? j->ctx.err_path : "");
        DisposeChild(j, false);
      }
      j->state = State::kDone;
      hub->done.push_back(j);
      uv_async_send(hub->async);
      lock.unlock();
      j->Unref();
      return nullptr;
    }
  }
  // The loop gave up on us (timeout or env teardown) and released its napi state: clean up alone.
  // This may wait until a frozen group thaws; only this thread waits.
  DisposeChild(j, true);
  j->Unref();
  return nullptr;
}

void CloseTimer(Job* j) {
  if (j->timer == nullptr) return;
  uv_timer_stop(j->timer);
  uv_close(reinterpret_cast<uv_handle_t*>(j->timer), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  j->timer = nullptr;
}

// Calls the job's JS callback with (err) or (null, result) and releases its napi state.
void Deliver(Hub* hub, Job* j, bool timed_out) {
  napi_env env = hub->env;
  hub->pending.erase(j);
  CloseTimer(j);
  Napi::HandleScope scope(env);
  Napi::Env e(env);
  napi_value args[2];
  size_t argc = 1;
  if (timed_out) {
    SysError te;
    te.set(ETIMEDOUT, "spawn", j->has_cg ? j->cgroup_dir : j->joins_s.empty() ? std::string() : DirOf(j->joins_s[0]));
    te.detail = "timed out after " + std::to_string(j->timeout_ms) + " ms";
    args[0] = MakeError(e, te).Value();
  } else if (j->err) {
    args[0] = MakeError(e, j->err).Value();
  } else {
    Napi::Object r = Napi::Object::New(e);
    r.Set("pid", Napi::Number::New(e, static_cast<double>(j->pid)));
    r.Set("placement", Napi::String::New(e, j->placement));
    int fd = j->pidfd;
    j->pidfd = -1;  // owned by the ProcessHandle from here on (closed by it on failure too)
    Napi::Value h = WrapProcess(e, hub->proc_env, fd, static_cast<pid_t>(j->pid), true);
    if (e.IsExceptionPending()) {
      args[0] = e.GetAndClearPendingException().Value();
    } else {
      r.Set("process", h);
      args[0] = e.Null();
      args[1] = r;
      argc = 2;
    }
  }
  napi_value fn = nullptr, global, unused;
  if (j->callback != nullptr) napi_get_reference_value(env, j->callback, &fn);
  napi_get_global(env, &global);
  napi_async_context async = j->async;
  j->async = nullptr;
  if (fn != nullptr && async != nullptr) {
    napi_status s = napi_make_callback(env, async, global, fn, argc, args, &unused);
    if (s == napi_pending_exception) {
      napi_value ex;
      if (napi_get_and_clear_last_exception(env, &ex) == napi_ok) napi_fatal_exception(env, ex);
    }
  }
  if (async != nullptr) napi_async_destroy(env, async);
  j->ReleaseNapi(env);
}

// A few results per turn of the loop: each delivery runs its caller's continuation (a start records
// its task, for one), so hundreds delivered back to back would hold the loop for their sum.
constexpr size_t kDeliverPerTurn = 4;

void OnAsync(uv_async_t* a) {
  Hub* hub = static_cast<Hub*>(a->data);
  std::vector<Job*> batch;
  {
    std::lock_guard<std::mutex> lock(hub->mu);
    size_t n = hub->done.size() < kDeliverPerTurn ? hub->done.size() : kDeliverPerTurn;
    batch.assign(hub->done.begin(), hub->done.begin() + static_cast<std::ptrdiff_t>(n));
    hub->done.erase(hub->done.begin(), hub->done.begin() + static_cast<std::ptrdiff_t>(n));
    if (!hub->done.empty()) uv_async_send(hub->async);  // the rest on a later turn
  }
  for (Job* j : batch) {
    Deliver(hub, j, false);
    j->Unref();
  }
}

void OnTimeout(uv_timer_t* t) {
  Job* j = static_cast<Job*>(t->data);
  Hub* hub = j->hub.get();
  {
    std::lock_guard<std::mutex> lock(hub->mu);
    if (j->state != State::kRunning) return;  // finished meanwhile: OnAsync delivers it
    j->state = State::kAbandoned;
    // While it is running the thread touches no fd, so the pidfd the kernel published (if any) is
    // valid here: the child dies as soon as the kernel lets it (at once in a frozen v2 group).
    if (j->pidfd >= 0) syscall(SYS_pidfd_send_signal, j->pidfd, SIGKILL, nullptr, 0);
  }
  // From here the thread disposes of the child; we only deliver the error.
  Deliver(hub, j, true);
  j->Unref();
}

// Env teardown: no callback will run. Running jobs are abandoned to their threads, delivered ones
// freed; napi state released now, while the env is alive.
void CleanupHub(void* arg) {
  auto* holder = static_cast<std::shared_ptr<Hub>*>(arg);
  std::shared_ptr<Hub> hub = *holder;
  delete holder;
  std::vector<Job*> finished;
  {
    std::lock_guard<std::mutex> lock(hub->mu);
    hub->alive = false;
    for (Job* j : hub->pending) {
      if (j->state == State::kRunning)
        j->state = State::kAbandoned;  // its thread disposes of the child
      else
        finished.push_back(j);  // done, result not collected: ours to dispose of
    }
    hub->done.clear();
  }
  for (Job* j : finished) DisposeChild(j, true, false);  // exec'd children nobody will ever watch
  for (Job* j : hub->pending) {
    CloseTimer(j);
    j->ReleaseNapi(hub->env);
    j->Unref();
  }
  hub->pending.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(hub->async), [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  hub->async = nullptr;
}

// Parses spawn's options into j (strictly: a TypeError names the first bad field).
bool ParseOptions(Napi::Env env, const Napi::Object& o, Job* j) {
  if (!StringArg(env, o.Get("file"), "spawn: opts.file", &j->file)) return false;
  if (j->file.empty()) return TypeFail(env, "spawn: opts.file", "must not be empty");
  if (!StringArrayArg(env, o.Get("argv"), "spawn: opts.argv", kMaxList, &j->argv_s)) return false;
  if (!StringArrayArg(env, o.Get("envp"), "spawn: opts.envp", kMaxList, &j->envp_s)) return false;
  Napi::Value v = o.Get("cwd");
  if ((j->has_cwd = !v.IsUndefined() && !v.IsNull()) && !StringArg(env, v, "spawn: opts.cwd", &j->cwd)) return false;
  v = o.Get("cgroupDir");
  if ((j->has_cg = !v.IsUndefined() && !v.IsNull()) && !StringArg(env, v, "spawn: opts.cgroupDir", &j->cgroup_dir))
    return false;
  v = o.Get("joinProcs");
  if (!v.IsUndefined() && !v.IsNull() && !StringArrayArg(env, v, "spawn: opts.joinProcs", 64, &j->joins_s)) return false;
  bool has_uid, has_gid, has_oom;
  int64_t uid = 0, gid = 0, oom = 0;
  // uid/gid -1 (0xffffffff) means "unchanged" to the kernel: never accepted.
  if (!OptIntProp(env, o, "uid", "spawn: opts.uid", 0, 0xfffffffeLL, &has_uid, &uid)) return false;
  if (!OptIntProp(env, o, "gid", "spawn: opts.gid", 0, 0xfffffffeLL, &has_gid, &gid)) return false;
  if (!OptIntProp(env, o, "oomScoreAdj", "spawn: opts.oomScoreAdj", -1000, 1000, &has_oom, &oom)) return false;
  v = o.Get("groups");
  bool has_groups = !v.IsUndefined() && !v.IsNull();
  if (has_groups) {
    if (!v.IsArray()) return TypeFail(env, "spawn: opts.groups", "must be an array of gids");
    Napi::Array ga = v.As<Napi::Array>();
    uint32_t n = ga.Length();
    if (n > 65536) return TypeFail(env, "spawn: opts.groups", "is too long (NGROUPS_MAX is 65536)");
    for (uint32_t i = 0; i < n; i++) {
      int64_t g = 0;
      if (!IntArg(env, ga.Get(i), "spawn: opts.groups[i]", 0, 0xfffffffeLL, &g)) return false;
      j->groups.push_back(static_cast<gid_t>(g));
    }
  }
  v = o.Get("stdio");
  if (!v.IsArray() || v.As<Napi::Array>().Length() != 3)
    return TypeFail(env, "spawn: opts.stdio", "must be [stdin, stdout, stderr] fds (-1 = /dev/null)");
  for (uint32_t i = 0; i < 3; i++) {
    int64_t fd = 0;
    if (!IntArg(env, v.As<Napi::Array>().Get(i), "spawn: opts.stdio[i]", -1, 0x7fffffff, &fd)) return false;
    j->ctx.stdio[i] = static_cast<int>(fd);
  }
  int64_t timeout = 0;
  if (!IntArg(env, o.Get("timeoutMs"), "spawn: opts.timeoutMs", 1, 24LL * 3600 * 1000, &timeout)) return false;
  j->timeout_ms = timeout;
  bool setsid_flag = o.Get("setsid").ToBoolean().Value();
  bool ctty_flag = o.Get("controllingTty").ToBoolean().Value();
  if (env.IsExceptionPending()) return false;
  if (ctty_flag && !setsid_flag) return TypeFail(env, "spawn: opts.controllingTty", "needs opts.setsid");

  // Everything the child reads is prepared here; the vectors are not touched again until it exec'd.
  j->argv_p = CPointers(j->argv_s);
  j->envp_p = CPointers(j->envp_s);
  for (auto& s : j->joins_s) j->joins_p.push_back(s.c_str());
  j->joins_p.reserve(j->joins_p.size() + 1);  // room for the v2 fallback join, no reallocation in the thread
  if ((j->has_oom = has_oom)) j->oom = std::to_string(oom);
  ChildCtx& c = j->ctx;
  c.file = j->file.c_str();
  c.argv = j->argv_p.data();
  c.envp = j->envp_p.data();
  c.cwd = j->has_cwd ? j->cwd.c_str() : nullptr;
  c.oom = has_oom ? j->oom.c_str() : nullptr;
  c.oom_len = j->oom.size();
  c.setsid = setsid_flag;
  c.ctty = ctty_flag;
  c.set_groups = has_groups || has_uid || has_gid;
  c.groups = j->groups.data();
  c.ngroups = j->groups.size();
  c.has_gid = has_gid;
  c.gid = static_cast<gid_t>(gid);
  c.has_uid = has_uid;
  c.uid = static_cast<uid_t>(uid);
  struct rlimit rl;
  c.max_fd = 65536;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 65536)
    c.max_fd = static_cast<int>(rl.rlim_cur);
  return true;
}

// spawn(opts, callback(err, { pid, placement, process })): void
Napi::Value Spawn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* holder = static_cast<std::shared_ptr<Hub>*>(info.Data());
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction())
    return ThrowType(env, "spawn(opts: SpawnOptions, callback: (err, result) => void)");
  std::unique_ptr<Job> j(new Job());
  j->hub = *holder;
  Hub* hub = j->hub.get();
  if (!ParseOptions(env, info[0].As<Napi::Object>(), j.get())) return env.Undefined();
  if (hub->async == nullptr) return ThrowErrno(env, EINVAL, "spawn");

  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  napi_value name;
  napi_create_string_utf8(env, "corral.spawn", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, info[1], 1, &j->callback) != napi_ok ||
      napi_async_init(env, nullptr, name, &j->async) != napi_ok) {
    j->ReleaseNapi(env);
    return ThrowErrno(env, ENOMEM, "spawn");
  }
  j->timer = new uv_timer_t;
  uv_timer_init(loop, j->timer);
  j->timer->data = j.get();

  // On a pool thread: this (loop) thread never creates a thread per spawn (see spawn_pool.cc).
  int r = SubmitSpawnJob(ThreadMain, j.get());
  if (r != 0) {
    CloseTimer(j.get());
    j->ReleaseNapi(env);
    return ThrowErrno(env, r, "pthread_create");
  }
  Job* jp = j.release();  // from here on, the state machine decides who frees it
  hub->pending.insert(jp);
  uv_update_time(loop);  // the bound counts from now, not from the start of this loop iteration
  uv_timer_start(jp->timer, OnTimeout, static_cast<uint64_t>(jp->timeout_ms), 0);
  return env.Undefined();
}

}  // namespace

void InitSpawn(Napi::Env env, Napi::Object exports, void* proc_env) {
  auto* holder = new std::shared_ptr<Hub>(std::make_shared<Hub>());
  Hub* hub = holder->get();
  hub->env = env;
  hub->proc_env = proc_env;
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  hub->async = new uv_async_t;
  uv_async_init(loop, hub->async, OnAsync);
  hub->async->data = hub;
  uv_unref(reinterpret_cast<uv_handle_t*>(hub->async));  // pending spawns keep the loop alive by their timers
  exports.Set("spawn", Napi::Function::New(env, Spawn, "spawn", holder));
  napi_add_env_cleanup_hook(env, CleanupHub, holder);
}

}  // namespace corral
