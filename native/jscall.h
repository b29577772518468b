// A JS callback held by native code, and the one way the addon calls into JS from the loop.
// The function is held by a napi reference together with its async context (so async_hooks and
// AsyncLocalStorage see the call as the continuation of the JS call that registered it). Both are
// created and released on the loop while the env is alive: an env cleanup hook releases whatever is
// still held, and nothing napi is touched after it (a uv close callback may run after the env is
// freed: it must not release napi state).
#pragma once
#include <node_api.h>
#include <stddef.h>

namespace corral {

struct JsCallback {
  napi_ref fn = nullptr;
  napi_async_context async = nullptr;

  // Holds `fn`; false (nothing held) when napi refuses (a terminating env).
  bool Hold(napi_env env, napi_value function, const char* resource_name);
  // Releases what is held (idempotent). The env must be alive.
  void Release(napi_env env);
  bool held() const { return fn != nullptr; }
  // Calls the function with argv in a handle scope the caller opened. `once`: the callback is
  // released as part of the call (the function stays alive in the caller's scope). An exception it
  // throws goes where any callback's would (process 'uncaughtException'); a failing napi call (the
  // env terminating) just skips the call.
  void Call(napi_env env, size_t argc, const napi_value* argv, bool once);
};

// Under AddressSanitizer, an instrumented read of the napi_env before napi state is released, so a
// release after the env was freed is reported. Node itself is not instrumented: without this, the
// write into the freed env inside napi_delete_reference would go unseen (that was the old pidfd.cc
// use-after-free: its close callbacks ran after the worker's env was gone). A no-op otherwise.
void CheckEnvAlive(napi_env env);

}  // namespace corral
