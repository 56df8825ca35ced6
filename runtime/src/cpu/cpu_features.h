/* cpu_features.h - what the CPU we run on (and its operating system) can execute.
 *
 * One ember binary runs on any CPU of its architecture; the SIMD kernels of a level are used
 * only where this says the instructions work. A feature counts only when the OS also saves
 * the registers it needs (x86: XCR0 via xgetbv for the AVX and AVX-512 state).
 *
 * Detection is a pure function of the machine: no cached global; callers keep the result
 * (em_kernels_select does, in the table it returns).
 */
#ifndef EMBER_CPU_FEATURES_H
#define EMBER_CPU_FEATURES_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct em_cpu_features {
    /* x86 / x86-64 (all 0 elsewhere) */
    unsigned char sse2, ssse3, sse41, sse42;
    unsigned char avx, avx2, fma, f16c;           /* avx* only with OS support of the YMM state */
    unsigned char avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512bf16; /* + ZMM/opmask state */
    unsigned char avxvnni;                        /* VEX-encoded VNNI (Alder Lake and later) */
    /* AArch64 (all 0 elsewhere) */
    unsigned char neon, dotprod;
} em_cpu_features;

/* Fills *f for the running CPU. Never fails; an unknown platform reports no features. */
void em_cpu_features_detect(em_cpu_features *f);

/* "avx2 fma f16c ..." - the features found, for logs and --json output. Returns buf. */
const char *em_cpu_features_string(const em_cpu_features *f, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_CPU_FEATURES_H */
