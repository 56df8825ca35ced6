/* hip_blobs_none.c - the HIP device-code table of a build made without hipcc
 * (EMBER_HIP=ON and no EMBER_HIP_BLOBS); see cuda_blobs_none.c. */
#include "gpu_blobs.h"

const em_gpu_blob em_hip_blobs[1] = {{"", 0, 0, NULL, 0}};
const int em_hip_n_blobs = 0;
const char em_hip_toolchain[] = "none";
