{
  "targets": [
    {
      "target_name": "ctnet",
      "sources": ["native/ctnet.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "conditions": [
        [
          "'<!(test -f /usr/include/nftables/libnftables.h && echo 1 || echo 0)'=='1'",
          {
            "defines": ["HAVE_LIBNFTABLES=1"],
            "libraries": ["-lnftables"]
          }
        ]
      ]
    }
  ]
}
