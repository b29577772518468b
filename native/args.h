// Strict conversion of JS arguments at the boundary: an integer in range or a TypeError naming the
// argument, never NaN-to-0 (uid 0 is root) or a silently clamped value; array lengths are bounded
// before anything is allocated. Every helper returns false after throwing; callers return at once,
// so no second exception is ever raised on top of a pending one.
#pragma once
#include <napi.h>
#include <stdint.h>

#include <string>
#include <vector>

namespace corral {

// A JS number that is an integer in [lo, hi].
bool IntArg(Napi::Env env, const Napi::Value& v, const char* what, int64_t lo, int64_t hi, int64_t* out);

// Same, for an optional property (undefined/null: *present = false).
bool OptIntProp(Napi::Env env, const Napi::Object& o, const char* key, const char* what, int64_t lo, int64_t hi,
                bool* present, int64_t* out);

// A string without NUL bytes (paths, argv, env).
bool StringArg(Napi::Env env, const Napi::Value& v, const char* what, std::string* out);

// An array of at most max_len strings without NUL.
bool StringArrayArg(Napi::Env env, const Napi::Value& v, const char* what, uint32_t max_len,
                    std::vector<std::string>* out);

// Throws a TypeError "<what> <message>" and returns false.
bool TypeFail(Napi::Env env, const char* what, const char* message);

// Largest argv/envp/joins/groups list accepted (the kernel's own limits are lower anyway).
constexpr uint32_t kMaxList = 1u << 20;

}  // namespace corral
