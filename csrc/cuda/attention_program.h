// The CUDA cross_attention's algorithm, written once for the GPU kernel (csrc/cuda/attention.cu) and for a host
// run of the very same phases (module.cpp's _cross_attention_gpu_steps, compared with numpy in the tests on
// machines without a GPU).
//
// A block of 128 threads owns a tile of 64 query rows and streams over tiles of 64 keys with an online softmax
// (no Lq x Lk matrix exists). Threads form a 16 x 8 grid: thread (rg, cg) holds the scores of rows
// 4 rg .. 4 rg + 3 against 8 keys of the tile (tile_key), and the output of those rows at the head dims
// DD cg .. DD cg + DD - 1, in registers (DD = Dp / 8, Dp = D rounded up to 32). Per key tile, four phases
// separated by barriers:
//   KV      keys (transposed) and values of the tile into shared memory
//   SCORES  S = (q * scale * log2 e) k^T for the thread's 4 x 8 block; each row's partial max to shared memory
//   SOFTMAX the row max over the 8 threads of a row, P = 2^(S - max), O and l rescaled; P (transposed) and the
//           partial row sums to shared memory
//   PV      l += the row sums; O += P V for the thread's 4 rows x DD dims
// A phase writes shared memory that no other thread reads in the same phase, so its result does not depend on
// the order its threads run in: the GPU separates phases by __syncthreads(), the host runs them one after the
// other (each emulated thread keeps its registers in a State).
#pragma once
#include <cstdint>
#include <cstring>

#include "cuda/host_device.h"

namespace dde {
namespace gpu_attention {

constexpr int BQ = 64, BK = 64, kThreads = 128;
constexpr int CG = 8;             // column groups: threads per row block
constexpr int TR = 4, TKEYS = 8;  // rows and keys per thread
constexpr int QPAD = BQ + 4, KPAD = BK + 4;  // row strides of the transposed tiles (multiples of 4 for 16-byte loads)
constexpr int kMaxD = 128;
constexpr float kLog2e = 1.44269504088896341f;  // scores are kept in the base-2 domain: q * scale * log2(e)
static_assert(kThreads == (BQ / TR) * CG && BK == CG * TKEYS && TKEYS == 8, "the thread grid must cover the tiles");

DDE_HD int padded_dim(int D) { return (D + 31) / 32 * 32; }

// The tile key of a thread's score j: keys 4 cg .. 4 cg + 3 and 32 + 4 cg .. 32 + 4 cg + 3, so that the 8 threads
// of a row read 128 contiguous bytes of a transposed key row per vector load (no shared-memory bank conflicts).
DDE_HD int tile_key(int cg, int j) { return (j / 4) * (BK / 2) + cg * 4 + j % 4; }

struct Tiles {
  float* qt;   // [Dp][QPAD]: q * scale * log2(e), transposed
  float* kt;   // [Dp][KPAD]: the key tile, transposed
  float* v;    // [BK][Dp]:   the value tile
  float* pt;   // [BK][QPAD]: probabilities, transposed
  float* mx;   // [BQ][CG]:   partial row maxima
  float* sum;  // [BQ][CG]:   partial row sums
};

inline int64_t tile_floats(int Dp) {
  return static_cast<int64_t>(Dp) * QPAD + static_cast<int64_t>(Dp) * KPAD + BK * Dp + BK * QPAD + 2 * BQ * CG;
}

DDE_HD Tiles carve(float* base, int Dp) {
  Tiles t;
  t.qt = base;
  t.kt = t.qt + Dp * QPAD;
  t.v = t.kt + Dp * KPAD;
  t.pt = t.v + BK * Dp;
  t.mx = t.pt + BK * QPAD;
  t.sum = t.mx + BQ * CG;
  return t;
}

// One group (batch x head) and the block's query tile.
struct Problem {
  const float *q, *k, *v;  // (L, D) slabs of the group
  float* out;
  int Lq, Lk, D, Dp, row0;
  float qscale;  // scale * log2(e)
};

template <int DD>
struct State {
  float o[TR][DD];
  float s[TR][TKEYS];
  float m[TR], l[TR];
};

struct f4 {
  float a[4];
};

// 4 floats from a 16-byte-aligned address (one vector load on the GPU)
DDE_HD f4 load4(const float* p) {
  f4 r;
#ifdef __CUDA_ARCH__
  const float4 v = *reinterpret_cast<const float4*>(p);
  r.a[0] = v.x, r.a[1] = v.y, r.a[2] = v.z, r.a[3] = v.w;
#else
  std::memcpy(r.a, p, sizeof(r.a));
#endif
  return r;
}

DDE_HD float exp2_(float x) {
#ifdef __CUDA_ARCH__
  return exp2f(x);
#else
  return std::exp2(x);
#endif
}

template <int DD>
DDE_HD void init_state(State<DD>& st) {
  for (int i = 0; i < TR; ++i) {
    st.m[i] = -INFINITY;
    st.l[i] = 0.f;
    for (int t = 0; t < DD; ++t) st.o[i][t] = 0.f;
  }
}

// the query tile, scaled and transposed (rows past Lq and dims past D are 0)
DDE_HD void load_queries(const Problem& pb, const Tiles& sh, int tid, int nthreads) {
  for (int i = tid; i < BQ * pb.Dp; i += nthreads) {
    const int r = i / pb.Dp, d = i % pb.Dp, row = pb.row0 + r;
    sh.qt[d * QPAD + r] = row < pb.Lq && d < pb.D ? pb.q[static_cast<int64_t>(row) * pb.D + d] * pb.qscale : 0.f;
  }
}

// phase KV: keys j0 .. j0 + BK - 1 (transposed) and their values (keys past Lk and dims past D are 0)
DDE_HD void load_keys_values(const Problem& pb, const Tiles& sh, int j0, int tid, int nthreads) {
  for (int i = tid; i < BK * pb.Dp; i += nthreads) {
    const int j = i / pb.Dp, d = i % pb.Dp, key = j0 + j;
    const bool valid = key < pb.Lk && d < pb.D;
    const int64_t at = static_cast<int64_t>(key) * pb.D + d;
    sh.kt[d * KPAD + j] = valid ? pb.k[at] : 0.f;
    sh.v[j * pb.Dp + d] = valid ? pb.v[at] : 0.f;
  }
}

// phase SCORES
template <int DD>
DDE_HD void scores(const Problem& pb, const Tiles& sh, int j0, State<DD>& st, int tid) {
  const int rg = tid / CG, cg = tid % CG;
  for (int i = 0; i < TR; ++i)
    for (int j = 0; j < TKEYS; ++j) st.s[i][j] = 0.f;
  for (int d = 0; d < pb.Dp; ++d) {
    const f4 qa = load4(sh.qt + d * QPAD + rg * TR);
    const f4 k0 = load4(sh.kt + d * KPAD + tile_key(cg, 0)), k1 = load4(sh.kt + d * KPAD + tile_key(cg, 4));
    for (int i = 0; i < TR; ++i)
      for (int j = 0; j < 4; ++j) {
        st.s[i][j] += qa.a[i] * k0.a[j];
        st.s[i][j + 4] += qa.a[i] * k1.a[j];
      }
  }
  for (int i = 0; i < TR; ++i) {
    float mx = -INFINITY;
    for (int j = 0; j < TKEYS; ++j) {
      if (j0 + tile_key(cg, j) >= pb.Lk) st.s[i][j] = -INFINITY;  // past the last key
      mx = st.s[i][j] > mx ? st.s[i][j] : mx;
    }
    sh.mx[(rg * TR + i) * CG + cg] = mx;
  }
}

// phase SOFTMAX
template <int DD>
DDE_HD void softmax(const Tiles& sh, State<DD>& st, int tid) {
  const int rg = tid / CG, cg = tid % CG;
  for (int i = 0; i < TR; ++i) {
    const int row = rg * TR + i;
    float mx = st.m[i];
    for (int c = 0; c < CG; ++c) mx = sh.mx[row * CG + c] > mx ? sh.mx[row * CG + c] : mx;
    const float corr = exp2_(st.m[i] - mx);  // 0 on the first tile (m = -inf; every tile has a real key)
    st.m[i] = mx;
    st.l[i] *= corr;
    for (int t = 0; t < DD; ++t) st.o[i][t] *= corr;
    float psum = 0.f;
    for (int j = 0; j < TKEYS; ++j) {
      const float p = exp2_(st.s[i][j] - mx);
      sh.pt[tile_key(cg, j) * QPAD + row] = p;
      psum += p;
    }
    sh.sum[row * CG + cg] = psum;
  }
}

// phase PV
template <int DD>
DDE_HD void accumulate_pv(const Problem& pb, const Tiles& sh, State<DD>& st, int tid) {
  const int rg = tid / CG, cg = tid % CG;
  for (int i = 0; i < TR; ++i)
    for (int c = 0; c < CG; ++c) st.l[i] += sh.sum[(rg * TR + i) * CG + c];
  for (int j = 0; j < BK; ++j) {
    const f4 pa = load4(sh.pt + j * QPAD + rg * TR);
    for (int t0 = 0; t0 < DD; t0 += 4) {
      const f4 vb = load4(sh.v + j * pb.Dp + cg * DD + t0);
      for (int i = 0; i < TR; ++i)
        for (int t = 0; t < 4; ++t) st.o[i][t0 + t] += pa.a[i] * vb.a[t];
    }
  }
}

// the thread's rows of the output: O / l (rows past Lq and dims past D are not written)
template <int DD>
DDE_HD void store(const Problem& pb, const State<DD>& st, int tid) {
  const int rg = tid / CG, cg = tid % CG;
  for (int i = 0; i < TR; ++i) {
    const int row = pb.row0 + rg * TR + i;
    if (row >= pb.Lq) continue;
    const float inv = 1.0f / st.l[i];
    for (int t = 0; t < DD; ++t) {
      const int d = cg * DD + t;
      if (d < pb.D) pb.out[static_cast<int64_t>(row) * pb.D + d] = st.o[i][t] * inv;
    }
  }
}

}  // namespace gpu_attention
}  // namespace dde
