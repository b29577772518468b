// A group kill's steps, off the event loop and off the libuv pool: one control-file write
// (cgroup.kill, cgroup.freeze, freezer.state), one read (freezer.state, cgroup.procs), or one
// confirmed signal of every member (signal.cc).
//
// Not on the loop: with 200 destroys at once a v1 freezer write took 2-7 ms (the kernel walks the
// group under the freezer mutex, which a freezer.state read also takes), and cgroup.kill and
// cgroup.freeze take the cgroup mutex, which every mkdir and rmdir on the host holds.
// Not on the libuv pool: its four threads are shared with fs, dns and zlib, and a kill must finish
// while they are all stuck (a hung network filesystem). The steps run on corral's own threads
// (spawn_pool.cc) and come back through one uv_async_t per env, a few per loop turn.
//
// Each step is short (no wait for a condition: the waits are loop events in src/cgroups/waits.ts),
// so there is no timer here; the caller bounds the whole kill. Job states change under the hub's
// mutex: running -> done (thread) | abandoned (env teardown); whoever makes the transition frees it.
#include <uv.h>

#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "args.h"
#include "cgroupfs.h"
#include "errors.h"
#include "jscall.h"
#include "signal.h"
#include "spawn_pool.h"

namespace corral {

namespace {

struct ControlJob;

// Shared by the env and every job thread, so a thread that outlives the env still has a mutex.
struct ControlHub {
  std::mutex mu;
  std::vector<ControlJob*> done;            // finished, waiting for the loop (guarded by mu)
  uv_async_t* async = nullptr;              // closed by the env cleanup hook
  std::unordered_set<ControlJob*> pending;  // loop thread only: jobs whose callback has not run
  napi_env env = nullptr;
};

enum class JobState { kRunning, kDone, kAbandoned };

struct ControlJob {
  enum Kind { kWrite, kRead, kSignal } kind;
  std::shared_ptr<ControlHub> hub;
  std::string path, text;  // write: the value; read: the result
  int sig = 0;
  SignalOutcome signalled;
  SysError err;
  JobState state = JobState::kRunning;  // guarded by hub->mu
  JsCallback cb;                        // loop side only

  void Run() {
    const char* sc = "";
    int e = 0;
    if (kind == kWrite) {
      e = WriteOnce(path.c_str(), text.data(), text.size(), &sc);
    } else if (kind == kRead) {
      e = ReadWhole(path.c_str(), &text, &sc);
    } else {
      signalled = SignalMembers(path, sig);
      if (signalled.err) err = signalled.err;
      return;
    }
    if (e != 0) err.set(e, sc, path);
  }
};

void* JobMain(void* arg) {
  ControlJob* j = static_cast<ControlJob*>(arg);
  j->Run();
  std::shared_ptr<ControlHub> hub = j->hub;
  std::unique_lock<std::mutex> lock(hub->mu);
  if (j->state == JobState::kAbandoned) {
    lock.unlock();
    delete j;  // the env is gone: nobody will collect it, its napi state was released then
    return nullptr;
  }
  j->state = JobState::kDone;
  hub->done.push_back(j);
  uv_async_send(hub->async);
  return nullptr;
}

void Deliver(ControlHub* hub, ControlJob* j) {
  napi_env env = hub->env;
  hub->pending.erase(j);
  if (hub->pending.empty()) uv_unref(reinterpret_cast<uv_handle_t*>(hub->async));
  Napi::HandleScope scope(env);
  Napi::Env e(env);
  napi_value args[2];
  size_t argc = 1;
  if (j->err) {
    args[0] = MakeError(e, j->err).Value();
  } else {
    args[0] = e.Null();
    argc = 2;
    if (j->kind == ControlJob::kRead) {
      args[1] = Napi::String::New(e, j->text);
    } else if (j->kind == ControlJob::kSignal) {
      Napi::Object r = Napi::Object::New(e);
      r.Set("signalled", Napi::Number::New(e, j->signalled.signalled));
      r.Set("gone", Napi::Number::New(e, j->signalled.gone));
      args[1] = r;
    } else {
      argc = 1;
    }
  }
  j->cb.Call(env, argc, args, true);
}

// Each delivery runs its caller's continuation (the next step of a kill): a few per turn.
constexpr size_t kDeliverPerTurn = 8;

void OnAsync(uv_async_t* a) {
  ControlHub* hub = static_cast<ControlHub*>(a->data);
  std::vector<ControlJob*> batch;
  {
    std::lock_guard<std::mutex> lock(hub->mu);
    size_t n = hub->done.size() < kDeliverPerTurn ? hub->done.size() : kDeliverPerTurn;
    batch.assign(hub->done.begin(), hub->done.begin() + static_cast<std::ptrdiff_t>(n));
    hub->done.erase(hub->done.begin(), hub->done.begin() + static_cast<std::ptrdiff_t>(n));
    if (!hub->done.empty()) uv_async_send(hub->async);  // the rest on a later turn
  }
  for (ControlJob* j : batch) {
    Deliver(hub, j);
    delete j;
  }
}

// Env teardown: no callback will run. Running jobs are left to their threads (which free them),
// finished ones freed here; napi state released now, while the env is alive.
void CleanupHub(void* arg) {
  auto* holder = static_cast<std::shared_ptr<ControlHub>*>(arg);
  std::shared_ptr<ControlHub> hub = *holder;
  delete holder;
  std::vector<ControlJob*> finished;
  {
    std::lock_guard<std::mutex> lock(hub->mu);
    for (ControlJob* j : hub->pending) {
      j->cb.Release(hub->env);
      if (j->state == JobState::kRunning)
        j->state = JobState::kAbandoned;
      else
        finished.push_back(j);
    }
    hub->done.clear();
  }
  for (ControlJob* j : finished) delete j;
  hub->pending.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(hub->async), [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  hub->async = nullptr;
}

// Queues j (owned by the caller until then) with the callback at `cb_index`.
Napi::Value Submit(const Napi::CallbackInfo& info, std::unique_ptr<ControlJob> j, size_t cb_index, const char* name) {
  Napi::Env env = info.Env();
  if (info.Length() <= cb_index || !info[cb_index].IsFunction()) {
    std::string m = std::string(name) + ": callback must be a function";
    return ThrowType(env, m.c_str());
  }
  j->hub = *static_cast<std::shared_ptr<ControlHub>*>(info.Data());
  ControlHub* hub = j->hub.get();
  if (hub->async == nullptr) return ThrowErrno(env, EINVAL, name);
  if (!j->cb.Hold(env, info[cb_index], name)) return ThrowErrno(env, ENOMEM, name);
  ControlJob* jp = j.get();
  int r = SubmitSpawnJob(JobMain, jp);
  if (r != 0) {
    jp->cb.Release(env);
    return ThrowErrno(env, r, "pthread_create");
  }
  j.release();  // the thread hands it back through the hub
  if (hub->pending.empty()) uv_ref(reinterpret_cast<uv_handle_t*>(hub->async));  // a pending step keeps the loop alive
  hub->pending.insert(jp);
  return env.Undefined();
}

// controlWrite(path: string, value: string, callback(err | null))
Napi::Value ControlWrite(const Napi::CallbackInfo& info) {
  std::unique_ptr<ControlJob> j(new ControlJob());
  j->kind = ControlJob::kWrite;
  if (!StringArg(info.Env(), info[0], "controlWrite: path", &j->path)) return info.Env().Undefined();
  if (!StringArg(info.Env(), info[1], "controlWrite: value", &j->text)) return info.Env().Undefined();
  return Submit(info, std::move(j), 2, "controlWrite");
}

// controlRead(path: string, callback(err | null, text))
Napi::Value ControlRead(const Napi::CallbackInfo& info) {
  std::unique_ptr<ControlJob> j(new ControlJob());
  j->kind = ControlJob::kRead;
  if (!StringArg(info.Env(), info[0], "controlRead: path", &j->path)) return info.Env().Undefined();
  return Submit(info, std::move(j), 1, "controlRead");
}

// controlSignalGroup(procsPath: string, signal: number, callback(err | null, { signalled, gone }))
Napi::Value ControlSignalGroup(const Napi::CallbackInfo& info) {
  std::unique_ptr<ControlJob> j(new ControlJob());
  j->kind = ControlJob::kSignal;
  int64_t sig = 0;
  if (!StringArg(info.Env(), info[0], "controlSignalGroup: procsPath", &j->path)) return info.Env().Undefined();
  if (!IntArg(info.Env(), info[1], "controlSignalGroup: signal", 0, 64, &sig)) return info.Env().Undefined();
  j->sig = static_cast<int>(sig);
  return Submit(info, std::move(j), 2, "controlSignalGroup");
}

}  // namespace

void InitControl(Napi::Env env, Napi::Object exports) {
  auto* holder = new std::shared_ptr<ControlHub>(std::make_shared<ControlHub>());
  ControlHub* hub = holder->get();
  hub->env = env;
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  hub->async = new uv_async_t;
  uv_async_init(loop, hub->async, OnAsync);
  hub->async->data = hub;
  uv_unref(reinterpret_cast<uv_handle_t*>(hub->async));
  exports.Set("controlWrite", Napi::Function::New(env, ControlWrite, "controlWrite", holder));
  exports.Set("controlRead", Napi::Function::New(env, ControlRead, "controlRead", holder));
  exports.Set("controlSignalGroup", Napi::Function::New(env, ControlSignalGroup, "controlSignalGroup", holder));
  napi_add_env_cleanup_hook(env, CleanupHub, holder);
}

}  // namespace corral
