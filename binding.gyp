{
  "targets": [
    {
      "target_name": "postcopy_native",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/uffd.cc",
        "native/memory.cc",
        "native/sys.cc",
        "native/socket.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
