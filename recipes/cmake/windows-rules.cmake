# Read by CMake after its Windows platform files (CMAKE_USER_MAKE_RULES_OVERRIDE, set by kiln's
# zig toolchain file). clang records each COFF object's file name in a CodeView record
# (S_OBJNAME) even without debug info, and zig compiles into a temporary file in its cache: the
# objects of the static library would carry a path of the build host, different in every cache.
# Name each object by its path relative to the build directory instead. CMake sets its default
# compile rule only when none is set yet, so this one (the default plus the name) wins.
if(CMAKE_C_COMPILE_OBJECT MATCHES "object-file-name")
  # read a second time (CMake includes this file more than once): already done
elseif(CMAKE_C_COMPILE_OBJECT)
  string(REPLACE "-o <OBJECT>" "-Xclang -object-file-name=<OBJECT> -o <OBJECT>"
         CMAKE_C_COMPILE_OBJECT "${CMAKE_C_COMPILE_OBJECT}")
else()
  set(CMAKE_C_COMPILE_OBJECT
      "<CMAKE_C_COMPILER> <DEFINES> <INCLUDES> <FLAGS> -Xclang -object-file-name=<OBJECT> -o <OBJECT> -c <SOURCE>")
endif()
