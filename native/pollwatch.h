// One fd watched on the loop (uv_poll_t) with a JS callback: what ProcessHandle (pidfd.cc: a pidfd,
// readable once the process exits) and EventsWatch (events.cc: a cgroup.events file, POLLPRI on each
// change) share.
//
// Lifetime: a PollWatch is owned jointly by its uv handle (until the close callback) and its JS
// wrapper (until finalized), and freed when both are gone. One owner per fd: the fd is closed in the
// close callback, once libuv no longer polls it. napi state is released in Close(), on the loop while
// the env is alive; the close callback touches no napi (it may run after the env is freed). Per env,
// a WatchSet holds every watch not closed yet; its env cleanup hook closes them (TearDown()).
#pragma once
#include <napi.h>
#include <uv.h>

#include <unordered_set>
#include <vector>

#include "errors.h"
#include "jscall.h"

namespace corral {

struct WatchSet;

struct PollWatch {
  uv_poll_t poll;
  napi_env env = nullptr;
  WatchSet* set = nullptr;  // followed only while not closing (the set may be gone after)
  int fd = -1;
  bool closing = false;  // uv_close called: no callback from now on, the fd about to close
  int owners = 2;        // the uv handle and the JS wrapper
  JsCallback cb;

  virtual ~PollWatch() = default;
  // Stops polling, releases the callback, closes the fd (in the close callback). Idempotent.
  void Close();
  // Env teardown: what to do besides closing (ProcessHandle: reap its child in the background).
  virtual void TearDown() { Close(); }
  void Release() {
    if (--owners == 0) delete this;
  }
};

// The per-env registry of one watch class: its JS constructor and every watch not closed yet.
struct WatchSet {
  Napi::FunctionReference ctor;
  std::unordered_set<PollWatch*> open;
  bool gone = false;  // the env cleanup hook ran (the set is deleted right after: never followed then)

  // A set for `ctor`, closed and deleted by an env cleanup hook registered here.
  static WatchSet* Create(Napi::Env env, Napi::Function ctor);
  // Starts w's life: uv_poll_init on env's loop for fd (owned by w from now on: closed on failure
  // too; w is deleted then and the error thrown), registration, and the JS wrapper. Returns the
  // wrapper, or undefined with an exception pending.
  Napi::Value Adopt(Napi::Env env, PollWatch* w, int fd);
};

// The JS side of a watch class: owns one reference to its PollWatch, offers close/ref/unref.
// Self::kCreatedBy names the factory (the constructor is not for JS to call).
template <class Self, class W>
class WatchWrap : public Napi::ObjectWrap<Self> {
 public:
  using Props = std::vector<Napi::ClassPropertyDescriptor<Self>>;
  explicit WatchWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Self>(info) {
    if (info.Length() < 1 || !info[0].IsExternal()) {
      ThrowType(info.Env(), Self::kCreatedBy);
      return;
    }
    w_ = static_cast<W*>(info[0].As<Napi::External<PollWatch>>().Data());
  }
  ~WatchWrap() override {
    if (w_ != nullptr) w_->Release();
  }

 protected:
  // The class's methods: close, ref, unref, then the class's own.
  static Props Methods(Props own) {
    using Base = Napi::ObjectWrap<Self>;
    using M = typename Base::InstanceMethodCallback;
    Props all = {Base::InstanceMethod("close", static_cast<M>(&WatchWrap::Close)),
                 Base::InstanceMethod("ref", static_cast<M>(&WatchWrap::Ref)),
                 Base::InstanceMethod("unref", static_cast<M>(&WatchWrap::Unref))};
    all.insert(all.end(), own.begin(), own.end());
    return all;
  }
  bool open() const { return w_ != nullptr && !w_->closing; }
  W* w_ = nullptr;

 private:
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (w_ != nullptr) w_->Close();
    return info.Env().Undefined();
  }
  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (open()) uv_ref(reinterpret_cast<uv_handle_t*>(&w_->poll));
    return info.Env().Undefined();
  }
  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (open()) uv_unref(reinterpret_cast<uv_handle_t*>(&w_->poll));
    return info.Env().Undefined();
  }
};

}  // namespace corral
