#include "jscall.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace corral {

void CheckEnvAlive(napi_env env) {
#if defined(__SANITIZE_ADDRESS__)
  // napi_env points at a C++ object (its first word is the vtable pointer): readable while alive.
  if (env != nullptr) (void)*reinterpret_cast<const volatile char*>(env);
#else
  (void)env;
#endif
}

bool JsCallback::Hold(napi_env env, napi_value function, const char* resource_name) {
  napi_value name;
  if (napi_create_string_utf8(env, resource_name, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_reference(env, function, 1, &fn) != napi_ok ||
      napi_async_init(env, nullptr, name, &async) != napi_ok) {
    Release(env);
    return false;
  }
  return true;
}

void JsCallback::Release(napi_env env) {
  if (fn == nullptr && async == nullptr) return;
  CheckEnvAlive(env);
  if (fn != nullptr) napi_delete_reference(env, fn);
  fn = nullptr;
  if (async != nullptr) napi_async_destroy(env, async);
  async = nullptr;
}

void JsCallback::Call(napi_env env, size_t argc, const napi_value* argv, bool once) {
  napi_value f = nullptr, global, unused;
  if (fn != nullptr) napi_get_reference_value(env, fn, &f);
  napi_async_context ctx = async;
  if (once) {
    async = nullptr;  // destroyed after the call
    Release(env);     // the reference; f stays alive in the caller's handle scope
  }
  if (f != nullptr && ctx != nullptr && napi_get_global(env, &global) == napi_ok) {
    napi_status s = napi_make_callback(env, ctx, global, f, argc, argv, &unused);
    if (s == napi_pending_exception) {
      napi_value ex;
      if (napi_get_and_clear_last_exception(env, &ex) == napi_ok) napi_fatal_exception(env, ex);
    }
  }
  if (once && ctx != nullptr) napi_async_destroy(env, ctx);
}

}  // namespace corral
