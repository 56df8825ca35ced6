# Read by CMake after its Darwin platform files (CMAKE_USER_MAKE_RULES_OVERRIDE, set by kiln's
# zig toolchain file). Cross-compiling from Linux, Darwin.cmake cannot run sw_vers, takes the
# host for an old macOS and leaves the rpath flag unset: libraries would then get their
# absolute build path as install name instead of @rpath/..., and tools no LC_RPATH.
set(CMAKE_SHARED_LIBRARY_RUNTIME_C_FLAG "-Wl,-rpath,")
