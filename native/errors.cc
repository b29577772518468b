#include "errors.h"

#include <errno.h>
#include <string.h>
#include <uv.h>

namespace corral {

std::string ErrnoName(int err) {
  char buf[64];
  uv_err_name_r(-err, buf, sizeof buf);
  if (strncmp(buf, "Unknown", 7) != 0) return buf;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  // glibc >= 2.32 only: musl (Alpine's source build) has no strerrorname_np.
  const char* n = strerrorname_np(err);
  if (n != nullptr) return n;
#endif
  return "E" + std::to_string(err);
}

static std::string Describe(int err) {
  char buf[128];
  uv_strerror_r(-err, buf, sizeof buf);
  if (strncmp(buf, "Unknown", 7) != 0) return buf;
  return strerror(err);
}

static std::string Message(int err, const std::string& code, const char* syscall, const char* path,
                           const std::string& detail = std::string()) {
  std::string m = code;
  m += ": ";
  m += detail.empty() ? Describe(err) : detail;
  m += ", ";
  m += syscall;
  if (path != nullptr && path[0] != '\0') {
    m += " '";
    m += path;
    m += "'";
  }
  return m;
}

static void Fill(Napi::Object o, int err, const std::string& code, const char* syscall, const char* path) {
  Napi::Env env = o.Env();
  o.Set("code", Napi::String::New(env, code));
  o.Set("errno", Napi::Number::New(env, -err));
  o.Set("syscall", Napi::String::New(env, syscall));
  if (path != nullptr && path[0] != '\0') o.Set("path", Napi::String::New(env, path));
}

Napi::Error MakeError(Napi::Env env, int err, const char* syscall, const char* path) {
  std::string code = ErrnoName(err);
  Napi::Error e = Napi::Error::New(env, Message(err, code, syscall, path));
  Fill(e.Value(), err, code, syscall, path);
  return e;
}

Napi::Error MakeError(Napi::Env env, const SysError& e) {
  std::string code = ErrnoName(e.err);
  Napi::Error err = Napi::Error::New(env, Message(e.err, code, e.syscall, e.path.c_str(), e.detail));
  Fill(err.Value(), e.err, code, e.syscall, e.path.c_str());
  return err;
}

Napi::Object MakeErrorInfo(Napi::Env env, int err, const char* syscall, const char* path) {
  std::string code = ErrnoName(err);
  Napi::Object o = Napi::Object::New(env);
  Fill(o, err, code, syscall, path);
  o.Set("message", Napi::String::New(env, Message(err, code, syscall, path)));
  return o;
}

Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall, const char* path) {
  MakeError(env, err, syscall, path).ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value ThrowType(Napi::Env env, const char* message) {
  Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value NotImplemented(const Napi::CallbackInfo& info) {
  return ThrowErrno(info.Env(), ENOSYS, "corral-native");
}

}  // namespace corral
