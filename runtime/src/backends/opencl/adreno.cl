/* adreno.cl - put in front of ember_kernels.cl for Qualcomm Adreno GPUs (backend_opencl.c
 * picks this variant when the device's vendor or name says Qualcomm/Adreno, or when
 * EMBER_OPENCL_VARIANT=adreno).
 *
 * The matmul kernels, one work-item per output, run best on Adreno with full 128-wide waves
 * replaced by 64-wide ("half") sub-groups: fewer idle lanes at the end of short row ranges and
 * twice the waves in flight per SP for the same register budget. Qualcomm's compiler takes that
 * as the qcom_reqd_sub_group_size attribute of cl_qcom_reqd_sub_group_size; any other compiler
 * (or an Adreno driver without the extension) builds the kernels without it, unchanged. The
 * arithmetic is the generic variant's: same numbers, only the scheduling differs.
 */
#define EM_ADRENO 1
#ifdef cl_qcom_reqd_sub_group_size
#pragma OPENCL EXTENSION cl_qcom_reqd_sub_group_size : enable
#define EM_MM_ATTR __attribute__((qcom_reqd_sub_group_size("half")))
#endif
