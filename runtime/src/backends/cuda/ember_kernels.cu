// ember_kernels.cu - the device code of ember's GPU backends (CUDA and HIP share it).
//
// Compiled ahead of time on the build host, never at the user's: nvcc 13.3 or NVRTC 12.4 +
// ptxas give one cubin per SM architecture plus PTX for the newest (see
// kiln/toolchains/cuda_device.py); hipcc gives one code-object bundle for a gfx list
// (runtime/src/backends/hip/ember_kernels.hip includes this file). The host side loads the result through
// the driver API (backend_gpu.inc) and calls the kernels below by their extern "C" names.
//
// Self-contained on purpose: no CUDA or C++ library header is included, so NVRTC (which has
// no system headers) and hipcc compile the same text. Block layouts are ggml's, read
// byte-wise from the GGUF data uploaded as is (see runtime/src/cpu/quants.h for each layout).
//
// Kernels (all launched by backend_gpu.inc; "rows" are tokens of the batch):
//   em_matmul_<type>  y[t][r] = W[r] . x[t]; blockDim (32, EM_MM_ROWS), one row per y-thread
//   em_rmsnorm        y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w
//   em_rope           rotate adjacent pairs of every head with a host-made cos/sin table
//   em_kv_store       K and V rows of the batch into the fp16 caches at their positions
//   em_attention      causal softmax(q.K * scale) . V per (head, token), fp16 cache
//   em_swiglu         g = silu(g) * u
//   em_add            x += y

#if defined(__HIPCC__)
#define EM_GLOBAL extern "C" __global__
__device__ inline float em_h2f(unsigned short h) {
    _Float16 v;
    __builtin_memcpy(&v, &h, 2);
    return (float)v;
}
__device__ inline unsigned short em_f2h(float f) {
    _Float16 v = (_Float16)f;
    unsigned short h;
    __builtin_memcpy(&h, &v, 2);
    return h;
}
#define EM_EXPF __expf
#define EM_RSQRTF rsqrtf
#else
#define EM_GLOBAL extern "C" __global__
__device__ inline float em_h2f(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ inline unsigned short em_f2h(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#define EM_EXPF expf
#define EM_RSQRTF rsqrtf
#endif

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

#define EM_MM_ROWS 4
#define EM_THREADS 128

__device__ inline float em_ld16(const u8 *p) { return em_h2f((u16)(p[0] | (p[1] << 8))); }

// ggml type ids (runtime/src/cpu/quants.h em_type)
enum { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8,
       T_Q2_K = 10, T_Q3_K = 11, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_BF16 = 30 };

__device__ inline void em_scale_min_k4(int j, const u8 *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

__device__ inline int em_q3k_scale(const u8 *packed, int j) {
    const int lo = (j < 8) ? (packed[j] & 0x0f) : (packed[j - 8] >> 4);
    const int hi = (packed[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
    return (lo | (hi << 4)) - 32;
}

// Dot of the 32 elements [32*sb, 32*sb + 32) of one weight row with x (already at 32*sb).
template <int T>
__device__ inline float em_sub32_dot(const u8 *row, i64 sb, const float *x) {
    float s = 0.0f;
    if (T == T_F32) {
        const float *w = (const float *)row + sb * 32;
        for (int l = 0; l < 32; l++) s += w[l] * x[l];
    } else if (T == T_F16) {
        const u16 *w = (const u16 *)row + sb * 32;
        for (int l = 0; l < 32; l++) s += em_h2f(w[l]) * x[l];
    } else if (T == T_BF16) {
        const u16 *w = (const u16 *)row + sb * 32;
        for (int l = 0; l < 32; l++) s += __uint_as_float((u32)w[l] << 16) * x[l];
    } else if (T == T_Q4_0) {
        const u8 *b = row + sb * 18;
        const float d = em_ld16(b);
        for (int j = 0; j < 16; j++)
            s += (float)((b[2 + j] & 0x0f) - 8) * x[j] + (float)((b[2 + j] >> 4) - 8) * x[j + 16];
        s *= d;
    } else if (T == T_Q4_1) {
        const u8 *b = row + sb * 20;
        const float d = em_ld16(b), m = em_ld16(b + 2);
        float xs = 0.0f;
        for (int j = 0; j < 16; j++) {
            s += (float)(b[4 + j] & 0x0f) * x[j] + (float)(b[4 + j] >> 4) * x[j + 16];
            xs += x[j] + x[j + 16];
        }
        s = s * d + xs * m;
    } else if (T == T_Q5_0 || T == T_Q5_1) {
        const int off = T == T_Q5_0 ? 2 : 4;
        const u8 *b = row + sb * (T == T_Q5_0 ? 22 : 24);
        const u32 qh = (u32)b[off] | ((u32)b[off + 1] << 8) | ((u32)b[off + 2] << 16) | ((u32)b[off + 3] << 24);
        const u8 *qs = b + off + 4;
        float xs = 0.0f;
        for (int j = 0; j < 32; j++) {
            const int lo = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
            const int q = lo | (int)(((qh >> j) & 1u) << 4);
            s += (float)(T == T_Q5_0 ? q - 16 : q) * x[j];
            xs += x[j];
        }
        s = T == T_Q5_0 ? s * em_ld16(b) : s * em_ld16(b) + xs * em_ld16(b + 2);
    } else if (T == T_Q8_0) {
        const u8 *b = row + sb * 34;
        const i8 *q = (const i8 *)(b + 2);
        for (int j = 0; j < 32; j++) s += (float)q[j] * x[j];
        s *= em_ld16(b);
    } else {
        // K-quants: super-blocks of 256 = 8 sub-blocks of 32
        const int e0 = (int)(sb & 7) * 32;
        if (T == T_Q2_K) {
            const u8 *b = row + (sb >> 3) * 84;
            const u8 *scales = b, *qs = b + 16;
            const float d = em_ld16(b + 80), dmin = em_ld16(b + 82);
            for (int l = 0; l < 32; l++) {
                const int e = e0 + l;
                const int q = (qs[32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
                const int sc = scales[e >> 4];
                s += (d * (float)(sc & 0x0f) * (float)q - dmin * (float)(sc >> 4)) * x[l];
            }
        } else if (T == T_Q3_K) {
            const u8 *b = row + (sb >> 3) * 110;
            const u8 *hmask = b, *qs = b + 32, *scales = b + 96;
            const float d = em_ld16(b + 108);
            for (int l = 0; l < 32; l++) {
                const int e = e0 + l;
                const int lo = (qs[32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
                const int hi = (hmask[e & 31] >> (e >> 5)) & 1;
                s += d * (float)em_q3k_scale(scales, e >> 4) * (float)(lo - (hi ? 0 : 4)) * x[l];
            }
        } else if (T == T_Q4_K || T == T_Q5_K) {
            const u8 *b = row + (sb >> 3) * (T == T_Q4_K ? 144 : 176);
            const float d = em_ld16(b), dmin = em_ld16(b + 2);
            const u8 *scales = b + 4;
            const u8 *qh = b + 16;
            const u8 *qs = b + (T == T_Q4_K ? 16 : 48);
            int sc, m;
            em_scale_min_k4((int)(sb & 7), scales, &sc, &m);
            const float dl = d * (float)sc, ml = dmin * (float)m;
            for (int l = 0; l < 32; l++) {
                const int e = e0 + l;
                const u8 byte = qs[32 * (e >> 6) + (e & 31)];
                int q = (e & 32) ? (byte >> 4) : (byte & 0x0f);
                if (T == T_Q5_K) q |= ((qh[e & 31] >> (e >> 5)) & 1) << 4;
                s += (dl * (float)q - ml) * x[l];
            }
        } else if (T == T_Q6_K) {
            const u8 *b = row + (sb >> 3) * 210;
            const u8 *ql = b, *qh = b + 128;
            const i8 *scales = (const i8 *)(b + 192);
            const float d = em_ld16(b + 208);
            for (int l = 0; l < 32; l++) {
                const int e = e0 + l;
                const int j = e >> 7, t = (e >> 5) & 3, ll = e & 31;
                const u8 lo = ql[64 * j + ll + 32 * (t & 1)];
                const int low = (t < 2) ? (lo & 0x0f) : (lo >> 4);
                const int high = (qh[32 * j + ll] >> (2 * t)) & 3;
                s += d * (float)scales[e >> 4] * (float)((low | (high << 4)) - 32) * x[l];
            }
        }
    }
    return s;
}

// y[t * ne1 + r] = W[r] . x[t * ne0 ...]; grid (ceil(ne1 / EM_MM_ROWS), n_tokens)
template <int T>
__device__ inline void em_matmul_body(const u8 *w, i64 row_bytes, i64 ne0, i64 ne1, const float *x, float *y) {
    __shared__ float part[EM_MM_ROWS][32];
    const i64 r = (i64)blockIdx.x * EM_MM_ROWS + threadIdx.y;
    const i64 t = blockIdx.y;
    float s = 0.0f;
    if (r < ne1) {
        const u8 *row = w + r * row_bytes;
        const float *xt = x + t * ne0;
        for (i64 sb = threadIdx.x; sb < ne0 / 32; sb += 32) s += em_sub32_dot<T>(row, sb, xt + sb * 32);
    }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    for (int k = 16; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) part[threadIdx.y][threadIdx.x] += part[threadIdx.y][threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0 && r < ne1) y[t * ne1 + r] = part[threadIdx.y][0];
}

#define EM_MATMUL(name, T)                                                                          \
    EM_GLOBAL void em_matmul_##name(const u8 *w, i64 row_bytes, i64 ne0, i64 ne1, const float *x, \
                                    float *y) {                                                     \
        em_matmul_body<T>(w, row_bytes, ne0, ne1, x, y);                                            \
    }
EM_MATMUL(f32, T_F32)
EM_MATMUL(f16, T_F16)
EM_MATMUL(bf16, T_BF16)
EM_MATMUL(q4_0, T_Q4_0)
EM_MATMUL(q4_1, T_Q4_1)
EM_MATMUL(q5_0, T_Q5_0)
EM_MATMUL(q5_1, T_Q5_1)
EM_MATMUL(q8_0, T_Q8_0)
EM_MATMUL(q2_K, T_Q2_K)
EM_MATMUL(q3_K, T_Q3_K)
EM_MATMUL(q4_K, T_Q4_K)
EM_MATMUL(q5_K, T_Q5_K)
EM_MATMUL(q6_K, T_Q6_K)

// Sum of v over the block (EM_THREADS threads); every thread gets the result.
__device__ inline float em_block_sum(float v, float *red) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int k = EM_THREADS / 2; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) red[threadIdx.x] += red[threadIdx.x + k];
        __syncthreads();
    }
    const float r = red[0];
    __syncthreads();
    return r;
}

__device__ inline float em_block_max(float v, float *red) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int k = EM_THREADS / 2; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + k]);
        __syncthreads();
    }
    const float r = red[0];
    __syncthreads();
    return r;
}

// grid (n_tokens), block EM_THREADS
EM_GLOBAL void em_rmsnorm(const float *x, const float *w, float *y, i64 n, float eps) {
    __shared__ float red[EM_THREADS];
    const float *xt = x + blockIdx.x * n;
    float *yt = y + blockIdx.x * n;
    float s = 0.0f;
    for (i64 i = threadIdx.x; i < n; i += EM_THREADS) s += xt[i] * xt[i];
    const float mean = em_block_sum(s, red) / (float)n;
    const float scale = 1.0f / sqrtf(mean + eps);
    for (i64 i = threadIdx.x; i < n; i += EM_THREADS) yt[i] = (xt[i] * scale) * w[i];
}

// v: (n_tokens, n_heads * head_dim); cache: (n_tokens, n_rot) cos/sin pairs; grid (n_tokens)
EM_GLOBAL void em_rope(float *v, const float *cache, int n_heads, int head_dim, int n_rot) {
    const i64 t = blockIdx.x;
    float *vt = v + t * (i64)n_heads * head_dim;
    const float *c = cache + t * (i64)n_rot;
    const int pairs = n_rot / 2;
    for (int k = threadIdx.x; k < n_heads * pairs; k += EM_THREADS) {
        const int h = k / pairs, i0 = 2 * (k % pairs);
        float *p = vt + (i64)h * head_dim + i0;
        const float cs = c[i0], sn = c[i0 + 1];
        const float x0 = p[0], x1 = p[1];
        p[0] = fmaf(x0, cs, -(x1 * sn));
        p[1] = fmaf(x0, sn, x1 * cs);
    }
}

// K and V rows (n_tokens, kvd) into the caches (n_ctx, kvd) at pos0..; grid (n_tokens)
EM_GLOBAL void em_kv_store(const float *k, const float *v, u16 *kc, u16 *vc, int kvd, i64 pos0) {
    const i64 t = blockIdx.x;
    for (int i = threadIdx.x; i < kvd; i += EM_THREADS) {
        kc[(pos0 + t) * kvd + i] = em_f2h(k[t * kvd + i]);
        vc[(pos0 + t) * kvd + i] = em_f2h(v[t * kvd + i]);
    }
}

// One (head, token) per block: grid (n_head, n_tokens), block EM_THREADS.
// q (n_tokens, n_head*hd) f32, rounded to fp16 like the CPU path; kc/vc (n_ctx, n_head_kv*hd)
// fp16; scores: scratch (n_tokens, n_head, n_ctx); out (n_tokens, n_head*hd).
EM_GLOBAL void em_attention(const float *q, const u16 *kc, const u16 *vc, float *scores, float *out,
                            int n_head, int n_head_kv, int hd, i64 pos0, i64 n_ctx, float scale) {
    __shared__ float red[EM_THREADS];
    const int h = blockIdx.x;
    const i64 t = blockIdx.y;
    const i64 pos = pos0 + t;
    const int kvh = h / (n_head / n_head_kv);
    const i64 kvd = (i64)n_head_kv * hd;
    const float *qh = q + (t * n_head + h) * hd;
    float *sc = scores + (t * n_head + h) * n_ctx;
    float mx = -__int_as_float(0x7f800000); // -inf (no math header under NVRTC)
    for (i64 j = threadIdx.x; j <= pos; j += EM_THREADS) {
        const u16 *kr = kc + j * kvd + (i64)kvh * hd;
        float s = 0.0f;
        for (int d = 0; d < hd; d++) s += em_h2f(em_f2h(qh[d])) * em_h2f(kr[d]);
        s *= scale;
        sc[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = em_block_max(mx, red);
    float sum = 0.0f;
    for (i64 j = threadIdx.x; j <= pos; j += EM_THREADS) {
        const float e = EM_EXPF(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    sum = em_block_sum(sum, red);
    const float inv = 1.0f / sum;
    for (i64 j = threadIdx.x; j <= pos; j += EM_THREADS) sc[j] = em_h2f(em_f2h(sc[j] * inv));
    __syncthreads();
    float *o = out + (t * n_head + h) * hd;
    for (int d = threadIdx.x; d < hd; d += EM_THREADS) {
        float acc = 0.0f;
        for (i64 j = 0; j <= pos; j++) acc += sc[j] * em_h2f(vc[j * kvd + (i64)kvh * hd + d]);
        o[d] = acc;
    }
}

// grid (ceil(n / EM_THREADS))
EM_GLOBAL void em_swiglu(float *g, const float *u, i64 n) {
    const i64 i = (i64)blockIdx.x * EM_THREADS + threadIdx.x;
    if (i < n) {
        const float x = g[i];
        g[i] = (x / (1.0f + EM_EXPF(-x))) * u[i];
    }
}

EM_GLOBAL void em_add(float *x, const float *y, i64 n) {
    const i64 i = (i64)blockIdx.x * EM_THREADS + threadIdx.x;
    if (i < n) x[i] = x[i] + y[i];
}
