#include "args.h"

#include <cmath>

#include "errors.h"

namespace corral {

bool TypeFail(Napi::Env env, const char* what, const char* message) {
  std::string m = std::string(what) + " " + message;
  ThrowType(env, m.c_str());
  return false;
}

bool IntArg(Napi::Env env, const Napi::Value& v, const char* what, int64_t lo, int64_t hi, int64_t* out) {
  if (!v.IsNumber()) return TypeFail(env, what, "must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  // NaN and ±Infinity fail the first test; fractions the second; the range check is on the double,
  // before any conversion, so nothing wraps.
  if (!std::isfinite(d) || std::trunc(d) != d) return TypeFail(env, what, "must be an integer");
  if (d < static_cast<double>(lo) || d > static_cast<double>(hi)) {
    std::string m = "must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi);
    return TypeFail(env, what, m.c_str());
  }
  *out = static_cast<int64_t>(d);
  return true;
}

bool OptIntProp(Napi::Env env, const Napi::Object& o, const char* key, const char* what, int64_t lo, int64_t hi,
                bool* present, int64_t* out) {
  *present = false;
  Napi::Value v = o.Get(key);
  if (env.IsExceptionPending()) return false;  // a throwing getter
  if (v.IsUndefined() || v.IsNull()) return true;
  if (!IntArg(env, v, what, lo, hi, out)) return false;
  *present = true;
  return true;
}

bool StringArg(Napi::Env env, const Napi::Value& v, const char* what, std::string* out) {
  if (!v.IsString()) return TypeFail(env, what, "must be a string");
  *out = v.As<Napi::String>().Utf8Value();
  if (out->find('\0') != std::string::npos) return TypeFail(env, what, "must not contain NUL");
  return true;
}

bool StringArrayArg(Napi::Env env, const Napi::Value& v, const char* what, uint32_t max_len,
                    std::vector<std::string>* out) {
  if (!v.IsArray()) return TypeFail(env, what, "must be an array of strings");
  Napi::Array a = v.As<Napi::Array>();
  uint32_t n = a.Length();
  if (env.IsExceptionPending()) return false;
  if (n > max_len) return TypeFail(env, what, "is too long");
  out->clear();
  out->reserve(n);
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value e = a.Get(i);
    if (env.IsExceptionPending()) return false;
    std::string s;
    if (!StringArg(env, e, what, &s)) return false;
    out->push_back(std::move(s));
  }
  return true;
}

}  // namespace corral
