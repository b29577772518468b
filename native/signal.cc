// Bulk signalling (killPids, signalGroup) and the bounded waits that run on the libuv threadpool:
// groupKill (cgroup.kill | freezer-v1 | freeze-v2 | signal-loop), waitEmpty, waitFrozen.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "cgroupfs.h"
#include "errors.h"
#include "fd.h"

namespace corral {

namespace {

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// Waits between two checks of a condition, bounded by a deadline. When the group has a cgroup2
// cgroup.events file, the wait is also woken by the kernel's notification on it (populated/frozen
// changed: POLLPRI), so the common case needs no sleep to be noticed. Otherwise short sleeps that
// back off: 20us, x1.5, up to 500us. For the first 3ms the checks spin, as a shell's read loop
// would: most groups empty within that time of the kill, and a sleeping or yielding thread gets
// the CPU back late when it is busy with the dying tasks.
class Waiter {
 public:
  Waiter(const std::string& events_path, int64_t deadline_ns) : deadline_(deadline_ns), spin_until_(NowNs() + kSpinNs) {
    if (!events_path.empty()) events_.reset(::open(events_path.c_str(), O_RDONLY | O_CLOEXEC));
  }
  // Waits once; returns false (without waiting) when the deadline has passed.
  bool Wait() {
    int64_t now = NowNs();
    if (now >= deadline_) return false;
    if (now < spin_until_) return true;  // busy re-check (no sched_yield: under load it gives away whole slices)
    int64_t d = step_;
    if (d > deadline_ - now) d = deadline_ - now;
    struct timespec ts = {static_cast<time_t>(d / 1000000000LL), static_cast<long>(d % 1000000000LL)};
    if (events_.valid()) {
      struct pollfd pfd = {events_.get(), POLLPRI, 0};
      int r = ppoll(&pfd, 1, &ts, nullptr);
      if (r > 0) {
        char buf[256];
        // Reading re-arms kernfs's notification for this open file.
        while (pread(events_.get(), buf, sizeof buf, 0) < 0 && errno == EINTR) {
        }
      }
    } else {
      while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
      }
    }
    step_ = step_ * 3 / 2 > kMax ? kMax : step_ * 3 / 2;
    return true;
  }

 private:
  static constexpr int64_t kSpinNs = 3000000;  // 3ms
  static constexpr int64_t kMax = 500000;      // 500us
  UniqueFd events_;
  int64_t deadline_;
  int64_t spin_until_;
  int64_t step_ = 20000;  // 20us
};

std::string DirOf(const std::string& file) {
  size_t slash = file.rfind('/');
  return slash == std::string::npos ? std::string(".") : file.substr(0, slash);
}

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\n' || s[b] == '\t')) b++;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\n' || s[e - 1] == '\t')) e--;
  return s.substr(b, e - b);
}

// Does a cgroup.events text have the line "frozen <want>"?
bool EventsFrozen(const std::string& text, bool want) {
  const char* needle = want ? "frozen 1" : "frozen 0";
  size_t pos = 0;
  while ((pos = text.find(needle, pos)) != std::string::npos) {
    bool line_start = pos == 0 || text[pos - 1] == '\n';
    size_t end = pos + 8;
    bool line_end = end == text.size() || text[end] == '\n';
    if (line_start && line_end) return true;
    pos = end;
  }
  return false;
}

void SetTimeout(SysError* e, const char* syscall, const std::string& path, int64_t timeout_ms) {
  e->set(ETIMEDOUT, syscall, path);
  e->detail = "timed out after " + std::to_string(timeout_ms) + " ms";
}

// SIGKILLs (or `sig`s) every pid listed in procs once. Adds successful kills to *signalled.
int SignalProcs(const std::string& procs, int sig, std::vector<int32_t>* pids, uint64_t* signalled, SysError* e) {
  const char* sc = "";
  int err = ReadPidList(procs.c_str(), pids, &sc);
  if (err != 0) {
    e->set(err, sc, procs);
    return err;
  }
  for (int32_t pid : *pids) {
    if (pid <= 0) continue;
    if (kill(pid, sig) == 0) (*signalled)++;
  }
  return 0;
}

// Polls procs until empty or deadline. With rekill, re-sends SIGKILL to what is left every ~10ms of
// waiting (catches a process that raced in between the kill and the thaw).
bool WaitEmptyUntil(const std::string& procs, int64_t deadline, int64_t timeout_ms, bool rekill, uint64_t* signalled,
                    SysError* e) {
  Waiter waiter(DirOf(procs) + "/cgroup.events", deadline);
  std::vector<int32_t> pids;
  int64_t last_kill = NowNs();
  for (;;) {
    bool empty = false;
    const char* sc = "";
    int err = ProcsEmpty(procs.c_str(), &empty, &sc);
    if (err != 0) {
      e->set(err, sc, procs);
      return false;
    }
    if (empty) return true;
    if (rekill && NowNs() - last_kill > 10000000LL) {
      if (SignalProcs(procs, SIGKILL, &pids, signalled, e) != 0) return false;
      last_kill = NowNs();
    }
    if (!waiter.Wait()) {
      SetTimeout(e, "wait-empty", procs, timeout_ms);
      return false;
    }
  }
}

// Waits until freezer.state (v1) reads FROZEN/THAWED or cgroup.events (v2) has frozen 1/0.
// With rewrite (v1 freeze), re-writes FROZEN while it reads FREEZING (each ms of waiting), and
// thaws and re-freezes every 200ms still FREEZING, as runc does, so a group that keeps forking
// or has a task stuck in a vfork still freezes.
bool WaitFrozenUntil(const std::string& file, int version, bool frozen, bool rewrite, int64_t deadline,
                     int64_t timeout_ms, SysError* e) {
  Waiter waiter(version == 2 ? file : std::string(), deadline);
  std::string text;
  const char* want = frozen ? "FROZEN" : "THAWED";
  int64_t last_write = NowNs(), last_thaw = last_write;
  for (;;) {
    const char* sc = "";
    int err = ReadWhole(file.c_str(), &text, &sc);
    if (err != 0) {
      e->set(err, sc, file);
      return false;
    }
    bool done = version == 1 ? Trim(text) == want : EventsFrozen(text, frozen);
    if (done) return true;
    if (!waiter.Wait()) {
      SetTimeout(e, "freeze", file, timeout_ms);
      return false;
    }
    int64_t now = NowNs();
    if (rewrite && now - last_write >= 1000000LL) {
      if (now - last_thaw >= 200000000LL) {
        WriteOnce(file.c_str(), "THAWED", 6, &sc);
        last_thaw = now;
      }
      err = WriteOnce(file.c_str(), "FROZEN", 6, &sc);
      if (err != 0) {
        e->set(err, sc, file);
        return false;
      }
      last_write = now;
    }
  }
}

enum class Method { kCgroupKill, kFreezerV1, kFreezeV2, kSignalLoop };

class GroupKillWorker : public Napi::AsyncWorker {
 public:
  GroupKillWorker(Napi::Function cb, Method m, std::string procs, std::string dir, int64_t timeout_ms)
      : Napi::AsyncWorker(cb, "corral.groupKill"),
        method_(m),
        procs_(std::move(procs)),
        dir_(std::move(dir)),
        timeout_ms_(timeout_ms),
        start_(NowNs()) {
    bool v1 = method_ == Method::kFreezerV1;
    ctl_ = dir_ + (method_ == Method::kCgroupKill ? "/cgroup.kill" : v1 ? "/freezer.state" : "/cgroup.freeze");
  }

  // Runs on the main thread before Queue(): the one write that starts the kill (cgroup.kill, or
  // the freeze request; for signal-loop the first round of SIGKILLs). It does not wait, and it
  // means the kernel is already at work while the threadpool thread is being woken (which takes
  // milliseconds on a CPU busy with the group's own tasks). Failures are reported to the callback.
  void Start() {
    const char* sc = "";
    int err = 0;
    switch (method_) {
      case Method::kCgroupKill:
        err = WriteOnce(ctl_.c_str(), "1", 1, &sc);
        break;
      case Method::kFreezerV1:
        err = WriteOnce(ctl_.c_str(), "FROZEN", 6, &sc);
        break;
      case Method::kFreezeV2:
        err = WriteOnce(ctl_.c_str(), "1", 1, &sc);
        break;
      case Method::kSignalLoop: {
        std::vector<int32_t> pids;
        SignalProcs(procs_, SIGKILL, &pids, &signalled_, &err_);
        started_empty_ = !err_ && pids.empty();
        return;
      }
    }
    if (err != 0) err_.set(err, sc, ctl_);
  }

  void Execute() override {
    int64_t deadline = start_ + timeout_ms_ * 1000000LL;
    switch (method_) {
      case Method::kCgroupKill: {
        if (err_) break;
        WaitEmptyUntil(procs_, deadline, timeout_ms_, false, &signalled_, &err_);
        break;
      }
      case Method::kFreezerV1:
      case Method::kFreezeV2: {
        bool v1 = method_ == Method::kFreezerV1;
        const char* thaw = v1 ? "THAWED" : "0";
        size_t thaw_len = v1 ? 6 : 1;
        const char* sc = "";
        if (err_) {
          // Nothing was frozen if the write failed; thaw anyway in case it half-applied.
          WriteOnce(ctl_.c_str(), thaw, thaw_len, &sc);
          break;
        }
        std::string wait_file = v1 ? ctl_ : dir_ + "/cgroup.events";
        bool ok = WaitFrozenUntil(wait_file, v1 ? 1 : 2, true, v1, deadline, timeout_ms_, &err_);
        std::vector<int32_t> pids;
        if (ok) ok = SignalProcs(procs_, SIGKILL, &pids, &signalled_, &err_) == 0;
        // Always thaw on the way out: the SIGKILLs are delivered when the tasks run again.
        int terr = WriteOnce(ctl_.c_str(), thaw, thaw_len, &sc);
        if (ok && terr != 0) {
          err_.set(terr, sc, ctl_);
          ok = false;
        }
        if (ok) WaitEmptyUntil(procs_, deadline, timeout_ms_, true, &signalled_, &err_);
        break;
      }
      case Method::kSignalLoop: {
        if (err_ || started_empty_) break;
        Waiter waiter(DirOf(procs_) + "/cgroup.events", deadline);
        std::vector<int32_t> pids;
        for (;;) {
          if (!waiter.Wait()) {
            SetTimeout(&err_, "wait-empty", procs_, timeout_ms_);
            break;
          }
          if (SignalProcs(procs_, SIGKILL, &pids, &signalled_, &err_) != 0) break;
          if (pids.empty()) break;
        }
        break;
      }
    }
    elapsed_ = NowNs() - start_;
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (err_) {
      Callback().Call({MakeError(env, err_).Value()});
      return;
    }
    Napi::Object r = Napi::Object::New(env);
    r.Set("signalled", Napi::Number::New(env, static_cast<double>(signalled_)));
    r.Set("elapsedNs", Napi::Number::New(env, static_cast<double>(elapsed_)));
    Callback().Call({env.Null(), r});
  }

 private:
  Method method_;
  std::string procs_, dir_, ctl_;
  int64_t timeout_ms_;
  int64_t start_;
  int64_t elapsed_ = 0;
  uint64_t signalled_ = 0;
  bool started_empty_ = false;
  SysError err_;
};

class WaitWorker : public Napi::AsyncWorker {
 public:
  // Empty wait: file = procs. Frozen wait: file = freezer.state or cgroup.events.
  WaitWorker(Napi::Function cb, bool empty_wait, std::string file, int version, bool frozen, int64_t timeout_ms)
      : Napi::AsyncWorker(cb, empty_wait ? "corral.waitEmpty" : "corral.waitFrozen"),
        empty_wait_(empty_wait),
        file_(std::move(file)),
        version_(version),
        frozen_(frozen),
        timeout_ms_(timeout_ms),
        start_(NowNs()) {}

  void Execute() override {
    int64_t deadline = start_ + timeout_ms_ * 1000000LL;
    uint64_t unused = 0;
    if (empty_wait_)
      WaitEmptyUntil(file_, deadline, timeout_ms_, false, &unused, &err_);
    else
      WaitFrozenUntil(file_, version_, frozen_, false, deadline, timeout_ms_, &err_);
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (err_)
      Callback().Call({MakeError(env, err_).Value()});
    else
      Callback().Call({env.Null()});
  }

 private:
  bool empty_wait_;
  std::string file_;
  int version_;
  bool frozen_;
  int64_t timeout_ms_;
  int64_t start_;
  SysError err_;
};

int64_t TimeoutArg(const Napi::Value& v) {
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0)) return 0;
  if (d > 1e12) d = 1e12;
  return static_cast<int64_t>(d);
}

// killPids(pids: Int32Array, signal: number): { signalled, gone }
Napi::Value KillPids(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsNumber())
    return ThrowType(env, "killPids(pids: Int32Array, signal: number)");
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_int32_array) return ThrowType(env, "killPids: pids must be an Int32Array");
  Napi::Int32Array pids = ta.As<Napi::Int32Array>();
  int sig = info[1].As<Napi::Number>().Int32Value();
  double signalled = 0, gone = 0;
  int first_err = 0;
  size_t n = pids.ElementLength();
  for (size_t i = 0; i < n; i++) {
    int32_t pid = pids[i];
    if (pid <= 0) {  // never signal a process group by accident
      if (first_err == 0) first_err = EINVAL;
      continue;
    }
    if (kill(pid, sig) == 0) {
      signalled++;
    } else if (errno == ESRCH) {
      gone++;
    } else if (first_err == 0) {
      first_err = errno;
    }
  }
  // Every pid was tried; the first real failure (EPERM, EINVAL) is thrown afterwards.
  if (first_err != 0) return ThrowErrno(env, first_err, "kill");
  Napi::Object r = Napi::Object::New(env);
  r.Set("signalled", Napi::Number::New(env, signalled));
  r.Set("gone", Napi::Number::New(env, gone));
  return r;
}

// signalGroup(procsPath: string, signal: number): number
Napi::Value SignalGroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsNumber())
    return ThrowType(env, "signalGroup(procsPath: string, signal: number)");
  std::string procs = info[0].As<Napi::String>().Utf8Value();
  int sig = info[1].As<Napi::Number>().Int32Value();
  std::vector<int32_t> pids;
  const char* sc = "";
  int err = ReadPidList(procs.c_str(), &pids, &sc);
  if (err != 0) return ThrowErrno(env, err, sc, procs.c_str());
  double signalled = 0;
  for (int32_t pid : pids) {
    if (pid <= 0) continue;
    if (kill(pid, sig) == 0) {
      signalled++;
    } else if (errno != ESRCH) {
      return ThrowErrno(env, errno, "kill", procs.c_str());
    }
  }
  return Napi::Number::New(env, signalled);
}

// groupKill(opts, callback)
Napi::Value GroupKill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction())
    return ThrowType(env, "groupKill(opts: GroupKillOptions, callback)");
  Napi::Object o = info[0].As<Napi::Object>();
  Napi::Value mv = o.Get("method"), pv = o.Get("procsPath"), dv = o.Get("controlDir"), tv = o.Get("timeoutMs");
  if (!mv.IsString() || !pv.IsString() || !dv.IsString() || !tv.IsNumber())
    return ThrowType(env, "groupKill: opts needs method, procsPath, controlDir (strings) and timeoutMs (number)");
  std::string m = mv.As<Napi::String>().Utf8Value();
  Method method;
  if (m == "cgroup.kill")
    method = Method::kCgroupKill;
  else if (m == "freezer-v1")
    method = Method::kFreezerV1;
  else if (m == "freeze-v2")
    method = Method::kFreezeV2;
  else if (m == "signal-loop")
    method = Method::kSignalLoop;
  else
    return ThrowType(env, "groupKill: method must be 'cgroup.kill', 'freezer-v1', 'freeze-v2' or 'signal-loop'");
  auto* w = new GroupKillWorker(info[1].As<Napi::Function>(), method, pv.As<Napi::String>().Utf8Value(),
                                dv.As<Napi::String>().Utf8Value(), TimeoutArg(tv));
  w->Start();
  w->Queue();
  return env.Undefined();
}

// waitEmpty(procsPath, timeoutMs, callback)
Napi::Value WaitEmpty(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsFunction())
    return ThrowType(env, "waitEmpty(procsPath: string, timeoutMs: number, callback)");
  auto* w = new WaitWorker(info[2].As<Napi::Function>(), true, info[0].As<Napi::String>().Utf8Value(), 0, false,
                           TimeoutArg(info[1]));
  w->Queue();
  return env.Undefined();
}

// waitFrozen(controlDir, version, frozen, timeoutMs, callback)
Napi::Value WaitFrozen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsBoolean() ||
      !info[3].IsNumber() || !info[4].IsFunction())
    return ThrowType(env, "waitFrozen(controlDir: string, version: 1 | 2, frozen: boolean, timeoutMs: number, callback)");
  int version = info[1].As<Napi::Number>().Int32Value();
  if (version != 1 && version != 2) return ThrowType(env, "waitFrozen: version must be 1 or 2");
  std::string dir = info[0].As<Napi::String>().Utf8Value();
  std::string file = dir + (version == 1 ? "/freezer.state" : "/cgroup.events");
  auto* w = new WaitWorker(info[4].As<Napi::Function>(), false, file, version, info[2].As<Napi::Boolean>().Value(),
                           TimeoutArg(info[3]));
  w->Queue();
  return env.Undefined();
}

}  // namespace

void InitSignal(Napi::Env env, Napi::Object exports) {
  exports.Set("killPids", Napi::Function::New(env, KillPids, "killPids"));
  exports.Set("signalGroup", Napi::Function::New(env, SignalGroup, "signalGroup"));
  exports.Set("groupKill", Napi::Function::New(env, GroupKill, "groupKill"));
  exports.Set("waitEmpty", Napi::Function::New(env, WaitEmpty, "waitEmpty"));
  exports.Set("waitFrozen", Napi::Function::New(env, WaitFrozen, "waitFrozen"));
}

}  // namespace corral
