#include "errors.h"
namespace corral {
void InitSpawn(Napi::Env env, Napi::Object exports) {
  exports.Set("spawn", Napi::Function::New(env, NotImplemented, "spawn"));
}
}  // namespace corral
