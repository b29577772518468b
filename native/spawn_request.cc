// See spawn_request.h.
#include "spawn_request.h"

#include <sys/resource.h>

#include "args.h"
#include "cgroupfs.h"

namespace corral {

namespace {

std::vector<char*> CPointers(std::vector<std::string>& strs) {
  std::vector<char*> p;
  p.reserve(strs.size() + 1);
  for (auto& s : strs) p.push_back(&s[0]);
  p.push_back(nullptr);
  return p;
}

std::string DirOf(const std::string& file) {
  size_t slash = file.rfind('/');
  return slash == std::string::npos ? std::string(".") : file.substr(0, slash);
}

}  // namespace

std::string SpawnRequest::Where() const {
  return has_cg ? cgroup_dir : joins_s.empty() ? std::string() : DirOf(joins_s[0]);
}

bool SpawnRequest::FrozenGroup(std::string* which) const {
  std::string text;
  const char* sc = "";
  for (const auto& procs : joins_s) {
    std::string dir = DirOf(procs);
    if (ReadWhole((dir + "/freezer.state").c_str(), &text, &sc) == 0 && text.compare(0, 6, "THAWED") != 0) {
      *which = dir;
      return true;
    }
    if (ReadWhole((dir + "/cgroup.events").c_str(), &text, &sc) == 0 && text.find("frozen 1") != std::string::npos) {
      *which = dir;
      return true;
    }
  }
  if (has_cg && ReadWhole((cgroup_dir + "/cgroup.events").c_str(), &text, &sc) == 0 &&
      text.find("frozen 1") != std::string::npos) {
    *which = cgroup_dir;
    return true;
  }
  return false;
}

bool ParseSpawnOptions(Napi::Env env, const Napi::Object& o, SpawnRequest* r) {
  if (!StringArg(env, o.Get("file"), "spawn: opts.file", &r->file)) return false;
  if (r->file.empty()) return TypeFail(env, "spawn: opts.file", "must not be empty");
  if (!StringArrayArg(env, o.Get("argv"), "spawn: opts.argv", kMaxList, &r->argv_s)) return false;
  if (!StringArrayArg(env, o.Get("envp"), "spawn: opts.envp", kMaxList, &r->envp_s)) return false;
  Napi::Value v = o.Get("cwd");
  if ((r->has_cwd = !v.IsUndefined() && !v.IsNull()) && !StringArg(env, v, "spawn: opts.cwd", &r->cwd)) return false;
  v = o.Get("cgroupDir");
  if ((r->has_cg = !v.IsUndefined() && !v.IsNull()) && !StringArg(env, v, "spawn: opts.cgroupDir", &r->cgroup_dir))
    return false;
  v = o.Get("joinProcs");
  if (!v.IsUndefined() && !v.IsNull() && !StringArrayArg(env, v, "spawn: opts.joinProcs", 64, &r->joins_s)) return false;
  v = o.Get("record");
  if ((r->has_record = !v.IsUndefined() && !v.IsNull())) {
    if (!v.IsObject()) return TypeFail(env, "spawn: opts.record", "must be { file, text }");
    Napi::Object rec = v.As<Napi::Object>();
    if (!StringArg(env, rec.Get("file"), "spawn: opts.record.file", &r->record_file)) return false;
    if (!StringArg(env, rec.Get("text"), "spawn: opts.record.text", &r->record_text)) return false;
    if (r->record_file.empty()) return TypeFail(env, "spawn: opts.record.file", "must not be empty");
    if (r->record_text.empty()) return TypeFail(env, "spawn: opts.record.text", "must not be empty");
  }
  bool has_uid, has_gid, has_oom;
  int64_t uid = 0, gid = 0, oom = 0;
  // uid/gid -1 (0xffffffff) means "unchanged" to the kernel: never accepted.
  if (!OptIntProp(env, o, "uid", "spawn: opts.uid", 0, 0xfffffffeLL, &has_uid, &uid)) return false;
  if (!OptIntProp(env, o, "gid", "spawn: opts.gid", 0, 0xfffffffeLL, &has_gid, &gid)) return false;
  if (!OptIntProp(env, o, "oomScoreAdj", "spawn: opts.oomScoreAdj", -1000, 1000, &has_oom, &oom)) return false;
  v = o.Get("groups");
  bool has_groups = !v.IsUndefined() && !v.IsNull();
  if (has_groups) {
    if (!v.IsArray()) return TypeFail(env, "spawn: opts.groups", "must be an array of gids");
    Napi::Array ga = v.As<Napi::Array>();
    uint32_t n = ga.Length();
    if (n > 65536) return TypeFail(env, "spawn: opts.groups", "is too long (NGROUPS_MAX is 65536)");
    for (uint32_t i = 0; i < n; i++) {
      int64_t g = 0;
      if (!IntArg(env, ga.Get(i), "spawn: opts.groups[i]", 0, 0xfffffffeLL, &g)) return false;
      r->groups.push_back(static_cast<gid_t>(g));
    }
  }
  v = o.Get("stdio");
  if (!v.IsArray() || v.As<Napi::Array>().Length() != 3)
    return TypeFail(env, "spawn: opts.stdio", "must be [stdin, stdout, stderr] fds (-1 = /dev/null)");
  for (uint32_t i = 0; i < 3; i++) {
    int64_t fd = 0;
    if (!IntArg(env, v.As<Napi::Array>().Get(i), "spawn: opts.stdio[i]", -1, 0x7fffffff, &fd)) return false;
    r->ctx.stdio[i] = static_cast<int>(fd);
  }
  int64_t timeout = 0;
  if (!IntArg(env, o.Get("timeoutMs"), "spawn: opts.timeoutMs", 1, 24LL * 3600 * 1000, &timeout)) return false;
  r->timeout_ms = timeout;
  bool setsid_flag = o.Get("setsid").ToBoolean().Value();
  bool ctty_flag = o.Get("controllingTty").ToBoolean().Value();
  if (env.IsExceptionPending()) return false;
  if (ctty_flag && !setsid_flag) return TypeFail(env, "spawn: opts.controllingTty", "needs opts.setsid");

  // Everything the child reads is prepared here; the vectors are not touched again until it exec'd.
  r->argv_p = CPointers(r->argv_s);
  r->envp_p = CPointers(r->envp_s);
  for (auto& s : r->joins_s) r->joins_p.push_back(s.c_str());
  r->joins_p.reserve(r->joins_p.size() + 1);  // room for the v2 fallback join, no reallocation in the thread
  if ((r->has_oom = has_oom)) r->oom = std::to_string(oom);
  ChildCtx& c = r->ctx;
  c.file = r->file.c_str();
  c.argv = r->argv_p.data();
  c.envp = r->envp_p.data();
  c.cwd = r->has_cwd ? r->cwd.c_str() : nullptr;
  c.oom = has_oom ? r->oom.c_str() : nullptr;
  c.oom_len = r->oom.size();
  c.setsid = setsid_flag;
  c.ctty = ctty_flag;
  c.set_groups = has_groups || has_uid || has_gid;
  c.groups = r->groups.data();
  c.ngroups = r->groups.size();
  c.has_gid = has_gid;
  c.gid = static_cast<gid_t>(gid);
  c.has_uid = has_uid;
  c.uid = static_cast<uid_t>(uid);
  struct rlimit rl;
  c.max_fd = 65536;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 65536)
    c.max_fd = static_cast<int>(rl.rlim_cur);
  return true;
}

}  // namespace corral
