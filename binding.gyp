{
  "targets": [
    {
      "target_name": "corral",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/cgroupfs.cc",
        "native/signal.cc",
        "native/args.cc",
        "native/jscall.cc",
        "native/pollwatch.cc",
        "native/events.cc",
        "native/spawn.cc",
        "native/spawn_pool.cc",
        "native/spawn_request.cc",
        "native/child.cc",
        "native/clone3.cc",
        "native/pidfd.cc",
        "native/users.cc",
        "native/pipe.cc",
        "native/flock.cc",
        "native/pty.cc",
        "native/record_file.cc",
        "native/control.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fno-exceptions"],
      "libraries": ["-lpthread"],
      "cflags_cc!": ["-fno-rtti"],
      "ldflags": ["-Wl,-z,now"]
    }
  ]
}
