/* cuda_blobs_none.c - the CUDA device-code table of a build made without a device compiler
 * (EMBER_CUDA=ON and no EMBER_CUDA_BLOBS): the backend is present, finds no kernels for any
 * GPU, and says so; `auto` then uses the CPU. kiln's builds replace this file with the one
 * kiln/toolchains/cuda_device.py generates. */
#include "gpu_blobs.h"

const em_gpu_blob em_cuda_blobs[1] = {{"", 0, 0, NULL, 0}};
const int em_cuda_n_blobs = 0;
const char em_cuda_toolchain[] = "none";
