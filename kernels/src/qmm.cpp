// Anvyl's quantized matmul for the CPU.
//
// MLX's CPU quantized_matmul dequantizes one value at a time and does not batch rows; float32
// weights through BLAS are faster but read 8x the bytes. This kernel keeps the weights packed and,
// per output column tile, dequantizes each group once (w = scale * q + bias, in float32, exactly
// what mx.dequantize computes) and multiplies it into every row of x, so a decode step of up to 8
// rows reads the weights once. Output columns are split over a small spinning thread pool.
// With AVX-512, a 4-bit group's 16 possible values (scale * q + bias) are computed once and each
// weight is a table lookup (vpermps) against x permuted per block of 32 (`permute_x`), and every
// tile prefetches the weights 16 rows ahead: at one row that halved the CPU time per 4-bit call.

#include "qmm.h"
#include "strided.h"

#include <immintrin.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/common/utils.h"
#include "mlx/backend/cpu/encoder.h"

namespace anvyl {

namespace {

// ---------------------------------------------------------------- thread pool

// Workers spin for a while after each job (a decode step issues hundreds of small matmuls with
// short gaps), then sleep on a condition variable. Never destroyed: static destructors racing
// MLX's own threads at exit have aborted processes before.
class Pool {
 public:
  static Pool& get() {
    static Pool* pool = new Pool();
    return *pool;
  }

  int size() const {
    return n_threads_;
  }

  void resize(int n) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);
    n = std::max(1, n);
    while (static_cast<int>(workers_) + 1 < n) {
      std::thread(&Pool::work, this).detach();
      workers_++;
    }
    n_threads_ = n;
  }

  // Calls f(i) for i in [0, n_tasks), on this thread and the workers.
  void run(int n_tasks, const std::function<void(int)>& f) {
    if (n_threads_ <= 1 || n_tasks <= 1) {
      for (int i = 0; i < n_tasks; i++) {
        f(i);
      }
      return;
    }
    std::lock_guard<std::mutex> run_lock(run_mutex_);
    job_ = &f;
    n_tasks_ = n_tasks;
    next_.store(0, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    active_limit_ = n_threads_ - 1;
    joined_.store(0, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(sleep_mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    sleep_cv_.notify_all();
    take_tasks();
    while (done_.load(std::memory_order_acquire) < n_tasks) {
      _mm_pause();
    }
    // Workers that joined late may still be reading job_; wait until they left.
    while (busy_.load(std::memory_order_acquire) > 0) {
      _mm_pause();
    }
  }

 private:
  Pool() {
    cpu_set_t set;
    int n = 1;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
      n = CPU_COUNT(&set);
    }
    const char* spin = std::getenv("ANVYL_KERNEL_SPIN_US");
    spin_us_ = spin ? std::atoi(spin) : 300;
    resize(n);
  }

  void take_tasks() {
    int i;
    while ((i = next_.fetch_add(1, std::memory_order_relaxed)) < n_tasks_) {
      (*job_)(i);
      done_.fetch_add(1, std::memory_order_release);
    }
  }

  void work() {
    uint64_t seen = generation_.load(std::memory_order_acquire);
    while (true) {
      auto start = std::chrono::steady_clock::now();
      int spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen) {
        _mm_pause();
        if (++spins % 256 == 0 &&
            std::chrono::steady_clock::now() - start > std::chrono::microseconds(spin_us_)) {
          std::unique_lock<std::mutex> lock(sleep_mutex_);
          sleep_cv_.wait(lock, [&] {
            return generation_.load(std::memory_order_acquire) != seen;
          });
        }
      }
      seen = generation_.load(std::memory_order_acquire);
      busy_.fetch_add(1, std::memory_order_acq_rel);
      // Only as many workers as the current thread count take part.
      if (joined_.fetch_add(1, std::memory_order_acq_rel) < active_limit_ &&
          generation_.load(std::memory_order_acquire) == seen) {
        take_tasks();
      }
      busy_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  std::mutex run_mutex_;
  std::mutex sleep_mutex_;
  std::condition_variable sleep_cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> next_{0};
  std::atomic<int> done_{0};
  std::atomic<int> busy_{0};
  std::atomic<int> joined_{0};
  const std::function<void(int)>* job_ = nullptr;
  int n_tasks_ = 0;
  int active_limit_ = 0;
  int n_threads_ = 1;
  size_t workers_ = 0;
  int spin_us_ = 300;
};

// ---------------------------------------------------------------- scales

enum ScaleType { F32 = 0, F16 = 1, BF16 = 2 };

template <int ST>
inline float scale_at(const void* p, int64_t i) {
  if constexpr (ST == F32) {
    return static_cast<const float*>(p)[i];
  } else if constexpr (ST == F16) {
    return static_cast<float>(static_cast<const _Float16*>(p)[i]);
  } else {
    uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(p)[i]) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
  }
}

struct Problem {
  const float* x;
  const uint8_t* w;
  const void* scales;
  const void* biases;
  float* y;
  int64_t M;
  int64_t K;
  int64_t N;
  int group_size;
};

// ---------------------------------------------------------------- scalar

template <int BITS, int ST>
void columns_scalar(const Problem& p, int64_t o_begin, int64_t o_end) {
  const int64_t row_bytes = p.K * BITS / 8;
  const int64_t groups = p.K / p.group_size;
  std::vector<float> wf(p.K);
  for (int64_t o = o_begin; o < o_end; o++) {
    const uint8_t* wr = p.w + o * row_bytes;
    for (int64_t k = 0; k < p.K; k++) {
      int q;
      if constexpr (BITS == 8) {
        q = wr[k];
      } else if constexpr (BITS == 4) {
        q = (wr[k / 2] >> (4 * (k % 2))) & 0xF;
      } else {  // a little-endian bit stream, as MLX packs 5 bits
        const int64_t bit = k * BITS;
        const int64_t byte = bit / 8;
        int two = wr[byte] | (byte + 1 < row_bytes ? wr[byte + 1] << 8 : 0);
        q = (two >> (bit % 8)) & ((1 << BITS) - 1);
      }
      int64_t g = o * groups + k / p.group_size;
      wf[k] = scale_at<ST>(p.scales, g) * q + scale_at<ST>(p.biases, g);
    }
    for (int64_t m = 0; m < p.M; m++) {
      const float* xr = p.x + m * p.K;
      float acc = 0;
      for (int64_t k = 0; k < p.K; k++) {
        acc += wf[k] * xr[k];
      }
      p.y[m * p.N + o] = acc;
    }
  }
}

// ---------------------------------------------------------------- AVX-512

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))

// 32 consecutive quantized values at `p` as two vectors of 16 floats.
template <int BITS>
AVX512 inline void unpack32_512(const uint8_t* p, __m512& lo, __m512& hi) {
  if constexpr (BITS == 4) {
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    __m128i mask = _mm_set1_epi8(0x0F);
    __m128i l = _mm_and_si128(b, mask);
    __m128i h = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
    lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(l, h)));
    hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(l, h)));
  } else {
    lo = _mm512_cvtepi32_ps(
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    hi = _mm512_cvtepi32_ps(
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
  }
}

#define AVX512VBMI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,fma,f16c")))

// 32 consecutive 5-bit values (20 bytes of MLX's little-endian bit stream) as two vectors of 16
// int32: eight values are 40 bits, five whole bytes, so vpermb gives each qword its five bytes
// and vpmultishiftqb takes the 5-bit fields at bit offsets 0, 5, ..., 35 of each qword.
AVX512VBMI inline void unpack32_5bit(const uint8_t* p, __m512i& q0, __m512i& q1) {
  const __m256i raw = _mm256_maskz_loadu_epi8(0xFFFFF, p);
  const __m256i bytes = _mm256_setr_epi8(
      0, 1, 2, 3, 4, 5, 6, 7, 5, 6, 7, 8, 9, 10, 11, 12,
      10, 11, 12, 13, 14, 15, 16, 17, 15, 16, 17, 18, 19, 20, 21, 22);
  const __m256i offsets = _mm256_set1_epi64x(0x231E19140F0A0500LL);
  __m256i v = _mm256_multishift_epi64_epi8(offsets, _mm256_permutexvar_epi8(bytes, raw));
  v = _mm256_and_si256(v, _mm256_set1_epi8(0x1F));
  q0 = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(v));
  q1 = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(v, 1));
}

// Scales (or biases) [start, start + n) as float32 into `out`, 16 at a time.
template <int ST>
AVX512 void scales_to_f32(const void* p, int64_t start, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const int left = static_cast<int>(std::min<int64_t>(16, n - i));
    const __mmask16 mask = static_cast<__mmask16>((1u << left) - 1);
    __m512 v;
    if constexpr (ST == F32) {
      v = _mm512_maskz_loadu_ps(mask, static_cast<const float*>(p) + start + i);
    } else {
      __m256i h = _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(p) + start + i);
      if constexpr (ST == F16) {
        v = _mm512_cvtph_ps(h);
      } else {
        v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
      }
    }
    _mm512_mask_storeu_ps(out + i, mask, v);
  }
}

// How far ahead a tile prefetches its rows' weights. At one row a tile does little arithmetic per
// byte, and the hardware prefetcher alone left it waiting on memory: 16 rows ahead took 10-45%
// less CPU time per call for 8192x2048 and 2048x8192 4-bit weights (bench/kernel.py --shapes 1b).
constexpr int64_t kPrefetchRows = 16;

// The group values `a` and `c` of one column's group, as every AVX-512 path uses them: 4 bits,
// `a` holds the 16 possible weights (scale * q + bias); 5 bits, `a` and `c` the 32 possible ones;
// 8 bits, `a` and `c` are the scale and bias themselves.
template <int BITS>
AVX512 inline void group_values(__m512 scale, __m512 bias, __m512& a, __m512& c) {
  if constexpr (BITS == 4 || BITS == 5) {
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    a = _mm512_fmadd_ps(iota, scale, bias);
    c = BITS == 5 ? _mm512_fmadd_ps(_mm512_add_ps(iota, _mm512_set1_ps(16)), scale, bias) : bias;
  } else {
    a = scale;
    c = bias;
  }
}

// The 32 weights of one column from element `k`, as two vectors of 16 in the order x is read
// (4 bits: the even then the odd elements, as `permute_x` lays x out; else as stored), from the
// group values `group_values` made. A lookup replaces the conversion and the multiply-add of
// every 4- and 5-bit weight (the same numbers, one fma each).
template <int BITS>
AVX512 inline void weights32(const uint8_t* w, int64_t k, __m512 a, __m512 c, __m512& w0,
                             __m512& w1) {
  if constexpr (BITS == 4) {
    // vpermps reads only the low 4 bits of each index: the low nibble as it is.
    __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k / 2)));
    w0 = _mm512_permutexvar_ps(q, a);
    w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), a);
  } else if constexpr (BITS == 5) {
    __m512i q0, q1;
    unpack32_5bit(w + k * 5 / 8, q0, q1);
    w0 = _mm512_permutex2var_ps(a, q0, c);
    w1 = _mm512_permutex2var_ps(a, q1, c);
  } else {
    unpack32_512<8>(w + k, w0, w1);
    w0 = _mm512_fmadd_ps(w0, a, c);
    w1 = _mm512_fmadd_ps(w1, a, c);
  }
}

// Rows [0, MB) of x against output columns [o, o + NO). 4-bit weights meet x as `permute_x`
// wrote it. Each column's scales and biases are converted to float32 once per tile (16 per
// instruction) into `sb`, so a group costs two broadcast loads instead of six conversions.
template <int BITS, int ST, int MB, int NO>
AVX512 void tile_512(const Problem& p, const float* x, float* y, int64_t o, float* sb) {
  const int64_t row_bytes = p.K * BITS / 8;
  const int64_t groups = p.K / p.group_size;
  const int64_t scale_bytes = ST == F32 ? 4 : 2;
  for (int j = 0; j < NO; j++) {
    scales_to_f32<ST>(p.scales, (o + j) * groups, groups, sb + (2 * j) * groups);
    scales_to_f32<ST>(p.biases, (o + j) * groups, groups, sb + (2 * j + 1) * groups);
    const int64_t ahead = (o + j + kPrefetchRows) * groups * scale_bytes;
    for (int64_t at = 0; at < groups * scale_bytes; at += 64) {
      _mm_prefetch(static_cast<const char*>(p.scales) + ahead + at, _MM_HINT_T0);
      _mm_prefetch(static_cast<const char*>(p.biases) + ahead + at, _MM_HINT_T0);
    }
  }
  __m512 acc[NO][MB];
  for (int j = 0; j < NO; j++) {
    for (int m = 0; m < MB; m++) {
      acc[j][m] = _mm512_setzero_ps();
    }
  }
  const uint8_t* wj[NO];
  for (int j = 0; j < NO; j++) {
    wj[j] = p.w + (o + j) * row_bytes;
  }
  for (int64_t g = 0; g < groups; g++) {
    __m512 a[NO], c[NO];
    for (int j = 0; j < NO; j++) {
      group_values<BITS>(_mm512_set1_ps(sb[(2 * j) * groups + g]),
                         _mm512_set1_ps(sb[(2 * j + 1) * groups + g]), a[j], c[j]);
    }
    for (int c32 = 0; c32 < p.group_size; c32 += 32) {
      const int64_t k = g * p.group_size + c32;
      __m512 w[NO][2];
      for (int j = 0; j < NO; j++) {
        if (BITS == 5 || (k * BITS / 8) % 64 == 0) {  // once per cache line (5 bits: 20 bytes)
          _mm_prefetch(
              reinterpret_cast<const char*>(wj[j] + kPrefetchRows * row_bytes + k * BITS / 8),
              _MM_HINT_T0);
        }
        weights32<BITS>(wj[j], k, a[j], c[j], w[j][0], w[j][1]);
      }
      for (int m = 0; m < MB; m++) {
        __m512 x0 = _mm512_loadu_ps(x + m * p.K + k);
        __m512 x1 = _mm512_loadu_ps(x + m * p.K + k + 16);
        for (int j = 0; j < NO; j++) {
          acc[j][m] = _mm512_fmadd_ps(w[j][0], x0, acc[j][m]);
          acc[j][m] = _mm512_fmadd_ps(w[j][1], x1, acc[j][m]);
        }
      }
    }
  }
  for (int j = 0; j < NO; j++) {
    for (int m = 0; m < MB; m++) {
      y[m * p.N + o + j] = _mm512_reduce_add_ps(acc[j][m]);
    }
  }
}

// Columns [o_begin, o_end) for rows [m0, m0 + MB): tiles of NO columns, then single columns.
template <int BITS, int ST, int MB>
AVX512 void rows_512(const Problem& p, int64_t m0, int64_t o_begin, int64_t o_end, float* sb) {
  constexpr int NO = MB <= 4 ? 4 : 2;
  const float* x = p.x + m0 * p.K;
  float* y = p.y + m0 * p.N;
  int64_t o = o_begin;
  for (; o + NO <= o_end; o += NO) {
    tile_512<BITS, ST, MB, NO>(p, x, y, o, sb);
  }
  for (; o < o_end; o++) {
    tile_512<BITS, ST, MB, 1>(p, x, y, o, sb);
  }
}

template <int BITS, int ST>
void columns_512_buffered(const Problem& p, int64_t o_begin, int64_t o_end);

// From this many rows a call dequantizes each column tile once into a buffer
// (`columns_512_buffered`). Measured with bench/kernel.py at the 1B model's shapes on 2 Zen 4
// cores: the buffered path does 100-117 GFLOP/s at 8 rows against 80-111 for the tiles below,
// and 150-194 against 85-139 from 16 rows up, but half as much at 2-4 rows.
// `ANVYL_QMM_BUFFER_ROWS` moves the threshold (benchmarks; a huge value turns it off).
int64_t buffer_rows() {
  static const int64_t value = [] {
    const char* env = std::getenv("ANVYL_QMM_BUFFER_ROWS");
    const int64_t n = env ? static_cast<int64_t>(std::atoll(env)) : 0;
    return n > 0 ? n : static_cast<int64_t>(8);
  }();
  return value;
}

template <int BITS, int ST>
void columns_512(const Problem& p, int64_t o_begin, int64_t o_end) {
  if (p.M >= buffer_rows()) {
    columns_512_buffered<BITS, ST>(p, o_begin, o_end);
    return;
  }
  // Blocks of 8 rows; a column tile of weights stays in L1 between blocks.
  constexpr int64_t kColumnBlock = 64;
  // Float32 scales and biases of one tile's columns (at most 4).
  thread_local std::vector<float> sb;
  sb.resize(static_cast<size_t>(8 * (p.K / p.group_size)));
  for (int64_t ob = o_begin; ob < o_end; ob += kColumnBlock) {
    int64_t oe = std::min(o_end, ob + kColumnBlock);
    for (int64_t m0 = 0; m0 < p.M; m0 += 8) {
      switch (std::min<int64_t>(8, p.M - m0)) {
        case 1: rows_512<BITS, ST, 1>(p, m0, ob, oe, sb.data()); break;
        case 2: rows_512<BITS, ST, 2>(p, m0, ob, oe, sb.data()); break;
        case 3: rows_512<BITS, ST, 3>(p, m0, ob, oe, sb.data()); break;
        case 4: rows_512<BITS, ST, 4>(p, m0, ob, oe, sb.data()); break;
        case 5: rows_512<BITS, ST, 5>(p, m0, ob, oe, sb.data()); break;
        case 6: rows_512<BITS, ST, 6>(p, m0, ob, oe, sb.data()); break;
        case 7: rows_512<BITS, ST, 7>(p, m0, ob, oe, sb.data()); break;
        default: rows_512<BITS, ST, 8>(p, m0, ob, oe, sb.data()); break;
      }
    }
  }
}

// ---------------------------------------------------------------- AVX-512, many rows
//
// From 8 rows the tiles above redo every column's lookups for each block of 8 rows, and
// stream x from L2 for every 2-4 columns. Here a tile of `kBufferColumns` columns is dequantized
// once into a float32 buffer (the same values, scale * q + bias, in the order x is read) and every
// row of a chunk of x meets it through a 6-row x 4-column register block: 24 accumulators, and
// ten loads for every 24 fmas.

constexpr int kBufferColumns = 4;
constexpr int kBufferRows = 6;

// Column `o` of the weight as float32 into `dst` (K values), in the order x is read: for 4 bits
// the even then the odd elements of each block of 32 (`permute_x`), else as stored.
template <int BITS, int ST>
AVX512 void dequantize_column_512(const Problem& p, int64_t o, float* dst, float* sb) {
  const int64_t row_bytes = p.K * BITS / 8;
  const int64_t groups = p.K / p.group_size;
  scales_to_f32<ST>(p.scales, o * groups, groups, sb);
  scales_to_f32<ST>(p.biases, o * groups, groups, sb + groups);
  const uint8_t* w = p.w + o * row_bytes;
  for (int64_t g = 0; g < groups; g++) {
    __m512 a, c;
    group_values<BITS>(_mm512_set1_ps(sb[g]), _mm512_set1_ps(sb[groups + g]), a, c);
    for (int c32 = 0; c32 < p.group_size; c32 += 32) {
      const int64_t k = g * p.group_size + c32;
      __m512 w0, w1;
      weights32<BITS>(w, k, a, c, w0, w1);
      _mm512_store_ps(dst + k, w0);
      _mm512_store_ps(dst + k + 16, w1);
    }
  }
}

// Rows [0, MB) of x (row stride K) against NO buffered columns (column stride K).
template <int MB, int NO>
AVX512 void block_512(const float* x, const float* wb, int64_t K, float* y, int64_t ldy) {
  __m512 acc[MB][NO];
  for (int m = 0; m < MB; m++) {
    for (int j = 0; j < NO; j++) {
      acc[m][j] = _mm512_setzero_ps();
    }
  }
  for (int64_t k = 0; k < K; k += 16) {
    __m512 w[NO];
    for (int j = 0; j < NO; j++) {
      w[j] = _mm512_load_ps(wb + j * K + k);
    }
    for (int m = 0; m < MB; m++) {
      const __m512 xv = _mm512_loadu_ps(x + m * K + k);
      for (int j = 0; j < NO; j++) {
        acc[m][j] = _mm512_fmadd_ps(w[j], xv, acc[m][j]);
      }
    }
  }
  for (int m = 0; m < MB; m++) {
    for (int j = 0; j < NO; j++) {
      y[m * ldy + j] = _mm512_reduce_add_ps(acc[m][j]);
    }
  }
}

template <int NO>
AVX512 void rows_from_buffer(const float* x, int64_t M, const float* wb, int64_t K, float* y,
                             int64_t ldy) {
  int64_t m = 0;
  for (; m + kBufferRows <= M; m += kBufferRows) {
    block_512<kBufferRows, NO>(x + m * K, wb, K, y + m * ldy, ldy);
  }
  switch (M - m) {
    case 1: block_512<1, NO>(x + m * K, wb, K, y + m * ldy, ldy); break;
    case 2: block_512<2, NO>(x + m * K, wb, K, y + m * ldy, ldy); break;
    case 3: block_512<3, NO>(x + m * K, wb, K, y + m * ldy, ldy); break;
    case 4: block_512<4, NO>(x + m * K, wb, K, y + m * ldy, ldy); break;
    case 5: block_512<5, NO>(x + m * K, wb, K, y + m * ldy, ldy); break;
    default: break;
  }
}

// Rows of x in chunks that stay in L2 (about 512 KB of x), each against every column tile of
// this task's columns.
template <int BITS, int ST>
void columns_512_buffered(const Problem& p, int64_t o_begin, int64_t o_end) {
  const int64_t K = p.K;
  thread_local std::vector<float> storage;
  const int64_t groups = K / p.group_size;
  storage.resize(static_cast<size_t>(kBufferColumns * K + 2 * groups + 16));
  float* wb = reinterpret_cast<float*>(
      (reinterpret_cast<uintptr_t>(storage.data()) + 63) & ~static_cast<uintptr_t>(63));
  float* sb = wb + kBufferColumns * K;
  const int64_t chunk = std::max<int64_t>(
      kBufferRows, (512 * 1024 / (4 * K)) / kBufferRows * kBufferRows);
  for (int64_t m0 = 0; m0 < p.M; m0 += chunk) {
    const int64_t rows = std::min(chunk, p.M - m0);
    const float* x = p.x + m0 * K;
    float* y = p.y + m0 * p.N;
    for (int64_t o = o_begin; o < o_end; o += kBufferColumns) {
      const int no = static_cast<int>(std::min<int64_t>(kBufferColumns, o_end - o));
      for (int j = 0; j < no; j++) {
        dequantize_column_512<BITS, ST>(p, o + j, wb + j * K, sb);
      }
      switch (no) {
        case 1: rows_from_buffer<1>(x, rows, wb, K, y + o, p.N); break;
        case 2: rows_from_buffer<2>(x, rows, wb, K, y + o, p.N); break;
        case 3: rows_from_buffer<3>(x, rows, wb, K, y + o, p.N); break;
        default: rows_from_buffer<4>(x, rows, wb, K, y + o, p.N); break;
      }
    }
  }
}

// x as the 4-bit AVX-512 tiles read it: in each block of 32, the even elements then the odd
// ones, so that the low nibbles of 16 bytes meet the even elements and the high nibbles the odd
// ones without a byte interleave. `n` is a multiple of 32 (K is a multiple of the group size).
AVX512 void permute_x(const float* x, float* out, int64_t n) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (int64_t i = 0; i < n; i += 32) {
    __m512 a = _mm512_loadu_ps(x + i);
    __m512 b = _mm512_loadu_ps(x + i + 16);
    _mm512_storeu_ps(out + i, _mm512_permutex2var_ps(a, even, b));
    _mm512_storeu_ps(out + i + 16, _mm512_permutex2var_ps(a, odd, b));
  }
}

// Rows [o_begin, o_end) of the weight as float32 (scale * q + bias, as mx.dequantize computes).
template <int BITS, int ST>
AVX512 void dequantize_rows_512(const Problem& p, float* out, int64_t o_begin, int64_t o_end) {
  const int64_t row_bytes = p.K * BITS / 8;
  const int64_t groups = p.K / p.group_size;
  for (int64_t o = o_begin; o < o_end; o++) {
    const uint8_t* wr = p.w + o * row_bytes;
    float* dst = out + o * p.K;
    for (int64_t g = 0; g < groups; g++) {
      __m512 s = _mm512_set1_ps(scale_at<ST>(p.scales, o * groups + g));
      __m512 b = _mm512_set1_ps(scale_at<ST>(p.biases, o * groups + g));
      for (int c = 0; c < p.group_size; c += 32) {
        const int64_t k = g * p.group_size + c;
        __m512 lo, hi;
        unpack32_512<BITS>(wr + k * BITS / 8, lo, hi);
        _mm512_storeu_ps(dst + k, _mm512_fmadd_ps(lo, s, b));
        _mm512_storeu_ps(dst + k + 16, _mm512_fmadd_ps(hi, s, b));
      }
    }
  }
}

// ---------------------------------------------------------------- AVX2

#define AVX2 __attribute__((target("avx2,fma,f16c")))

// 16 consecutive quantized values at `p` (k a multiple of 16) as two vectors of 8 floats.
template <int BITS>
AVX2 inline void unpack16_256(const uint8_t* p, __m256& lo, __m256& hi) {
  __m128i v;
  if constexpr (BITS == 4) {
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    __m128i mask = _mm_set1_epi8(0x0F);
    __m128i l = _mm_and_si128(b, mask);
    __m128i h = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
    v = _mm_unpacklo_epi8(l, h);
  } else {
    v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  }
  lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
  hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8)));
}

AVX2 inline float hsum_256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int BITS, int ST, int MB, int NO>
AVX2 void tile_256(const Problem& p, const float* x, float* y, int64_t o) {
  const int64_t row_bytes = p.K * BITS / 8;
  const int64_t groups = p.K / p.group_size;
  __m256 acc[NO][MB];
  for (int j = 0; j < NO; j++) {
    for (int m = 0; m < MB; m++) {
      acc[j][m] = _mm256_setzero_ps();
    }
  }
  for (int64_t g = 0; g < groups; g++) {
    __m256 s[NO], b[NO];
    for (int j = 0; j < NO; j++) {
      s[j] = _mm256_set1_ps(scale_at<ST>(p.scales, (o + j) * groups + g));
      b[j] = _mm256_set1_ps(scale_at<ST>(p.biases, (o + j) * groups + g));
    }
    for (int c = 0; c < p.group_size; c += 16) {
      const int64_t k = g * p.group_size + c;
      __m256 w[NO][2];
      for (int j = 0; j < NO; j++) {
        unpack16_256<BITS>(p.w + (o + j) * row_bytes + k * BITS / 8, w[j][0], w[j][1]);
        w[j][0] = _mm256_fmadd_ps(w[j][0], s[j], b[j]);
        w[j][1] = _mm256_fmadd_ps(w[j][1], s[j], b[j]);
      }
      for (int m = 0; m < MB; m++) {
        __m256 x0 = _mm256_loadu_ps(x + m * p.K + k);
        __m256 x1 = _mm256_loadu_ps(x + m * p.K + k + 8);
        for (int j = 0; j < NO; j++) {
          acc[j][m] = _mm256_fmadd_ps(w[j][0], x0, acc[j][m]);
          acc[j][m] = _mm256_fmadd_ps(w[j][1], x1, acc[j][m]);
        }
      }
    }
  }
  for (int j = 0; j < NO; j++) {
    for (int m = 0; m < MB; m++) {
      y[m * p.N + o + j] = hsum_256(acc[j][m]);
    }
  }
}

template <int BITS, int ST, int MB>
AVX2 void rows_256(const Problem& p, int64_t m0, int64_t o_begin, int64_t o_end) {
  constexpr int NO = MB <= 2 ? 2 : 1;
  const float* x = p.x + m0 * p.K;
  float* y = p.y + m0 * p.N;
  int64_t o = o_begin;
  for (; o + NO <= o_end; o += NO) {
    tile_256<BITS, ST, MB, NO>(p, x, y, o);
  }
  for (; o < o_end; o++) {
    tile_256<BITS, ST, MB, 1>(p, x, y, o);
  }
}

template <int BITS, int ST>
void columns_256(const Problem& p, int64_t o_begin, int64_t o_end) {
  constexpr int64_t kColumnBlock = 64;
  for (int64_t ob = o_begin; ob < o_end; ob += kColumnBlock) {
    int64_t oe = std::min(o_end, ob + kColumnBlock);
    for (int64_t m0 = 0; m0 < p.M; m0 += 4) {
      switch (std::min<int64_t>(4, p.M - m0)) {
        case 1: rows_256<BITS, ST, 1>(p, m0, ob, oe); break;
        case 2: rows_256<BITS, ST, 2>(p, m0, ob, oe); break;
        case 3: rows_256<BITS, ST, 3>(p, m0, ob, oe); break;
        default: rows_256<BITS, ST, 4>(p, m0, ob, oe); break;
      }
    }
  }
}

// ---------------------------------------------------------------- dispatch

enum class Isa { Scalar, Avx2, Avx512 };

Isa detect_isa() {
  const char* forced = std::getenv("ANVYL_KERNEL_ISA");
  __builtin_cpu_init();
  bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c");
  if (forced && std::strcmp(forced, "scalar") == 0) {
    return Isa::Scalar;
  }
  if (forced && std::strcmp(forced, "avx2") == 0 && avx2) {
    return Isa::Avx2;
  }
  return avx512 ? Isa::Avx512 : avx2 ? Isa::Avx2 : Isa::Scalar;
}

Isa isa() {
  static Isa value = detect_isa();
  return value;
}

using ColumnsFn = void (*)(const Problem&, int64_t, int64_t);

bool has_vbmi() {
  static bool value = (__builtin_cpu_init(), __builtin_cpu_supports("avx512vbmi"));
  return value;
}

template <int BITS, int ST>
ColumnsFn pick_isa() {
  if constexpr (BITS == 5) {  // the AVX-512 path needs VBMI; no AVX2 path
    return isa() == Isa::Avx512 && has_vbmi() ? columns_512<BITS, ST> : columns_scalar<BITS, ST>;
  } else {
    switch (isa()) {
      case Isa::Avx512: return columns_512<BITS, ST>;
      case Isa::Avx2: return columns_256<BITS, ST>;
      default: return columns_scalar<BITS, ST>;
    }
  }
}

template <int BITS>
ColumnsFn pick_scale(mx::Dtype dtype) {
  if (dtype == mx::float16) {
    return pick_isa<BITS, F16>();
  }
  if (dtype == mx::bfloat16) {
    return pick_isa<BITS, BF16>();
  }
  return pick_isa<BITS, F32>();
}

// One pass over every weight of `problems` (same x): the column ranges of all of them are split
// into tasks together, so q/k/v or gate/up cost one thread-pool round instead of several.
void run(const std::vector<Problem>& problems, ColumnsFn columns) {
  Pool& pool = Pool::get();
  const int threads = pool.size();
  int64_t total = 0;
  for (const auto& p : problems) {
    total += p.N;
  }
  // Column chunks of a multiple of 8, about two per thread so a late worker costs little.
  int64_t chunk = (total + threads * 2 - 1) / (threads * 2);
  chunk = std::max<int64_t>(8, (chunk + 7) / 8 * 8);
  struct Task {
    int problem;
    int64_t begin;
    int64_t end;
  };
  std::vector<Task> tasks;
  for (int i = 0; i < static_cast<int>(problems.size()); i++) {
    for (int64_t begin = 0; begin < problems[i].N; begin += chunk) {
      tasks.push_back({i, begin, std::min(problems[i].N, begin + chunk)});
    }
  }
  pool.run(static_cast<int>(tasks.size()), [&](int i) {
    const Task& t = tasks[i];
    columns(problems[t.problem], t.begin, t.end);
  });
}

} // namespace

void set_num_threads(int n) {
  Pool::get().resize(n);
}

int num_threads() {
  return Pool::get().size();
}

void parallel_for(int n_tasks, const std::function<void(int)>& f) {
  Pool::get().run(n_tasks, f);
}

std::string simd() {
  switch (isa()) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

std::vector<mx::array> qmm_many(
    const mx::array& x,
    const std::vector<mx::array>& ws,
    const std::vector<mx::array>& scales,
    const std::vector<mx::array>& biases,
    int group_size,
    int bits,
    mx::StreamOrDevice s) {
  if (bits != 4 && bits != 5 && bits != 8) {
    throw std::invalid_argument("[anvyl.qmm] bits must be 4, 5 or 8.");
  }
  if (group_size % 32 != 0 || group_size <= 0) {
    throw std::invalid_argument("[anvyl.qmm] group_size must be a multiple of 32.");
  }
  if (ws.empty() || ws.size() != scales.size() || ws.size() != biases.size() || x.ndim() < 1) {
    throw std::invalid_argument("[anvyl.qmm] needs as many scales and biases as weights.");
  }
  const int K = x.shape(-1);
  auto stream = mx::to_stream(s);
  if (stream.device != mx::Device::cpu) {
    std::vector<mx::array> outs;
    for (size_t i = 0; i < ws.size(); i++) {
      outs.push_back(mx::quantized_matmul(
          x, ws[i], scales[i], biases[i], true, group_size, bits, "affine", s));
    }
    return outs;
  }
  // Weights are evaluated parameters, row-major as stored; x is gathered in eval_cpu when it is
  // a strided view (an extra graph node per call costs more than the copy).
  auto row_major = [&](const mx::array& a) {
    return a.is_available() && a.flags().row_contiguous ? a : mx::contiguous(a, false, s);
  };
  std::vector<mx::array> inputs{x.dtype() == mx::float32 ? x : mx::astype(x, mx::float32, s)};
  std::vector<mx::Shape> shapes;
  for (size_t i = 0; i < ws.size(); i++) {
    const auto& w = ws[i];
    if (w.dtype() != mx::uint32 || w.ndim() != 2) {
      throw std::invalid_argument("[anvyl.qmm] w must be a 2-D uint32 array.");
    }
    const int N = w.shape(0);
    if (static_cast<int64_t>(w.shape(1)) * 32 / bits != K || K % group_size != 0 ||
        scales[i].shape() != mx::Shape{N, K / group_size} ||
        biases[i].shape() != scales[i].shape() || biases[i].dtype() != scales[i].dtype() ||
        scales[i].dtype() != scales[0].dtype()) {
      throw std::invalid_argument("[anvyl.qmm] shapes of x, w, scales and biases do not match.");
    }
    inputs.push_back(row_major(w));
    inputs.push_back(row_major(scales[i]));
    inputs.push_back(row_major(biases[i]));
    auto shape = x.shape();
    shape.back() = N;
    shapes.push_back(shape);
  }
  std::vector<mx::Dtype> dtypes(ws.size(), mx::float32);
  auto outs = mx::array::make_arrays(
      std::move(shapes), dtypes, std::make_shared<QMM>(stream, group_size, bits), inputs);
  if (x.dtype() != mx::float32) {
    for (auto& out : outs) {
      out = mx::astype(out, x.dtype(), s);
    }
  }
  return outs;
}

mx::array qmm(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    mx::StreamOrDevice s) {
  return qmm_many(x, {w}, {scales}, {biases}, group_size, bits, s)[0];
}

void QMM::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& x = inputs[0];
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const auto& a : inputs) {
    if (&a != &x && !a.flags().row_contiguous) {
      throw std::runtime_error("[anvyl.qmm] weights must be row contiguous.");
    }
    encoder.set_input_array(a);
  }
  for (auto& out : outputs) {
    out.set_data(mx::allocator::malloc(out.nbytes()));
    encoder.set_output_array(out);
  }
  const int64_t K = x.shape(-1);
  const float* x_ptr = x.data<float>();
  if (!x.flags().row_contiguous) {
    mx::array packed(x.shape(), mx::float32, nullptr, {});
    packed.set_data(mx::allocator::malloc(packed.nbytes()));
    encoder.add_temporary(packed);
    encoder.set_output_array(packed);
    float* dst = packed.data<float>();
    encoder.dispatch([src = x_ptr, dst, shape = x.shape(), strides = x.strides(), n = x.size()]() {
      gather_strided(src, dst, shape, strides, n);
    });
    x_ptr = dst;
  }
  std::vector<Problem> problems;
  for (size_t i = 0; i < outputs.size(); i++) {
    const auto& w = inputs[1 + 3 * i];
    problems.push_back(Problem{
        x_ptr,
        reinterpret_cast<const uint8_t*>(w.data<uint32_t>()),
        inputs[2 + 3 * i].data<void>(),
        inputs[3 + 3 * i].data<void>(),
        outputs[i].data<float>(),
        static_cast<int64_t>(x.size()) / K,
        K,
        static_cast<int64_t>(w.shape(0)),
        group_size_});
  }
  const auto scale_dtype = inputs[2].dtype();
  ColumnsFn columns = bits_ == 4 ? pick_scale<4>(scale_dtype)
      : bits_ == 5                ? pick_scale<5>(scale_dtype)
                                  : pick_scale<8>(scale_dtype);
  const bool permute = bits_ == 4 && isa() == Isa::Avx512;
  encoder.dispatch([problems = std::move(problems), columns, permute, x_ptr, n = x.size()]() {
    if (!permute) {
      run(problems, columns);
      return;
    }
    std::vector<float> permuted(n);
    permute_x(x_ptr, permuted.data(), static_cast<int64_t>(n));
    auto with_permuted = problems;
    for (auto& p : with_permuted) {
      p.x = permuted.data();
    }
    run(with_permuted, columns);
  });
}

bool has_avx512() {
  return isa() == Isa::Avx512;
}

std::vector<int> simd_bits() {
  switch (isa()) {
    case Isa::Avx512: return has_vbmi() ? std::vector<int>{4, 5, 8} : std::vector<int>{4, 8};
    case Isa::Avx2: return {4, 8};
    default: return {};
  }
}

mx::array dequantize(
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    mx::StreamOrDevice s) {
  auto stream = mx::to_stream(s);
  if (stream.device != mx::Device::cpu || !has_avx512() || (bits != 4 && bits != 8) ||
      group_size % 32 != 0 || w.dtype() != mx::uint32 || w.ndim() != 2 ||
      !w.is_available() || !w.flags().row_contiguous || !scales.is_available() ||
      !scales.flags().row_contiguous || !biases.is_available() ||
      !biases.flags().row_contiguous) {
    return mx::dequantize(
        w,
        mx::astype(scales, mx::float32, s),
        mx::astype(biases, mx::float32, s),
        group_size,
        bits,
        "affine",
        std::nullopt,
        std::nullopt,
        s);
  }
  const int N = w.shape(0);
  const int K = static_cast<int>(static_cast<int64_t>(w.shape(1)) * 32 / bits);
  if (K % group_size != 0 || scales.shape() != mx::Shape{N, K / group_size} ||
      biases.shape() != scales.shape() || biases.dtype() != scales.dtype()) {
    throw std::invalid_argument("[anvyl.dequantize] shapes of w, scales and biases do not match.");
  }
  return mx::array(
      mx::Shape{N, K},
      mx::float32,
      std::make_shared<Dequantize>(stream, group_size, bits),
      {w, scales, biases});
}

void Dequantize::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& w = inputs[0];
  auto& out = outputs[0];
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const auto& a : inputs) {
    encoder.set_input_array(a);
  }
  encoder.set_output_array(out);
  Problem p{
      nullptr,
      reinterpret_cast<const uint8_t*>(w.data<uint32_t>()),
      inputs[1].data<void>(),
      inputs[2].data<void>(),
      nullptr,
      0,
      out.shape(1),
      out.shape(0),
      group_size_};
  using RowsFn = void (*)(const Problem&, float*, int64_t, int64_t);
  RowsFn rows;
  const auto dtype = inputs[1].dtype();
  const int st = dtype == mx::float16 ? F16 : dtype == mx::bfloat16 ? BF16 : F32;
  if (bits_ == 4) {
    rows = st == F16 ? dequantize_rows_512<4, F16>
        : st == BF16 ? dequantize_rows_512<4, BF16>
                     : dequantize_rows_512<4, F32>;
  } else {
    rows = st == F16 ? dequantize_rows_512<8, F16>
        : st == BF16 ? dequantize_rows_512<8, BF16>
                     : dequantize_rows_512<8, F32>;
  }
  encoder.dispatch([p, rows, y = out.data<float>()]() { rows(p, y, 0, p.N); });
}

void Dequantize::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("[anvyl.dequantize] has no GPU implementation.");
}

bool Dequantize::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const Dequantize&>(other);
  return group_size_ == o.group_size_ && bits_ == o.bits_;
}

void QMM::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("[anvyl.qmm] has no GPU implementation (qmm uses quantized_matmul).");
}

bool QMM::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const QMM&>(other);
  return group_size_ == o.group_size_ && bits_ == o.bits_;
}

} // namespace anvyl
