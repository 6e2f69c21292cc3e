"""The control-plane protocol: `anvyl.proto` (package `anvyl.v1`) and its generated stubs."""
