// pidfd wrappers and watchExit (uv_poll_t on the pidfd in the main loop, then wait4).
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <unordered_set>
#include <vector>

#include "errors.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

namespace corral {

namespace {

// pidfdOpen(pid): number
Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) return ThrowType(env, "pidfdOpen(pid: number)");
  int pid = info[0].As<Napi::Number>().Int32Value();
  if (pid <= 0) return ThrowErrno(env, EINVAL, "pidfd_open");
  long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) return ThrowErrno(env, errno, "pidfd_open");
  return Napi::Number::New(env, static_cast<double>(fd));
}

// pidfdSendSignal(pidfd, signal): void
Napi::Value PidfdSendSignal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber())
    return ThrowType(env, "pidfdSendSignal(pidfd: number, signal: number)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  int sig = info[1].As<Napi::Number>().Int32Value();
  if (syscall(SYS_pidfd_send_signal, fd, sig, nullptr, 0) < 0) return ThrowErrno(env, errno, "pidfd_send_signal");
  return env.Undefined();
}

// closeFd(fd): void
Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) return ThrowType(env, "closeFd(fd: number)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd < 0) return ThrowErrno(env, EBADF, "close");
  // Linux closes the fd even when close() reports EINTR; never retry.
  if (close(fd) < 0 && errno != EINTR) return ThrowErrno(env, errno, "close");
  return env.Undefined();
}


// One watched process. Owned jointly by the uv handle (until its close callback) and the JS
// ExitWatch object (until it is finalized); freed when both are gone.
struct Watch;

struct AddonData {
  Napi::FunctionReference exit_watch_ctor;
  std::unordered_set<Watch*> watches;  // open watches, closed by the env cleanup hook
};

struct Watch {
  uv_poll_t poll;
  AddonData* data = nullptr;
  napi_env env = nullptr;
  int pidfd = -1;
  pid_t pid = 0;
  bool reap = true;
  bool closing = false;   // uv_close called: no callback from now on
  bool env_gone = false;  // env torn down: leave its references alone
  int owners = 2;
  Napi::FunctionReference callback;
  Napi::AsyncContext* async = nullptr;

  void Release() {
    if (--owners == 0) delete this;
  }
};

void OnClosed(uv_handle_t* h) {
  Watch* w = static_cast<Watch*>(h->data);
  if (w->pidfd >= 0) close(w->pidfd);
  w->pidfd = -1;
  if (!w->env_gone) {
    w->callback.Reset();
    delete w->async;
  }
  w->async = nullptr;
  w->Release();
}

void CloseWatch(Watch* w) {
  if (w->closing) return;
  w->closing = true;
  if (w->data != nullptr) w->data->watches.erase(w);
  uv_poll_stop(&w->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), OnClosed);
}

void OnReadable(uv_poll_t* handle, int status, int /*events*/) {
  Watch* w = static_cast<Watch*>(handle->data);
  if (w->closing) return;
  int st = 0;
  struct rusage ru = {};
  bool reaped = false;
  if (w->reap) {
    pid_t r;
    do {
      r = wait4(w->pid, &st, WNOHANG | __WALL, &ru);
    } while (r < 0 && errno == EINTR);
    if (r == 0 && status == 0) return;  // readable but not yet waitable: keep watching
    reaped = r == w->pid;
  }
  Napi::Env env(w->env);
  Napi::HandleScope scope(env);
  Napi::Object info = Napi::Object::New(env);
  if (reaped && WIFEXITED(st)) {
    info.Set("exitCode", Napi::Number::New(env, WEXITSTATUS(st)));
    info.Set("signal", env.Null());
  } else if (reaped && WIFSIGNALED(st)) {
    info.Set("exitCode", env.Null());
    info.Set("signal", Napi::Number::New(env, WTERMSIG(st)));
  } else {
    info.Set("exitCode", env.Null());
    info.Set("signal", env.Null());
  }
  info.Set("reaped", Napi::Boolean::New(env, reaped));
  if (reaped) {
    Napi::Object r = Napi::Object::New(env);
    r.Set("userUs", Napi::Number::New(env, ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec));
    r.Set("systemUs", Napi::Number::New(env, ru.ru_stime.tv_sec * 1e6 + ru.ru_stime.tv_usec));
    r.Set("maxRssKb", Napi::Number::New(env, static_cast<double>(ru.ru_maxrss)));
    info.Set("rusage", r);
  }
  // Keep the function alive past CloseWatch (whose close callback resets the reference).
  Napi::Function fn = w->callback.Value();
  Napi::AsyncContext* async = w->async;
  w->async = nullptr;
  CloseWatch(w);
  fn.MakeCallback(env.Global(), {info}, *async);
  delete async;
  if (env.IsExceptionPending()) {
    Napi::Error e = env.GetAndClearPendingException();
    napi_fatal_exception(env, e.Value());
  }
}

class ExitWatch : public Napi::ObjectWrap<ExitWatch> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ExitWatch",
                       {InstanceMethod<&ExitWatch::Close>("close"), InstanceMethod<&ExitWatch::Ref>("ref"),
                        InstanceMethod<&ExitWatch::Unref>("unref")});
  }
  explicit ExitWatch(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ExitWatch>(info) {
    if (info.Length() < 1 || !info[0].IsExternal()) {
      ThrowType(info.Env(), "ExitWatch is created by watchExit()");
      return;
    }
    w_ = info[0].As<Napi::External<Watch>>().Data();
  }
  ~ExitWatch() override {
    if (w_ != nullptr) w_->Release();
  }

 private:
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (w_ != nullptr) CloseWatch(w_);
    return info.Env().Undefined();
  }
  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (w_ != nullptr && !w_->closing) uv_ref(reinterpret_cast<uv_handle_t*>(&w_->poll));
    return info.Env().Undefined();
  }
  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (w_ != nullptr && !w_->closing) uv_unref(reinterpret_cast<uv_handle_t*>(&w_->poll));
    return info.Env().Undefined();
  }
  Watch* w_ = nullptr;
};

// watchExit(pidfd, pid, reap, callback): ExitWatch. Takes ownership of pidfd (closed on failure too).
Napi::Value WatchExit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsBoolean() || !info[3].IsFunction())
    return ThrowType(env, "watchExit(pidfd: number, pid: number, reap: boolean, callback)");
  int pidfd = info[0].As<Napi::Number>().Int32Value();
  int pid = info[1].As<Napi::Number>().Int32Value();
  if (pidfd < 0) return ThrowErrno(env, EBADF, "watchExit");
  if (pid <= 0) {
    close(pidfd);
    return ThrowErrno(env, EINVAL, "watchExit");
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    close(pidfd);
    return ThrowErrno(env, EINVAL, "uv_poll_init");
  }
  Watch* w = new Watch();
  w->env = env;
  w->pidfd = pidfd;
  w->pid = pid;
  w->reap = info[2].As<Napi::Boolean>().Value();
  int r = uv_poll_init(loop, &w->poll, pidfd);
  if (r < 0) {
    close(pidfd);
    delete w;
    return ThrowErrno(env, -r, "uv_poll_init");
  }
  w->poll.data = w;
  w->callback = Napi::Persistent(info[3].As<Napi::Function>());
  w->async = new Napi::AsyncContext(env, "corral.watchExit");
  AddonData* data = env.GetInstanceData<AddonData>();
  w->data = data;
  data->watches.insert(w);
  r = uv_poll_start(&w->poll, UV_READABLE, OnReadable);
  if (r < 0) {
    w->owners = 1;  // no JS object will exist
    CloseWatch(w);  // closes the pidfd in the close callback
    return ThrowErrno(env, -r, "uv_poll_start");
  }
  Napi::Object obj = data->exit_watch_ctor.New({Napi::External<Watch>::New(env, w)});
  if (env.IsExceptionPending()) {
    w->owners = 1;
    CloseWatch(w);
    return env.Undefined();
  }
  return obj;
}

}  // namespace

// The env is going away (worker thread exit, process teardown): stop every watch so that no
// callback runs into a dead env; the pidfds are closed by the handles' close callbacks.
void CleanupWatches(void* arg) {
  AddonData* data = static_cast<AddonData*>(arg);
  std::vector<Watch*> open(data->watches.begin(), data->watches.end());
  for (Watch* w : open) {
    w->env_gone = true;
    CloseWatch(w);
  }
}

void InitPidfd(Napi::Env env, Napi::Object exports) {
  exports.Set("pidfdOpen", Napi::Function::New(env, PidfdOpen, "pidfdOpen"));
  exports.Set("pidfdSendSignal", Napi::Function::New(env, PidfdSendSignal, "pidfdSendSignal"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("watchExit", Napi::Function::New(env, WatchExit, "watchExit"));
  AddonData* data = new AddonData();
  data->exit_watch_ctor = Napi::Persistent(ExitWatch::Define(env));
  env.SetInstanceData<AddonData>(data);
  napi_add_env_cleanup_hook(env, CleanupWatches, data);
}

}  // namespace corral
