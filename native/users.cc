// Users and groups through the C library's NSS (getpwnam_r, getpwuid_r, getgrnam_r, getgrgid_r,
// getgrouplist), so every user the system knows can be named: /etc/passwd, LDAP, SSSD, systemd, ...
// An NSS source may wait on the network, so the JS-facing calls run on the libuv threadpool.
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "errors.h"

namespace corral {

namespace {

struct UserRecord {
  std::string name, home, shell;
  uint32_t uid = 0, gid = 0;
  std::vector<uint32_t> groups;  // every group of the user (getgrouplist: the primary gid included)
};

struct GroupRecord {
  std::string name;
  uint32_t gid = 0;
};

// The *_r calls want a caller buffer and say ERANGE when it is small: grow it (bounded at 1 MiB).
// Returns 0 and sets *found, or a positive errno. "Not found" is 0 with *found = false: glibc
// returns 0 with a null result, but some NSS modules report ENOENT/ESRCH/EBADF/EPERM for it.
template <typename Call>
int WithBuffer(Call call, bool* found) {
  size_t size = 1024;
  for (;;) {
    std::vector<char> buf(size);
    bool hit = false;
    int r = call(buf.data(), buf.size(), &hit);
    if (r == ERANGE && size < (1u << 20)) {
      size *= 4;
      continue;
    }
    if (r == 0) {
      *found = hit;
      return 0;
    }
    if (r == ENOENT || r == ESRCH || r == EBADF || r == EPERM) {
      *found = false;
      return 0;
    }
    return r;
  }
}

int LookupUser(const std::string& name, bool by_uid, uint32_t uid, UserRecord* out, bool* found, const char** syscall) {
  *syscall = by_uid ? "getpwuid_r" : "getpwnam_r";
  int r = WithBuffer(
      [&](char* buf, size_t len, bool* hit) {
        struct passwd pw;
        struct passwd* res = nullptr;
        int e = by_uid ? getpwuid_r(static_cast<uid_t>(uid), &pw, buf, len, &res) : getpwnam_r(name.c_str(), &pw, buf, len, &res);
        if (e == 0 && res != nullptr) {
          *hit = true;
          out->name = pw.pw_name;
          out->uid = pw.pw_uid;
          out->gid = pw.pw_gid;
          out->home = pw.pw_dir != nullptr ? pw.pw_dir : "";
          out->shell = pw.pw_shell != nullptr ? pw.pw_shell : "";
        }
        return e;
      },
      found);
  if (r != 0 || !*found) return r;
  // getgrouplist returns -1 and the needed count when the array is too small.
  *syscall = "getgrouplist";
  int n = 32;
  for (int tries = 0; tries < 8; tries++) {
    std::vector<gid_t> gids(static_cast<size_t>(n));
    int want = n;
    if (getgrouplist(out->name.c_str(), static_cast<gid_t>(out->gid), gids.data(), &want) >= 0) {
      out->groups.assign(gids.begin(), gids.begin() + want);
      return 0;
    }
    n = want > n ? want : n * 2;
  }
  return ERANGE;
}

int LookupGroup(const std::string& name, bool by_gid, uint32_t gid, GroupRecord* out, bool* found, const char** syscall) {
  *syscall = by_gid ? "getgrgid_r" : "getgrnam_r";
  return WithBuffer(
      [&](char* buf, size_t len, bool* hit) {
        struct group gr;
        struct group* res = nullptr;
        int e = by_gid ? getgrgid_r(static_cast<gid_t>(gid), &gr, buf, len, &res) : getgrnam_r(name.c_str(), &gr, buf, len, &res);
        if (e == 0 && res != nullptr) {
          *hit = true;
          out->name = gr.gr_name;
          out->gid = gr.gr_gid;
        }
        return e;
      },
      found);
}

Napi::Value UserToJs(Napi::Env env, const UserRecord& u) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", Napi::String::New(env, u.name));
  o.Set("uid", Napi::Number::New(env, u.uid));
  o.Set("gid", Napi::Number::New(env, u.gid));
  o.Set("home", Napi::String::New(env, u.home));
  o.Set("shell", Napi::String::New(env, u.shell));
  Napi::Array g = Napi::Array::New(env, u.groups.size());
  for (size_t i = 0; i < u.groups.size(); i++) g.Set(static_cast<uint32_t>(i), Napi::Number::New(env, u.groups[i]));
  o.Set("groups", g);
  return o;
}

Napi::Value GroupToJs(Napi::Env env, const GroupRecord& g) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", Napi::String::New(env, g.name));
  o.Set("gid", Napi::Number::New(env, g.gid));
  return o;
}

// The key of a lookup: a name (string) or an id (integer 0..2^32-2; 2^32-1 is (uid_t)-1, "no id").
struct Key {
  std::string name;
  bool by_id = false;
  uint32_t id = 0;
};

bool ParseKey(const Napi::Value& v, Key* k) {
  if (v.IsString()) {
    k->name = v.As<Napi::String>().Utf8Value();
    return !k->name.empty() && k->name.find('\0') == std::string::npos;
  }
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d < 4294967295.0) || d != static_cast<double>(static_cast<uint32_t>(d))) return false;
  k->by_id = true;
  k->id = static_cast<uint32_t>(d);
  return true;
}

class LookupWorker : public Napi::AsyncWorker {
 public:
  LookupWorker(Napi::Function cb, bool group, Key key)
      : Napi::AsyncWorker(cb, group ? "corral.lookupGroup" : "corral.lookupUser"), group_(group), key_(std::move(key)) {}

  void Execute() override {
    const char* sc = "";
    int e = group_ ? LookupGroup(key_.name, key_.by_id, key_.id, &gr_, &found_, &sc)
                   : LookupUser(key_.name, key_.by_id, key_.id, &pw_, &found_, &sc);
    if (e != 0) err_.set(e, sc, key_.by_id ? std::to_string(key_.id) : key_.name);
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (err_) {
      Callback().Call({MakeError(env, err_).Value()});
      return;
    }
    Callback().Call({env.Null(), !found_ ? env.Null() : group_ ? GroupToJs(env, gr_) : UserToJs(env, pw_)});
  }

 private:
  bool group_;
  Key key_;
  UserRecord pw_;
  GroupRecord gr_;
  bool found_ = false;
  SysError err_;
};

// lookupUser(nameOrUid, callback(err, user | null)) / lookupGroup(nameOrGid, callback(err, group | null))
Napi::Value LookupAsync(const Napi::CallbackInfo& info, bool group) {
  Napi::Env env = info.Env();
  Key key;
  if (info.Length() < 2 || !ParseKey(info[0], &key) || !info[1].IsFunction()) {
    return ThrowType(env, group ? "lookupGroup(nameOrGid: non-empty string | integer 0..4294967294, callback: function)"
                                : "lookupUser(nameOrUid: non-empty string | integer 0..4294967294, callback: function)");
  }
  (new LookupWorker(info[1].As<Napi::Function>(), group, std::move(key)))->Queue();
  return env.Undefined();
}

Napi::Value LookupUserAsync(const Napi::CallbackInfo& info) { return LookupAsync(info, false); }
Napi::Value LookupGroupAsync(const Napi::CallbackInfo& info) { return LookupAsync(info, true); }

// lookupUserSync(nameOrUid): user | null — for synchronous validation paths; may block on a slow NSS source.
Napi::Value LookupUserSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Key key;
  if (info.Length() < 1 || !ParseKey(info[0], &key)) return ThrowType(env, "lookupUserSync(nameOrUid: non-empty string | integer 0..4294967294)");
  UserRecord u;
  bool found = false;
  const char* sc = "";
  int e = LookupUser(key.name, key.by_id, key.id, &u, &found, &sc);
  if (e != 0) return ThrowErrno(env, e, sc, key.by_id ? std::to_string(key.id).c_str() : key.name.c_str());
  return found ? UserToJs(env, u) : env.Null();
}

// lookupGroupSync(nameOrGid): group | null
Napi::Value LookupGroupSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Key key;
  if (info.Length() < 1 || !ParseKey(info[0], &key)) return ThrowType(env, "lookupGroupSync(nameOrGid: non-empty string | integer 0..4294967294)");
  GroupRecord g;
  bool found = false;
  const char* sc = "";
  int e = LookupGroup(key.name, key.by_id, key.id, &g, &found, &sc);
  if (e != 0) return ThrowErrno(env, e, sc, key.by_id ? std::to_string(key.id).c_str() : key.name.c_str());
  return found ? GroupToJs(env, g) : env.Null();
}

}  // namespace

void InitUsers(Napi::Env env, Napi::Object exports) {
  exports.Set("lookupUser", Napi::Function::New(env, LookupUserAsync, "lookupUser"));
  exports.Set("lookupGroup", Napi::Function::New(env, LookupGroupAsync, "lookupGroup"));
  exports.Set("lookupUserSync", Napi::Function::New(env, LookupUserSync, "lookupUserSync"));
  exports.Set("lookupGroupSync", Napi::Function::New(env, LookupGroupSync, "lookupGroupSync"));
}

}  // namespace corral
