// ember_kernels.hip - the HIP build of ember's GPU kernels: the same source as CUDA
// (runtime/src/backends/cuda/ember_kernels.cu selects HIP spellings under __HIPCC__). Compiled with
//   hipcc --genco --offload-arch=gfx1030 [--offload-arch=...] -O3 ember_kernels.hip
// into one code-object bundle that backend_hip.c loads with hipModuleLoadData.
#include <hip/hip_runtime.h>

#include "../cuda/ember_kernels.cu"
