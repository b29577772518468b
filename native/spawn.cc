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
// opts.record: once the child has exec'd, this same thread appends the caller's record line (its
// write-ahead `running` state) with the child's pid and start time filled in. Handing that append to
// the libuv pool after the result came back cost a thread wake-up and a loop turn, each waiting for a
// CPU while the new child runs (~1 ms of a ~6 ms start→wait→destroy on 2 cores); this thread is
// already running. The line's placeholders are bytes a JSON text never holds raw: \x01P (pid) and
// \x01T (start time, field 22 of /proc/<pid>/stat). A failed append does not fail the spawn: the
// result carries it (recordError) and the caller writes the record its own way.
//
// Results come back through one uv_async_t per env. Job states change under the hub's mutex only:
// running -> done (thread) | abandoned (timer or env teardown). Whoever makes the transition owns
// what follows, so the pidfd has exactly one owner at every moment.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "cgroupfs.h"
#include "child.h"
#include "errors.h"
#include "fd.h"
#include "jscall.h"
#include "pidfd.h"
#include "process.h"
#include "record_file.h"
#include "spawn_pool.h"
#include "spawn_request.h"

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
  SpawnRequest req;  // the child reads it through req.ctx until execve
  // Results.
  State state = State::kRunning;  // guarded by hub->mu
  volatile int pidfd = -1;        // written by the kernel during clone; read by the timer under mu
  long pid = -1;
  long long start_time = -1;  // field 22 of /proc/<pid>/stat, read once the child exec'd
  const char* placement = "none";
  SysError err;
  SysError record_err;  // opts.record's append, when it failed
  // Loop side.
  uv_timer_t* timer = nullptr;
  JsCallback cb;
  // The thread's and the loop's claims; each side drops its own once it will not touch the job again.
  std::atomic<int> refs{2};

  void Unref() {
    if (--refs == 0) delete this;
  }
};

// Kills (if it exec'd) and reaps the child of an abandoned or failed job, and closes its pidfd.
// Runs on the job's thread, which may block here until a frozen group thaws.
// wait=false (env teardown, on the loop): SIGKILL, then reaped in the background (ReapLater).
void DisposeChild(Job* j, bool kill_it, bool wait = true) {
  if (j->pid > 0) {
    if (kill_it && j->pidfd >= 0) PidfdSignal(j->pidfd, SIGKILL);
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

// Field 22 (starttime, clock ticks after boot) of /proc/<pid>/stat, or -1. The comm (field 2) may
// hold spaces and parentheses, so fields are counted from the last ')'.
long long ReadStartTime(long pid) {
  std::string text;
  const char* sc = "";
  if (ReadWhole(("/proc/" + std::to_string(pid) + "/stat").c_str(), &text, &sc) != 0) return -1;
  size_t p = text.rfind(')');
  if (p == std::string::npos) return -1;
  p += 1;
  for (int field = 3; field <= 22; field++) {  // each field is preceded by one space
    if (p >= text.size() || text[p] != ' ') return -1;
    p += 1;
    if (field == 22) break;
    p = text.find(' ', p);
    if (p == std::string::npos) return -1;
  }
  char* end = nullptr;
  long long v = strtoll(text.c_str() + p, &end, 10);
  return end != text.c_str() + p ? v : -1;
}

// The record line with its placeholders filled in (see the header).
std::string FillRecord(const std::string& text, long pid, long long start_time) {
  std::string out;
  out.reserve(text.size() + 32);
  for (size_t i = 0; i < text.size(); i++) {
    if (text[i] == '\x01' && i + 1 < text.size() && (text[i + 1] == 'P' || text[i + 1] == 'T')) {
      out += text[i + 1] == 'P' ? std::to_string(pid) : std::to_string(start_time);
      i++;
    } else {
      out += text[i];
    }
  }
  return out;
}

// After a successful spawn, on the spawn thread: the start time, and opts.record's append.
void AfterExec(Job* j) {
  j->start_time = ReadStartTime(j->pid);
  if (!j->req.has_record) return;
  if (j->start_time < 0) {
    j->record_err.set(ESRCH, "read", "/proc/" + std::to_string(j->pid) + "/stat");
    return;
  }
  j->record_err = AppendRecord(j->req.record_file, FillRecord(j->req.record_text, j->pid, j->start_time));
}

void* ThreadMain(void* arg) {
  Job* j = static_cast<Job*>(arg);
  std::string frozen;
  UniqueFd cgfd;
  bool cloned = false;
  if (j->req.FrozenGroup(&frozen)) {
    j->err.set(EBUSY, "cgroup-frozen", frozen);
    j->err.detail = "cgroup is frozen";
  } else {
    SpawnRequest& r = j->req;
    if (r.has_cg) cgfd.reset(open(r.cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (r.has_cg && !cgfd.valid()) {
      j->err.set(errno, "open", r.cgroup_dir);
    } else {
      cloned = CloneChild(&r.ctx, cgfd.get(), r.cgroup_dir, &r.joins_p, &j->pidfd, &j->pid, &j->placement, &j->err);
    }
  }
  cgfd.reset();
  // The child has exec'd or exited (vfork: we resume only then), so its error word is final.
  if (cloned && j->req.ctx.err == 0) AfterExec(j);
  std::shared_ptr<Hub> hub = j->hub;
  {
    // One critical section: while the job is running the timer may signal the published pidfd, so
    // no fd is closed before the state changes; and env teardown marks running jobs abandoned.
    std::unique_lock<std::mutex> lock(hub->mu);
    if (j->state != State::kAbandoned) {
      const ChildCtx& c = j->req.ctx;
      if (cloned && c.err != 0) {
        // The child failed before execve and has exited (vfork: we resume only after that): the
        // reap does not wait.
        j->err.set(c.err, StepSyscall(c.step), c.err_path != nullptr ? c.err_path : "");
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
    te.set(ETIMEDOUT, "spawn", j->req.Where());
    te.detail = "timed out after " + std::to_string(j->req.timeout_ms) + " ms";
    args[0] = MakeError(e, te).Value();
  } else if (j->err) {
    args[0] = MakeError(e, j->err).Value();
  } else {
    Napi::Object r = Napi::Object::New(e);
    r.Set("pid", Napi::Number::New(e, static_cast<double>(j->pid)));
    r.Set("placement", Napi::String::New(e, j->placement));
    if (j->start_time >= 0) r.Set("startTime", Napi::Number::New(e, static_cast<double>(j->start_time)));
    if (j->record_err) r.Set("recordError", MakeError(e, j->record_err).Value());
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
  j->cb.Call(env, argc, args, true);
}

// One result per turn of the loop: each delivery runs its caller's continuation (a start records
// its task, for one), so many delivered back to back would hold the loop for their sum. With 200
// concurrent starts, four per turn gave a loop delay p99 of 4.6-6.0 ms, one per turn 3.7-4.7 ms.
constexpr size_t kDeliverPerTurn = 1;

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
    if (j->pidfd >= 0) PidfdSignal(j->pidfd, SIGKILL);
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
    j->cb.Release(hub->env);
    j->Unref();
  }
  hub->pending.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(hub->async), [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  hub->async = nullptr;
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
  if (!ParseSpawnOptions(env, info[0].As<Napi::Object>(), &j->req)) return env.Undefined();
  if (hub->async == nullptr) return ThrowErrno(env, EINVAL, "spawn");

  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  if (!j->cb.Hold(env, info[1], "corral.spawn")) return ThrowErrno(env, ENOMEM, "spawn");
  j->timer = new uv_timer_t;
  uv_timer_init(loop, j->timer);
  j->timer->data = j.get();

  // On a pool thread: this (loop) thread never creates a thread per spawn (see spawn_pool.cc).
  int r = SubmitSpawnJob(ThreadMain, j.get());
  if (r != 0) {
    CloseTimer(j.get());
    j->cb.Release(env);
    return ThrowErrno(env, r, "pthread_create");
  }
  Job* jp = j.release();  // from here on, the state machine decides who frees it
  hub->pending.insert(jp);
  uv_update_time(loop);  // the bound counts from now, not from the start of this loop iteration
  uv_timer_start(jp->timer, OnTimeout, static_cast<uint64_t>(jp->req.timeout_ms), 0);
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
