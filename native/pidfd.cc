// ProcessHandle: one process behind one pidfd, owned by this object for its whole life (one owner
// per fd: TypeScript never sees the number). It signals through the pidfd (never a reused pid),
// watches for the exit with a uv_poll_t on the main loop (pollwatch.h: lifetime, teardown), then
// reaps with wait4.
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "args.h"
#include "errors.h"
#include "pidfd.h"
#include "pollwatch.h"
#include "process.h"

namespace corral {

namespace {

struct Proc : PollWatch {
  pid_t pid = 0;
  bool reap = true;
  bool child = false;  // spawned by us: ours to reap
  bool watching = false;

  // Env teardown: nobody will watch our child any more; it must not stay a zombie.
  void TearDown() override {
    if (child && (reap || !watching)) ReapLater(pid);
    Close();
  }
};

napi_value Num(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

void OnReadable(uv_poll_t* handle, int status, int /*events*/) {
  Proc* p = static_cast<Proc*>(handle->data);
  if (p->closing) return;
  int st = 0;
  struct rusage ru = {};
  bool reaped = false;
  if (p->reap) {
    pid_t r;
    do {
      r = wait4(p->pid, &st, WNOHANG | __WALL, &ru);
    } while (r < 0 && errno == EINTR);
    if (r == 0 && status == 0) return;  // readable but not yet waitable: keep watching
    reaped = r == p->pid;
  }
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) {
    p->Close();
    return;
  }
  // Built with raw napi calls and checked statuses: if the env is terminating (a worker being
  // stopped) every call fails and we only close, instead of throwing into a dead env.
  napi_value info, nul;
  napi_create_object(env, &info);
  napi_get_null(env, &nul);
  napi_value code = nul, sig = nul;
  if (reaped && WIFEXITED(st)) code = Num(env, WEXITSTATUS(st));
  if (reaped && WIFSIGNALED(st)) sig = Num(env, WTERMSIG(st));
  napi_set_named_property(env, info, "exitCode", code);
  napi_set_named_property(env, info, "signal", sig);
  napi_value rv;
  napi_get_boolean(env, reaped, &rv);
  napi_set_named_property(env, info, "reaped", rv);
  if (reaped) {
    napi_value r;
    napi_create_object(env, &r);
    napi_set_named_property(env, r, "userUs", Num(env, ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec));
    napi_set_named_property(env, r, "systemUs", Num(env, ru.ru_stime.tv_sec * 1e6 + ru.ru_stime.tv_usec));
    napi_set_named_property(env, r, "maxRssKb", Num(env, static_cast<double>(ru.ru_maxrss)));
    napi_set_named_property(env, info, "rusage", r);
  }
  // The handle is closed before the callback runs (it sees `closed`, and signal() gives ESRCH).
  JsCallback cb = p->cb;
  p->cb = JsCallback();
  p->Close();
  cb.Call(env, 1, &info, true);
  napi_close_handle_scope(env, scope);
}

class ProcessHandle : public WatchWrap<ProcessHandle, Proc> {
 public:
  static constexpr const char* kCreatedBy = "ProcessHandle is created by spawn() or openProcess()";
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ProcessHandle",
                       Methods({InstanceMethod<&ProcessHandle::Watch>("watch"),
                                InstanceMethod<&ProcessHandle::Signal>("signal"),
                                InstanceAccessor<&ProcessHandle::Pid>("pid"),
                                InstanceAccessor<&ProcessHandle::Closed>("closed")}));
  }
  using WatchWrap::WatchWrap;

 private:
  // watch(reap, callback): once; the callback gets ExitInfo once, then the handle is closed.
  Napi::Value Watch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsBoolean() || !info[1].IsFunction())
      return ThrowType(env, "watch(reap: boolean, callback: (info) => void)");
    if (!open()) return ThrowErrno(env, EBADF, "watch");
    if (w_->watching) return ThrowType(env, "watch: this process is already watched");
    w_->reap = info[0].As<Napi::Boolean>().Value();
    if (!w_->cb.Hold(env, info[1], "corral.processExit")) return ThrowErrno(env, ENOMEM, "watch");
    int r = uv_poll_start(&w_->poll, UV_READABLE, OnReadable);
    if (r < 0) {
      w_->cb.Release(env);
      return ThrowErrno(env, -r, "uv_poll_start");
    }
    w_->watching = true;
    return env.Undefined();
  }
  // signal(sig): pidfd_send_signal. ESRCH once the process is gone (or the handle closed after its exit).
  Napi::Value Signal(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int64_t sig = 0;
    if (!IntArg(env, info[0], "signal", 0, 64, &sig)) return env.Undefined();
    if (!open() || w_->fd < 0) return ThrowErrno(env, ESRCH, "pidfd_send_signal");
    if (PidfdSignal(w_->fd, static_cast<int>(sig)) < 0) return ThrowErrno(env, errno, "pidfd_send_signal");
    return env.Undefined();
  }
  Napi::Value Pid(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), w_ != nullptr ? static_cast<double>(w_->pid) : 0);
  }
  Napi::Value Closed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !open()); }
};

WatchSet* SetOf(const Napi::CallbackInfo& info) { return static_cast<WatchSet*>(info.Data()); }

// openProcess(pid): ProcessHandle (pidfd_open).
Napi::Value OpenProcess(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t pid = 0;
  if (!IntArg(env, info[0], "pid", 1, 0x3fffffff, &pid)) return env.Undefined();
  int fd = PidfdOpen(static_cast<pid_t>(pid));
  if (fd < 0) return ThrowErrno(env, errno, "pidfd_open");
  return WrapProcess(env, SetOf(info), fd, static_cast<pid_t>(pid), false);
}

void* ReapThread(void* arg) {
  pid_t pid = static_cast<pid_t>(reinterpret_cast<intptr_t>(arg));
  int status;
  while (waitpid(pid, &status, __WALL) < 0 && errno == EINTR) {
  }
  return nullptr;
}

}  // namespace

void ReapLater(pid_t pid) {
  int status;
  pid_t r;
  do {
    r = waitpid(pid, &status, WNOHANG | __WALL);
  } while (r < 0 && errno == EINTR);
  if (r != 0) return;  // reaped now, or not ours to reap
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t tid;
  pthread_create(&tid, &attr, ReapThread, reinterpret_cast<void*>(static_cast<intptr_t>(pid)));
  pthread_attr_destroy(&attr);
}

// Takes ownership of pidfd, also on failure (closed then).
Napi::Value WrapProcess(Napi::Env env, void* proc_env, int pidfd, pid_t pid, bool child) {
  Proc* p = new Proc();
  p->pid = pid;
  p->child = child;
  return static_cast<WatchSet*>(proc_env)->Adopt(env, p, pidfd);
}

void* InitPidfd(Napi::Env env, Napi::Object exports) {
  WatchSet* set = WatchSet::Create(env, ProcessHandle::Define(env));
  exports.Set("openProcess", Napi::Function::New(env, OpenProcess, "openProcess", set));
  return set;
}

}  // namespace corral
