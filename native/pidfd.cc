// ProcessHandle: one process behind one pidfd, owned by this object for its whole life (one owner
// per fd: TypeScript never sees the number). It signals through the pidfd (never a reused pid),
// watches for the exit with a uv_poll_t on the main loop, then reaps with wait4.
//
// Lifetime: a Proc is owned jointly by its uv handle (until the close callback) and its JS wrapper
// (until finalized); freed when both are gone. napi state (callback reference, async context) is
// released on the loop while the env is alive: when the exit is delivered, on close(), or by the env
// cleanup hook (worker thread exit). Nothing napi is touched after the cleanup hook ran.
#include "process.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <unordered_set>
#include <vector>

#include "args.h"
#include "errors.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

namespace corral {

namespace {

struct Proc;

// Per-env registry: the wrapper class and every Proc whose handle is not closed yet.
struct ProcEnv {
  Napi::FunctionReference ctor;
  std::unordered_set<Proc*> open;
  bool gone = false;
};

struct Proc {
  uv_poll_t poll;
  ProcEnv* penv = nullptr;
  napi_env env = nullptr;
  int pidfd = -1;
  pid_t pid = 0;
  bool reap = true;
  bool child = false;  // spawned by us: ours to reap
  bool watching = false;
  bool closing = false;  // uv_close called: no callback from now on, pidfd about to close
  int owners = 2;        // the uv handle and the JS wrapper
  napi_ref callback = nullptr;
  napi_async_context async = nullptr;

  // Called on the loop while the env is alive.
  void ReleaseNapi() {
    if (callback != nullptr) napi_delete_reference(env, callback);
    callback = nullptr;
    if (async != nullptr) napi_async_destroy(env, async);
    async = nullptr;
  }
  void Release() {
    if (--owners == 0) delete this;
  }
};

void OnClosed(uv_handle_t* h) {
  Proc* p = static_cast<Proc*>(h->data);
  if (p->pidfd >= 0) close(p->pidfd);
  p->pidfd = -1;
  p->Release();
}

// Stops the watch and closes the pidfd (in the close callback). Must run while napi state may be
// released: always on the loop, env alive.
void CloseProc(Proc* p) {
  if (p->closing) return;
  p->closing = true;
  p->ReleaseNapi();
  if (p->penv != nullptr) p->penv->open.erase(p);
  uv_poll_stop(&p->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&p->poll), OnClosed);
}

napi_value Num(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

void OnReadable(uv_poll_t* handle, int status, int /*events*/) {
  Proc* p = static_cast<Proc*>(handle->data);
  if (p->closing || (p->penv != nullptr && p->penv->gone)) return;
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
    CloseProc(p);
    return;
  }
  // Built with raw napi calls and checked statuses: if the env is terminating (a worker being
  // stopped) every call fails and we only close, instead of throwing into a dead env.
  napi_value info, nul, fn = nullptr, global, unused;
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
  if (p->callback != nullptr) napi_get_reference_value(env, p->callback, &fn);
  napi_async_context async = p->async;
  p->async = nullptr;  // destroyed below, after the call
  CloseProc(p);        // releases the reference (fn stays alive in this scope) and the pidfd
  napi_get_global(env, &global);
  if (fn != nullptr && async != nullptr) {
    napi_status s = napi_make_callback(env, async, global, fn, 1, &info, &unused);
    if (s == napi_pending_exception) {
      napi_value e;
      if (napi_get_and_clear_last_exception(env, &e) == napi_ok) napi_fatal_exception(env, e);
    }
  }
  if (async != nullptr) napi_async_destroy(env, async);
  napi_close_handle_scope(env, scope);
}

class ProcessHandle : public Napi::ObjectWrap<ProcessHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ProcessHandle",
                       {InstanceMethod<&ProcessHandle::Watch>("watch"),
                        InstanceMethod<&ProcessHandle::Signal>("signal"),
                        InstanceMethod<&ProcessHandle::Close>("close"), InstanceMethod<&ProcessHandle::Ref>("ref"),
                        InstanceMethod<&ProcessHandle::Unref>("unref"),
                        InstanceAccessor<&ProcessHandle::Pid>("pid"),
                        InstanceAccessor<&ProcessHandle::Closed>("closed")});
  }
  explicit ProcessHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProcessHandle>(info) {
    if (info.Length() < 1 || !info[0].IsExternal()) {
      ThrowType(info.Env(), "ProcessHandle is created by spawn() or openProcess()");
      return;
    }
    p_ = info[0].As<Napi::External<Proc>>().Data();
  }
  ~ProcessHandle() override {
    if (p_ != nullptr) p_->Release();
  }

 private:
  // watch(reap, callback): once; the callback gets ExitInfo once, then the handle is closed.
  Napi::Value Watch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsBoolean() || !info[1].IsFunction())
      return ThrowType(env, "watch(reap: boolean, callback: (info) => void)");
    if (p_ == nullptr || p_->closing) return ThrowErrno(env, EBADF, "watch");
    if (p_->watching) return ThrowType(env, "watch: this process is already watched");
    p_->reap = info[0].As<Napi::Boolean>().Value();
    napi_value name;
    napi_create_string_utf8(env, "corral.processExit", NAPI_AUTO_LENGTH, &name);
    if (napi_create_reference(env, info[1], 1, &p_->callback) != napi_ok ||
        napi_async_init(env, nullptr, name, &p_->async) != napi_ok) {
      p_->ReleaseNapi();
      return ThrowErrno(env, ENOMEM, "watch");
    }
    int r = uv_poll_start(&p_->poll, UV_READABLE, OnReadable);
    if (r < 0) {
      p_->ReleaseNapi();
      return ThrowErrno(env, -r, "uv_poll_start");
    }
    p_->watching = true;
    return env.Undefined();
  }
  // signal(sig): pidfd_send_signal. ESRCH once the process is gone (or the handle closed after its exit).
  Napi::Value Signal(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int64_t sig = 0;
    if (!IntArg(env, info[0], "signal", 0, 64, &sig)) return env.Undefined();
    if (p_ == nullptr || p_->closing || p_->pidfd < 0) return ThrowErrno(env, ESRCH, "pidfd_send_signal");
    if (syscall(SYS_pidfd_send_signal, p_->pidfd, static_cast<int>(sig), nullptr, 0) < 0)
      return ThrowErrno(env, errno, "pidfd_send_signal");
    return env.Undefined();
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (p_ != nullptr) CloseProc(p_);
    return info.Env().Undefined();
  }
  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (p_ != nullptr && !p_->closing) uv_ref(reinterpret_cast<uv_handle_t*>(&p_->poll));
    return info.Env().Undefined();
  }
  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (p_ != nullptr && !p_->closing) uv_unref(reinterpret_cast<uv_handle_t*>(&p_->poll));
    return info.Env().Undefined();
  }
  Napi::Value Pid(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), p_ != nullptr ? static_cast<double>(p_->pid) : 0);
  }
  Napi::Value Closed(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), p_ == nullptr || p_->closing);
  }
  Proc* p_ = nullptr;
};

// The env is going away (worker thread exit, process teardown): release every open Proc's napi
// state now, while the env is alive, and close its handle; the pidfds close in the close callbacks.
void CleanupProcs(void* arg) {
  ProcEnv* pe = static_cast<ProcEnv*>(arg);
  pe->gone = true;
  std::vector<Proc*> open(pe->open.begin(), pe->open.end());
  for (Proc* p : open) {
    if (p->child && (p->reap || !p->watching)) ReapLater(p->pid);
    CloseProc(p);
  }
  pe->ctor.Reset();
  delete pe;  // every Proc has left `open`; their penv pointers are no longer followed (gone)
}

ProcEnv* EnvOf(const Napi::CallbackInfo& info) { return static_cast<ProcEnv*>(info.Data()); }

// openProcess(pid): ProcessHandle (pidfd_open).
Napi::Value OpenProcess(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t pid = 0;
  if (!IntArg(env, info[0], "pid", 1, 0x3fffffff, &pid)) return env.Undefined();
  long fd = syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0);
  if (fd < 0) return ThrowErrno(env, errno, "pidfd_open");
  return WrapProcess(env, EnvOf(info), static_cast<int>(fd), static_cast<pid_t>(pid), false);
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
  ProcEnv* pe = static_cast<ProcEnv*>(proc_env);
  uv_loop_t* loop = nullptr;
  if (pe == nullptr || pe->gone || napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    close(pidfd);
    return ThrowErrno(env, EINVAL, "uv_poll_init");
  }
  Proc* p = new Proc();
  p->env = env;
  p->pidfd = pidfd;
  p->pid = pid;
  p->child = child;
  int r = uv_poll_init(loop, &p->poll, pidfd);
  if (r < 0) {
    close(pidfd);
    delete p;
    return ThrowErrno(env, -r, "uv_poll_init");
  }
  p->poll.data = p;
  p->penv = pe;
  pe->open.insert(p);
  Napi::Object obj = pe->ctor.New({Napi::External<Proc>::New(env, p)});
  if (env.IsExceptionPending()) {
    p->owners = 1;  // no JS wrapper exists
    CloseProc(p);
    return env.Undefined();
  }
  return obj;
}

void* InitPidfd(Napi::Env env, Napi::Object exports) {
  ProcEnv* pe = new ProcEnv();
  pe->ctor = Napi::Persistent(ProcessHandle::Define(env));
  exports.Set("openProcess", Napi::Function::New(env, OpenProcess, "openProcess", pe));
  napi_add_env_cleanup_hook(env, CleanupProcs, pe);
  return pe;
}

}  // namespace corral
