{
  "targets": [
    {
      "target_name": "corral",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/cgroupfs.cc",
        "native/signal.cc",
        "native/spawn.cc",
        "native/clone3.cc",
        "native/pidfd.cc",
        "native/users.cc",
        "native/pipe.cc",
        "native/flock.cc",
        "native/pty.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fno-exceptions"],
      "cflags_cc!": ["-fno-rtti"],
      "ldflags": ["-Wl,-z,now"]
    }
  ]
}
