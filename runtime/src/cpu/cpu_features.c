/* cpu_features.c - run-time detection of the SIMD features the kernel levels need.
 *
 * x86: cpuid says what the CPU implements; xgetbv(XCR0) says which register state the OS saves
 * on a context switch. AVX needs XMM+YMM state (bits 1, 2), AVX-512 also opmask, ZMM_Hi256 and
 * Hi16_ZMM (bits 5, 6, 7). A CPU with AVX-512 under an OS that does not enable it (or a
 * hypervisor masking it) must not get AVX-512 code. macOS enables the AVX-512 state lazily, on
 * a thread's first AVX-512 instruction, so XCR0 there can lack the bits; the kernel's own
 * answer (sysctl hw.optional.avx512f) decides instead.
 *
 * AArch64: Advanced SIMD is part of the base architecture; the dot-product extension
 * (SDOT/UDOT, Armv8.2 optional, Armv8.4 mandatory) is asked of the OS: getauxval(AT_HWCAP) on
 * Linux and Android, sysctl on macOS, IsProcessorFeaturePresent on Windows.
 */
#include "cpu_features.h"

#include <stdio.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define EM_CPU_X86 1
#include <cpuid.h>
#endif

#if defined(__aarch64__) || defined(_M_ARM64)
#define EM_CPU_ARM64 1
#if defined(__linux__)
#include <sys/auxv.h>
#elif defined(__APPLE__)
#include <TargetConditionals.h>
#include <sys/sysctl.h>
#include <sys/types.h>
#elif defined(_WIN32)
#include <windows.h>
#endif
#endif

#if defined(EM_CPU_X86) && defined(__APPLE__)
#include <sys/sysctl.h>
#include <sys/types.h>
#endif

#if defined(__APPLE__) && (defined(EM_CPU_X86) || defined(EM_CPU_ARM64))
/* 1 if the sysctl exists and is non-zero; -1 if it does not exist */
static int sysctl_flag(const char *name) {
    int v = 0;
    size_t len = sizeof v;
    if (sysctlbyname(name, &v, &len, NULL, 0) != 0) return -1;
    return v != 0;
}
#endif

#if defined(EM_CPU_X86)

static int bit(unsigned reg, int b) { return (reg >> b) & 1u; }

static unsigned long long xgetbv0(void) {
    unsigned lo, hi;
    /* the opcode of xgetbv, so that no assembler or -mxsave is needed */
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0u));
    return ((unsigned long long)hi << 32) | lo;
}

static void detect_x86(em_cpu_features *f) {
    unsigned a, b, c, d;
    const unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 1) return;
    __cpuid_count(1, 0, a, b, c, d);
    f->sse2 = (unsigned char)bit(d, 26);
    f->ssse3 = (unsigned char)bit(c, 9);
    f->sse41 = (unsigned char)bit(c, 19);
    f->sse42 = (unsigned char)bit(c, 20);
    const int osxsave = bit(c, 27), cpu_avx = bit(c, 28), cpu_fma = bit(c, 12), cpu_f16c = bit(c, 29);

    unsigned long long xcr0 = 0;
    if (osxsave) xcr0 = xgetbv0();
    const int os_avx = (xcr0 & 0x6u) == 0x6u;
    int os_avx512 = (xcr0 & 0xe6u) == 0xe6u;

    unsigned b7 = 0, c7 = 0, a71 = 0;
    if (max_leaf >= 7) {
        unsigned max_sub;
        __cpuid_count(7, 0, max_sub, b7, c7, d);
        if (max_sub >= 1) __cpuid_count(7, 1, a71, b, c, d);
    }
#if defined(__APPLE__)
    if (!os_avx512 && os_avx && bit(b7, 16) && sysctl_flag("hw.optional.avx512f") == 1) os_avx512 = 1;
#endif
    if (os_avx) {
        f->avx = (unsigned char)cpu_avx;
        f->fma = (unsigned char)(cpu_avx && cpu_fma);
        f->f16c = (unsigned char)(cpu_avx && cpu_f16c);
        f->avx2 = (unsigned char)(cpu_avx && bit(b7, 5));
        f->avxvnni = (unsigned char)(f->avx2 && bit(a71, 4));
    }
    if (os_avx && os_avx512 && bit(b7, 16)) {
        f->avx512f = 1;
        f->avx512dq = (unsigned char)bit(b7, 17);
        f->avx512bw = (unsigned char)bit(b7, 30);
        f->avx512vl = (unsigned char)bit(b7, 31);
        f->avx512vnni = (unsigned char)bit(c7, 11);
        f->avx512bf16 = (unsigned char)bit(a71, 5);
    }
}

#endif /* EM_CPU_X86 */

#if defined(EM_CPU_ARM64)

static void detect_arm64(em_cpu_features *f) {
    f->neon = 1; /* Advanced SIMD is mandatory in AArch64 */
#if defined(__linux__)
    const unsigned long hwcap = getauxval(AT_HWCAP);
    f->dotprod = (unsigned char)((hwcap >> 20) & 1u); /* HWCAP_ASIMDDP */
#elif defined(__APPLE__)
    int v = sysctl_flag("hw.optional.arm.FEAT_DotProd");
#if defined(TARGET_OS_OSX) && TARGET_OS_OSX
    if (v < 0) v = 1; /* macOS before 12 has no such sysctl; every Apple-silicon Mac has SDOT */
#endif
    f->dotprod = (unsigned char)(v == 1);
#elif defined(_WIN32)
#ifndef PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE
#define PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE 43
#endif
    f->dotprod = (unsigned char)(IsProcessorFeaturePresent(PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE) != 0);
#endif
#if defined(__ARM_FEATURE_DOTPROD)
    f->dotprod = 1; /* the compiler was told every target CPU has it */
#endif
}

#endif /* EM_CPU_ARM64 */

void em_cpu_features_detect(em_cpu_features *f) {
    memset(f, 0, sizeof *f);
#if defined(EM_CPU_X86)
    detect_x86(f);
#elif defined(EM_CPU_ARM64)
    detect_arm64(f);
#endif
}

const char *em_cpu_features_string(const em_cpu_features *f, char *buf, size_t cap) {
    const struct { unsigned char on; const char *name; } names[] = {
        {f->sse2, "sse2"}, {f->ssse3, "ssse3"}, {f->sse41, "sse4.1"}, {f->sse42, "sse4.2"},
        {f->avx, "avx"}, {f->avx2, "avx2"}, {f->fma, "fma"}, {f->f16c, "f16c"},
        {f->avx512f, "avx512f"}, {f->avx512bw, "avx512bw"}, {f->avx512vl, "avx512vl"},
        {f->avx512dq, "avx512dq"}, {f->avx512vnni, "avx512vnni"}, {f->avx512bf16, "avx512bf16"},
        {f->avxvnni, "avxvnni"}, {f->neon, "neon"}, {f->dotprod, "dotprod"},
    };
    size_t used = 0;
    if (cap == 0) return buf;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i) {
        if (!names[i].on) continue;
        const int w = snprintf(buf + used, cap - used, "%s%s", used ? " " : "", names[i].name);
        if (w < 0 || (size_t)w >= cap - used) break;
        used += (size_t)w;
    }
    return buf;
}
