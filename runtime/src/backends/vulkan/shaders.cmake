# shaders.cmake - the Vulkan backend's device code (included by runtime/CMakeLists.txt when
# EMBER_VULKAN is on): the *.comp beside it compiled to SPIR-V by glslc at build time and
# embedded in the library as a generated C source, plus the Vulkan headers it compiles against.
#
# glslc: EMBER_GLSLC (default: glslc on PATH). Its version is checked against
# EMBER_GLSLC_VERSION when that is set (kiln pins it), else it must be at least the oldest
# release these shaders were written for. The loader is opened at run time, so no Vulkan
# library is linked; only the headers are needed (Debian/Ubuntu: libvulkan-dev). They are copied
# into the build tree so that a cross compile (zig for Windows) sees them without seeing the
# rest of the host's /usr/include.
set(EMBER_GLSLC "" CACHE FILEPATH "glslc, the GLSL to SPIR-V compiler (default: from PATH)")
set(EMBER_GLSLC_VERSION "" CACHE STRING "Exact glslc (shaderc) version required, e.g. 2023.2 (empty: >= 2022.1)")
set(EMBER_VULKAN_INCLUDE_DIR "" CACHE PATH "Directory holding vulkan/vulkan_core.h (default: the host's)")

if(NOT EMBER_GLSLC)
  find_program(EMBER_GLSLC_FOUND glslc)
  if(NOT EMBER_GLSLC_FOUND)
    message(FATAL_ERROR "EMBER_VULKAN needs glslc to compile runtime/src/backends/vulkan/*.comp; on Debian/Ubuntu: "
                        "apt-get install glslc, or pass -DEMBER_GLSLC=/path/to/glslc")
  endif()
  set(EMBER_GLSLC "${EMBER_GLSLC_FOUND}")
endif()
execute_process(COMMAND "${EMBER_GLSLC}" --version OUTPUT_VARIABLE _glslc_out RESULT_VARIABLE _glslc_rc)
if(NOT _glslc_rc EQUAL 0 OR NOT _glslc_out MATCHES "shaderc v?([0-9]+\\.[0-9]+)")
  message(FATAL_ERROR "${EMBER_GLSLC} --version did not print a shaderc version (got: ${_glslc_out})")
endif()
set(EMBER_GLSLC_FOUND_VERSION "${CMAKE_MATCH_1}")
if(EMBER_GLSLC_VERSION AND NOT EMBER_GLSLC_FOUND_VERSION VERSION_EQUAL EMBER_GLSLC_VERSION)
  message(FATAL_ERROR "glslc ${EMBER_GLSLC_FOUND_VERSION} found at ${EMBER_GLSLC}; this build pins "
                      "${EMBER_GLSLC_VERSION} (EMBER_GLSLC_VERSION)")
elseif(EMBER_GLSLC_FOUND_VERSION VERSION_LESS 2022.1)
  message(FATAL_ERROR "glslc ${EMBER_GLSLC_FOUND_VERSION} is too old; 2022.1 or newer is needed")
endif()
message(STATUS "Vulkan shaders: glslc ${EMBER_GLSLC_FOUND_VERSION} (${EMBER_GLSLC})")

if(NOT EMBER_VULKAN_INCLUDE_DIR)
  find_path(EMBER_VULKAN_INCLUDE_DIR_FOUND vulkan/vulkan_core.h PATHS /usr/include /usr/local/include
            NO_CMAKE_FIND_ROOT_PATH)
  if(NOT EMBER_VULKAN_INCLUDE_DIR_FOUND)
    message(FATAL_ERROR "EMBER_VULKAN needs the Vulkan headers (vulkan/vulkan_core.h); on Debian/Ubuntu: "
                        "apt-get install libvulkan-dev, or pass -DEMBER_VULKAN_INCLUDE_DIR=<dir>")
  endif()
  set(EMBER_VULKAN_INCLUDE_DIR "${EMBER_VULKAN_INCLUDE_DIR_FOUND}")
endif()
set(EMBER_VULKAN_HEADERS "${CMAKE_CURRENT_BINARY_DIR}/vulkan-headers")
file(REMOVE_RECURSE "${EMBER_VULKAN_HEADERS}")
file(COPY "${EMBER_VULKAN_INCLUDE_DIR}/vulkan" DESTINATION "${EMBER_VULKAN_HEADERS}"
     FILES_MATCHING PATTERN "vk_platform.h" PATTERN "vulkan_core.h")
if(EXISTS "${EMBER_VULKAN_INCLUDE_DIR}/vk_video")
  file(COPY "${EMBER_VULKAN_INCLUDE_DIR}/vk_video" DESTINATION "${EMBER_VULKAN_HEADERS}")
endif()

# name | source | defines
# name | source | defines; each is also built with -DEM_F64 as <name>_f64 (used where the
# device has shaderFloat64: double sums as the CPU path, and an exactly rounded fma) and as
# <name>_f64n (the same with the driver's fma, for devices whose fma() is found fused)
set(_vk_shaders
  "rmsnorm|rmsnorm.comp|"
  "quantize|quantize.comp|"
  "rope|rope.comp|"
  "kv_store|kv_store.comp|"
  "attention|attention.comp|"
  "swiglu|swiglu.comp|"
  "add|add.comp|"
  "matmul_f32|matmul.comp|-DEM_T_F32"
  "matmul_f16|matmul.comp|-DEM_T_F16"
  "matmul_q4_0|matmul.comp|-DEM_T_Q4_0"
  "matmul_q4_1|matmul.comp|-DEM_T_Q4_1"
  "matmul_q5_0|matmul.comp|-DEM_T_Q5_0"
  "matmul_q5_1|matmul.comp|-DEM_T_Q5_1"
  "matmul_q8_0|matmul.comp|-DEM_T_Q8_0")
set(_vk_variants)
foreach(entry IN LISTS _vk_shaders)
  list(APPEND _vk_variants "${entry}")
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 src)
  list(GET parts 2 defs)
  list(APPEND _vk_variants "${name}_f64|${src}|${defs} -DEM_F64")
  list(APPEND _vk_variants "${name}_f64n|${src}|${defs} -DEM_F64 -DEM_FMA_NATIVE")
endforeach()
list(APPEND _vk_variants "probe_fma|probe_fma.comp|")
set(_vk_dir "${CMAKE_CURRENT_LIST_DIR}") # this file sits with the shaders
set(_vk_out "${CMAKE_CURRENT_BINARY_DIR}/vulkan-spv")
file(MAKE_DIRECTORY "${_vk_out}")
set(_vk_spvs)
set(_vk_args)
foreach(entry IN LISTS _vk_variants)
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 src)
  list(GET parts 2 defs)
  separate_arguments(defs)
  add_custom_command(
    OUTPUT "${_vk_out}/${name}.spv"
    COMMAND "${EMBER_GLSLC}" -fshader-stage=compute --target-env=vulkan1.1 ${defs}
            -o "${_vk_out}/${name}.spv" "${_vk_dir}/${src}"
    DEPENDS "${_vk_dir}/${src}" "${_vk_dir}/common.glsl"
    COMMENT "glslc ${name}"
    VERBATIM)
  list(APPEND _vk_spvs "${_vk_out}/${name}.spv")
  list(APPEND _vk_args "${name}=${_vk_out}/${name}.spv")
endforeach()
string(REPLACE ";" "|" _vk_args_joined "${_vk_args}") # one argument; embed_spirv.cmake splits it
add_custom_command(
  OUTPUT "${_vk_out}/vulkan_shaders.c"
  COMMAND "${CMAKE_COMMAND}" "-DOUT=${_vk_out}/vulkan_shaders.c"
          "-DTOOLCHAIN=glslc ${EMBER_GLSLC_FOUND_VERSION}" "-DSHADERS=${_vk_args_joined}"
          -P "${_vk_dir}/embed_spirv.cmake"
  DEPENDS ${_vk_spvs} "${_vk_dir}/embed_spirv.cmake"
  COMMENT "embedding the Vulkan SPIR-V"
  VERBATIM)
set(EMBER_VULKAN_SOURCES "${_vk_dir}/backend_vulkan.c" "${_vk_out}/vulkan_shaders.c")
set_source_files_properties("${_vk_dir}/backend_vulkan.c" PROPERTIES INCLUDE_DIRECTORIES "${EMBER_VULKAN_HEADERS}")
