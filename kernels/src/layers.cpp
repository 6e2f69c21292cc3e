// The non-matmul parts of a decoder layer as single CPU primitives (see layers.h).
//
// Inputs may be strided views (a transposed projection, a slice of a KV cache buffer): rows are
// addressed through the array's strides, and an input whose last axis is not contiguous is
// gathered into a temporary first. All arithmetic is float32.

#include "layers.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "qmm.h"
#include "strided.h"

namespace anvyl {

namespace {

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
// Bodies shared by the AVX-512 and generic entry points, compiled into each.
#define BODY inline __attribute__((always_inline))

// A float32 input as rows of its last axis: the row pointers are computed from the strides, or
// from a packed copy when the last axis is not contiguous (made when the task runs).
struct Rows {
  const float* base = nullptr;
  std::vector<int64_t> offsets;
  int64_t width = 0;
  // Set when a gather is needed: the source, its layout and the destination.
  const float* base_src = nullptr;
  float* packed = nullptr;
  mx::Shape shape;
  mx::Strides strides;

  const float* row(int64_t r) const {
    return base + offsets[r];
  }

  // Runs on the encoder's thread, before any row is read.
  void prepare() const {
    if (packed == nullptr) {
      return;
    }
    gather_strided(base_src, packed, shape, strides, static_cast<size_t>(offsets.size() * width));
  }
};

Rows rows_of(const mx::array& a, mx::cpu::CommandEncoder& encoder) {
  Rows r;
  const int nd = static_cast<int>(a.ndim());
  r.width = nd == 0 ? 1 : a.shape(-1);
  const int64_t n_rows = r.width == 0 ? 0 : static_cast<int64_t>(a.size()) / r.width;
  r.offsets.resize(n_rows);
  if (nd > 0 && a.shape(-1) > 1 && a.strides()[nd - 1] != 1) {
    mx::array packed(a.shape(), mx::float32, nullptr, {});
    packed.set_data(mx::allocator::malloc(packed.nbytes()));
    encoder.add_temporary(packed);
    r.packed = packed.data<float>();
    r.base_src = a.data<float>();
    r.shape = a.shape();
    r.strides = a.strides();
    r.base = r.packed;
    for (int64_t i = 0; i < n_rows; i++) {
      r.offsets[i] = i * r.width;
    }
    return r;
  }
  r.base = a.data<float>();
  for (int64_t i = 0; i < n_rows; i++) {
    int64_t off = 0;
    int64_t rest = i;
    for (int d = nd - 2; d >= 0; d--) {
      off += (rest % a.shape(d)) * a.strides()[d];
      rest /= a.shape(d);
    }
    r.offsets[i] = off;
  }
  return r;
}

// Allocates every output and registers inputs and outputs with the encoder (every op's start).
void bind(
    mx::cpu::CommandEncoder& encoder,
    const std::vector<mx::array>& inputs,
    std::vector<mx::array>& outputs) {
  for (const auto& a : inputs) {
    encoder.set_input_array(a);
  }
  for (auto& out : outputs) {
    out.set_data(mx::allocator::malloc(out.nbytes()));
    encoder.set_output_array(out);
  }
}

void check_cpu(const mx::Stream& stream, const char* op) {
  if (stream.device != mx::Device::cpu) {
    throw std::invalid_argument(std::string("[anvyl.") + op + "] runs on the CPU only.");
  }
}

mx::array as_float32(const mx::array& a, mx::StreamOrDevice s) {
  return a.dtype() == mx::float32 ? a : mx::astype(a, mx::float32, s);
}

// ---------------------------------------------------------------- rms_norm

BODY void rms_norm_row(const float* x, const float* w, float* y, int64_t n, float eps) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; j++) {
      acc[j] += x[i + j] * x[i + j];
    }
  }
  float sum = 0;
  for (int j = 0; j < 16; j++) {
    sum += acc[j];
  }
  for (; i < n; i++) {
    sum += x[i] * x[i];
  }
  const float r = 1.0f / std::sqrt(sum / static_cast<float>(n) + eps);
  for (i = 0; i < n; i++) {
    y[i] = w[i] * (x[i] * r);
  }
}

// `res` (or null): a residual added to each normalized row (`res + norm(x)`, Gemma's blocks).
BODY void rms_norm_rows(const Rows& x, const float* w, const Rows* res, float* y, float eps) {
  for (size_t r = 0; r < x.offsets.size(); r++) {
    float* yr = y + r * x.width;
    rms_norm_row(x.row(r), w, yr, x.width, eps);
    if (res != nullptr) {
      const float* rr = res->row(r);
      for (int64_t i = 0; i < x.width; i++) {
        yr[i] = rr[i] + yr[i];
      }
    }
  }
}

void rms_norm_rows_any(const Rows& x, const float* w, const Rows* res, float* y, float eps) {
  rms_norm_rows(x, w, res, y, eps);
}

AVX512 void rms_norm_rows_512(const Rows& x, const float* w, const Rows* res, float* y, float eps) {
  rms_norm_rows(x, w, res, y, eps);
}

// ---------------------------------------------------------------- swiglu, geglu

BODY float silu(float g) {
  return g / (1.0f + std::exp(-g));
}

// MLX's `nn.gelu_approx`: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))).
BODY float gelu_approx(float g) {
  return 0.5f * g * (1.0f + std::tanh(0.7978845608028654f * (g + 0.044715f * (g * g * g))));
}

template <bool GELU>
BODY void gated_rows(const Rows& g, const Rows& u, float* y) {
  for (size_t r = 0; r < g.offsets.size(); r++) {
    const float* gr = g.row(r);
    const float* ur = u.row(r);
    float* yr = y + r * g.width;
    for (int64_t i = 0; i < g.width; i++) {
      if constexpr (GELU) {
        yr[i] = gelu_approx(gr[i]) * ur[i];
      } else {
        yr[i] = silu(gr[i]) * ur[i];
      }
    }
  }
}

void gated_rows_any(const Rows& g, const Rows& u, float* y, bool gelu) {
  gelu ? gated_rows<true>(g, u, y) : gated_rows<false>(g, u, y);
}

AVX512 void gated_rows_512(const Rows& g, const Rows& u, float* y, bool gelu) {
  gelu ? gated_rows<true>(g, u, y) : gated_rows<false>(g, u, y);
}

// ---------------------------------------------------------------- attention

struct AttentionProblem {
  // q[b, h, l, :], k/v[b, h, s, :] through strides; the last axis contiguous. Keys and values
  // are float32 or float16 (a half-size KV cache), per `kv_half`.
  const float* q;
  const void* k;
  const void* v;
  bool kv_half;
  int64_t qs[3];
  int64_t ks[3];
  int64_t vs[3];
  int64_t B, Hq, Hkv, L, S, D;
  float scale;
  // The mask through broadcast strides (0 where it broadcasts), or null.
  const void* mask;
  bool mask_bool;
  int64_t ms[4];
  bool causal;
  float softcap;  // 0: none
  float* out;  // (B, L, Hq * D)
};

template <typename KV>
BODY float dot(const float* a, const KV* b, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; j++) {
      acc[j] += a[i + j] * static_cast<float>(b[i + j]);
    }
  }
  float sum = 0;
  for (int j = 0; j < 16; j++) {
    sum += acc[j];
  }
  for (; i < n; i++) {
    sum += a[i] * static_cast<float>(b[i]);
  }
  return sum;
}

// 16 lanes at a time with explicit AVX-512 (float16 keys and values converted by vcvtph2ps).
template <typename KV>
AVX512 inline __m512 load16(const KV* p) {
  if constexpr (sizeof(KV) == 2) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  } else {
    return _mm512_loadu_ps(p);
  }
}

template <typename KV>
AVX512 float dot_512(const float* a, const KV* b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), load16(b + i), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

template <typename KV>
AVX512 void axpy_512(float w, const KV* v, float* o, int64_t n) {
  const __m512 wv = _mm512_set1_ps(w);
  for (int64_t i = 0; i < n; i += 16) {
    _mm512_storeu_ps(o + i, _mm512_fmadd_ps(wv, load16(v + i), _mm512_loadu_ps(o + i)));
  }
}

// WIDE: the AVX-512 entry point, for head sizes that are a multiple of 16.
template <typename KV, bool WIDE>
BODY void attend(const AttentionProblem& p, int64_t b, int64_t h, float* scores, float* qbuf) {
  const int64_t kvh = h / (p.Hq / p.Hkv);
  const KV* kb = static_cast<const KV*>(p.k) + b * p.ks[0] + kvh * p.ks[1];
  const KV* vb = static_cast<const KV*>(p.v) + b * p.vs[0] + kvh * p.vs[1];
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t l = 0; l < p.L; l++) {
    const float* qr = p.q + b * p.qs[0] + h * p.qs[1] + l * p.qs[2];
    for (int64_t d = 0; d < p.D; d++) {
      qbuf[d] = qr[d] * p.scale;
    }
    const int64_t visible = p.causal ? l + p.S - p.L + 1 : p.S;
    float best = neg_inf;
    for (int64_t s = 0; s < p.S; s++) {
      float score = neg_inf;
      if (s < visible) {
        if constexpr (WIDE) {
          score = dot_512(qbuf, kb + s * p.ks[2], p.D);
        } else {
          score = dot(qbuf, kb + s * p.ks[2], p.D);
        }
        if (p.softcap > 0.0f) {
          score = std::tanh(score / p.softcap) * p.softcap;
        }
        if (p.mask != nullptr) {
          const int64_t m = b * p.ms[0] + h * p.ms[1] + l * p.ms[2] + s * p.ms[3];
          if (p.mask_bool) {
            if (!static_cast<const bool*>(p.mask)[m]) {
              score = neg_inf;
            }
          } else {
            score += static_cast<const float*>(p.mask)[m];
          }
        }
      }
      scores[s] = score;
      best = std::max(best, score);
    }
    float* o = p.out + (b * p.L + l) * p.Hq * p.D + h * p.D;
    std::fill(o, o + p.D, 0.0f);
    if (best == neg_inf) {  // every key hidden (a padding row): zeros, not NaN
      continue;
    }
    float total = 0;
    for (int64_t s = 0; s < p.S; s++) {
      const float e = scores[s] == neg_inf ? 0.0f : std::exp(scores[s] - best);
      scores[s] = e;
      total += e;
    }
    for (int64_t s = 0; s < p.S; s++) {
      const float w = scores[s];
      if (w == 0.0f) {
        continue;
      }
      const KV* vr = vb + s * p.vs[2];
      if constexpr (WIDE) {
        axpy_512(w, vr, o, p.D);
      } else {
        for (int64_t d = 0; d < p.D; d++) {
          o[d] += w * static_cast<float>(vr[d]);
        }
      }
    }
    const float inv = 1.0f / total;
    for (int64_t d = 0; d < p.D; d++) {
      o[d] *= inv;
    }
  }
}

// One (batch row, query head) pair: task = b * Hq + h.
template <bool WIDE>
BODY void attend_task_body(const AttentionProblem& p, int64_t task) {
  std::vector<float> scores(p.S);
  std::vector<float> qbuf(p.D);
  if (p.kv_half) {
    attend<_Float16, WIDE>(p, task / p.Hq, task % p.Hq, scores.data(), qbuf.data());
  } else {
    attend<float, WIDE>(p, task / p.Hq, task % p.Hq, scores.data(), qbuf.data());
  }
}

void attend_task(const AttentionProblem& p, int64_t task) {
  attend_task_body<false>(p, task);
}

AVX512 void attend_task_512(const AttentionProblem& p, int64_t task) {
  attend_task_body<true>(p, task);
}

} // namespace

// ---------------------------------------------------------------- ops

mx::array rms_norm(
    const mx::array& x,
    const mx::array& w,
    float eps,
    const std::optional<mx::array>& residual,
    mx::StreamOrDevice s) {
  auto stream = mx::to_stream(s);
  check_cpu(stream, "rms_norm");
  if (x.ndim() < 1 || w.ndim() != 1 || w.shape(0) != x.shape(-1)) {
    throw std::invalid_argument("[anvyl.rms_norm] w must be 1-D and match x's last axis.");
  }
  std::vector<mx::array> inputs{as_float32(x, s), as_float32(w, s)};
  if (residual) {
    if (residual->shape() != x.shape()) {
      throw std::invalid_argument("[anvyl.rms_norm] residual must have x's shape.");
    }
    inputs.push_back(as_float32(*residual, s));
  }
  return mx::array(
      x.shape(), mx::float32, std::make_shared<RMSNorm>(stream, eps), std::move(inputs));
}

void RMSNorm::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& encoder = mx::cpu::get_command_encoder(stream());
  bind(encoder, inputs, outputs);
  auto& out = outputs[0];
  Rows x = rows_of(inputs[0], encoder);
  Rows w = rows_of(inputs[1], encoder);
  std::optional<Rows> res;
  if (inputs.size() > 2) {
    res = rows_of(inputs[2], encoder);
  }
  encoder.dispatch([x = std::move(x),
                    w = std::move(w),
                    res = std::move(res),
                    y = out.data<float>(),
                    eps = eps_]() {
    x.prepare();
    w.prepare();
    const Rows* r = nullptr;
    if (res) {
      res->prepare();
      r = &*res;
    }
    if (has_avx512()) {
      rms_norm_rows_512(x, w.row(0), r, y, eps);
    } else {
      rms_norm_rows_any(x, w.row(0), r, y, eps);
    }
  });
}

bool RMSNorm::is_equivalent(const mx::Primitive& other) const {
  return eps_ == static_cast<const RMSNorm&>(other).eps_;
}

namespace {

mx::array gated(const mx::array& gate, const mx::array& up, bool gelu, mx::StreamOrDevice s) {
  auto stream = mx::to_stream(s);
  check_cpu(stream, gelu ? "geglu" : "swiglu");
  if (gate.shape() != up.shape()) {
    throw std::invalid_argument(
        std::string("[anvyl.") + (gelu ? "geglu" : "swiglu") +
        "] gate and up must have the same shape.");
  }
  return mx::array(
      gate.shape(),
      mx::float32,
      std::make_shared<GatedActivation>(stream, gelu),
      {as_float32(gate, s), as_float32(up, s)});
}

} // namespace

mx::array swiglu(const mx::array& gate, const mx::array& up, mx::StreamOrDevice s) {
  return gated(gate, up, false, s);
}

mx::array geglu(const mx::array& gate, const mx::array& up, mx::StreamOrDevice s) {
  return gated(gate, up, true, s);
}

void GatedActivation::eval_cpu(
    const std::vector<mx::array>& inputs,
    std::vector<mx::array>& outputs) {
  auto& encoder = mx::cpu::get_command_encoder(stream());
  bind(encoder, inputs, outputs);
  auto& out = outputs[0];
  Rows g = rows_of(inputs[0], encoder);
  Rows u = rows_of(inputs[1], encoder);
  encoder.dispatch(
      [g = std::move(g), u = std::move(u), y = out.data<float>(), gelu = gelu_]() {
        g.prepare();
        u.prepare();
        if (has_avx512()) {
          gated_rows_512(g, u, y, gelu);
        } else {
          gated_rows_any(g, u, y, gelu);
        }
      });
}

mx::array rope_heads(
    const mx::array& x,
    int n_heads,
    int dims,
    bool traditional,
    float base,
    float scale,
    const mx::array& offset,
    bool float16_out,
    const std::optional<mx::array>& bias,
    const std::optional<mx::array>& freqs,
    const std::optional<mx::array>& norm,
    float norm_eps,
    float mscale,
    mx::StreamOrDevice s) {
  auto stream = mx::to_stream(s);
  check_cpu(stream, "rope_heads");
  if (x.ndim() != 3 || n_heads <= 0 || x.shape(2) % n_heads != 0) {
    throw std::invalid_argument("[anvyl.rope_heads] x must be (B, L, n_heads * head_dim).");
  }
  const int B = x.shape(0);
  const int L = x.shape(1);
  const int D = x.shape(2) / n_heads;
  if (dims < 0 || dims > D || dims % 2 != 0) {
    throw std::invalid_argument("[anvyl.rope_heads] dims must be even and at most head_dim.");
  }
  if (offset.ndim() > 1 || (offset.ndim() == 1 && offset.shape(0) != B) ||
      !mx::issubdtype(offset.dtype(), mx::integer)) {
    throw std::invalid_argument("[anvyl.rope_heads] offset must be an integer or one per row.");
  }
  std::vector<mx::array> inputs{
      as_float32(x, s), offset.dtype() == mx::int32 ? offset : mx::astype(offset, mx::int32, s)};
  if (bias) {
    if (bias->ndim() != 1 || bias->shape(0) != x.shape(2)) {
      throw std::invalid_argument("[anvyl.rope_heads] bias must have n_heads * head_dim values.");
    }
    inputs.push_back(mx::contiguous(as_float32(*bias, s), false, s));
  }
  if (freqs) {
    if (freqs->ndim() != 1 || freqs->shape(0) != dims / 2) {
      throw std::invalid_argument("[anvyl.rope_heads] freqs must have dims / 2 values.");
    }
    inputs.push_back(mx::contiguous(as_float32(*freqs, s), false, s));
  }
  if (norm) {
    if (norm->ndim() != 1 || norm->shape(0) != D) {
      throw std::invalid_argument("[anvyl.rope_heads] norm must have head_dim values.");
    }
    inputs.push_back(mx::contiguous(as_float32(*norm, s), false, s));
  }
  return mx::array(
      mx::Shape{B, n_heads, L, D},
      float16_out ? mx::float16 : mx::float32,
      std::make_shared<RoPEHeads>(
          stream,
          n_heads,
          dims,
          traditional,
          base,
          scale,
          bias.has_value(),
          freqs.has_value(),
          norm.has_value(),
          norm_eps,
          mscale),
      std::move(inputs));
}

namespace {

struct RopeJob {
  Rows rows;
  const int32_t* offsets;
  bool per_row;
  int64_t B, L, H;
  int dims;
  bool traditional;
  float base;
  float scale;
  const float* bias;  // or null: no bias to add first
  const float* freqs;  // or null: periods from `base`
  const float* norm;  // or null: no per-head norm
  float norm_eps;
  float mscale;
};

// Normalizes, scales and rotates (or, with dims 0, only copies) every head of every row into y,
// (B, H, L, D) of T.
template <typename T>
void rope_rows(const RopeJob& j, T* y) {
  j.rows.prepare();
  const int64_t D = j.rows.width / j.H;
  const int half = j.dims / 2;
  std::vector<float> inv_freq(half);
  const float step = half > 0 ? -std::log(j.base) / static_cast<float>(half) : 0.0f;
  for (int i = 0; i < half; i++) {
    inv_freq[i] = j.freqs != nullptr ? 1.0f / j.freqs[i] : std::exp(static_cast<float>(i) * step);
  }
  std::vector<float> cosv(half), sinv(half), normed(j.norm != nullptr ? D : 0);
  std::vector<float> biased(j.bias != nullptr ? D : 0);
  for (int64_t b = 0; b < j.B; b++) {
    const int64_t start = j.offsets == nullptr ? 0 : j.offsets[j.per_row ? b : 0];
    for (int64_t l = 0; l < j.L; l++) {
      const float pos = static_cast<float>(start + l) * j.scale;
      for (int i = 0; i < half; i++) {
        const float theta = pos * inv_freq[i];
        cosv[i] = std::cos(theta);
        sinv[i] = std::sin(theta);
      }
      const float* xr = j.rows.row(b * j.L + l);
      for (int64_t h = 0; h < j.H; h++) {
        const float* xi = xr + h * D;
        if (j.bias != nullptr) {
          for (int64_t d = 0; d < D; d++) {
            biased[d] = xi[d] + j.bias[h * D + d];
          }
          xi = biased.data();
        }
        if (j.norm != nullptr) {
          rms_norm_row(xi, j.norm, normed.data(), D, j.norm_eps);
          xi = normed.data();
        }
        T* yo = y + ((b * j.H + h) * j.L + l) * D;
        for (int i = 0; i < half; i++) {
          const int a = j.traditional ? 2 * i : i;
          const int c = j.traditional ? 2 * i + 1 : i + half;
          float x1 = xi[a];
          float x2 = xi[c];
          if (j.mscale != 1.0f) {
            x1 *= j.mscale;
            x2 *= j.mscale;
          }
          yo[a] = static_cast<T>(x1 * cosv[i] - x2 * sinv[i]);
          yo[c] = static_cast<T>(x1 * sinv[i] + x2 * cosv[i]);
        }
        for (int64_t d = j.dims; d < D; d++) {
          yo[d] = static_cast<T>(xi[d]);
        }
      }
    }
  }
}

} // namespace

void RoPEHeads::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& encoder = mx::cpu::get_command_encoder(stream());
  bind(encoder, inputs, outputs);
  auto& out = outputs[0];
  const auto& x = inputs[0];
  const auto& offset = inputs[1];
  size_t next = 2;
  const float* bias = has_bias_ ? inputs[next++].data<float>() : nullptr;
  const float* freqs = has_freqs_ ? inputs[next++].data<float>() : nullptr;
  const float* norm = has_norm_ ? inputs[next++].data<float>() : nullptr;
  RopeJob job{
      rows_of(x, encoder),
      dims_ > 0 ? offset.data<int32_t>() : nullptr,
      offset.ndim() == 1,
      x.shape(0),
      x.shape(1),
      n_heads_,
      dims_,
      traditional_,
      base_,
      scale_,
      bias,
      freqs,
      norm,
      norm_eps_,
      mscale_};
  if (out.dtype() == mx::float16) {
    encoder.dispatch([job = std::move(job), y = out.data<_Float16>()]() { rope_rows(job, y); });
  } else {
    encoder.dispatch([job = std::move(job), y = out.data<float>()]() { rope_rows(job, y); });
  }
}

bool RoPEHeads::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const RoPEHeads&>(other);
  return n_heads_ == o.n_heads_ && dims_ == o.dims_ && traditional_ == o.traditional_ &&
      base_ == o.base_ && scale_ == o.scale_ && has_bias_ == o.has_bias_ &&
      has_freqs_ == o.has_freqs_ &&
      has_norm_ == o.has_norm_ && norm_eps_ == o.norm_eps_ && mscale_ == o.mscale_;
}

mx::array attention(
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    float scale,
    const std::optional<mx::array>& mask,
    bool causal,
    float softcap,
    mx::StreamOrDevice s) {
  auto stream = mx::to_stream(s);
  check_cpu(stream, "attention");
  if (q.ndim() != 4 || k.ndim() != 4 || v.shape() != k.shape() || q.shape(0) != k.shape(0) ||
      q.shape(3) != k.shape(3) || k.shape(1) == 0 || q.shape(1) % k.shape(1) != 0) {
    throw std::invalid_argument(
        "[anvyl.attention] q must be (B, Hq, L, D) and k, v (B, Hkv, S, D), Hq a multiple of Hkv.");
  }
  const int B = q.shape(0);
  const int Hq = q.shape(1);
  const int L = q.shape(2);
  const int D = q.shape(3);
  // Keys and values stay float16 when both are (a half-size KV cache); else float32.
  const bool half = k.dtype() == mx::float16 && v.dtype() == mx::float16;
  std::vector<mx::array> inputs{
      as_float32(q, s), half ? k : as_float32(k, s), half ? v : as_float32(v, s)};
  if (mask) {
    if (mask->ndim() > 4) {
      throw std::invalid_argument("[anvyl.attention] mask has more than 4 axes.");
    }
    const mx::Shape full{B, Hq, L, k.shape(2)};
    const int off = 4 - static_cast<int>(mask->ndim());
    for (int d = 0; d < static_cast<int>(mask->ndim()); d++) {
      if (mask->shape(d) != 1 && mask->shape(d) != full[off + d]) {
        throw std::invalid_argument("[anvyl.attention] mask does not broadcast to (B, Hq, L, S).");
      }
    }
    inputs.push_back(mask->dtype() == mx::bool_ ? *mask : as_float32(*mask, s));
  }
  return mx::array(
      mx::Shape{B, L, Hq * D},
      mx::float32,
      std::make_shared<Attention>(stream, scale, mask.has_value(), causal, softcap),
      std::move(inputs));
}

void Attention::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& encoder = mx::cpu::get_command_encoder(stream());
  bind(encoder, inputs, outputs);
  auto& out = outputs[0];
  // q, k and v with a contiguous last axis (else a packed copy, made by the task).
  std::vector<Rows> packs;
  AttentionProblem p{};
  p.kv_half = inputs[1].dtype() == mx::float16;
  const void* ptrs[3];
  int64_t strides[3][3];
  for (int i = 0; i < 3; i++) {
    const auto& a = inputs[i];
    if (a.shape(3) > 1 && a.strides()[3] != 1) {
      if (a.dtype() != mx::float32) {
        throw std::invalid_argument("[anvyl.attention] float16 keys and values must be contiguous in D.");
      }
      packs.push_back(rows_of(a, encoder));
      ptrs[i] = packs.back().base;
      strides[i][0] = a.shape(1) * a.shape(2) * a.shape(3);
      strides[i][1] = a.shape(2) * a.shape(3);
      strides[i][2] = a.shape(3);
    } else {
      ptrs[i] = a.data<void>();
      for (int d = 0; d < 3; d++) {
        strides[i][d] = a.strides()[d];
      }
    }
  }
  p.q = static_cast<const float*>(ptrs[0]);
  p.k = ptrs[1];
  p.v = ptrs[2];
  std::memcpy(p.qs, strides[0], sizeof(p.qs));
  std::memcpy(p.ks, strides[1], sizeof(p.ks));
  std::memcpy(p.vs, strides[2], sizeof(p.vs));
  p.B = inputs[0].shape(0);
  p.Hq = inputs[0].shape(1);
  p.L = inputs[0].shape(2);
  p.D = inputs[0].shape(3);
  p.Hkv = inputs[1].shape(1);
  p.S = inputs[1].shape(2);
  p.scale = scale_;
  p.causal = causal_;
  p.softcap = softcap_;
  p.out = out.data<float>();
  if (has_mask_) {
    const auto& m = inputs[3];
    p.mask = m.data<void>();
    p.mask_bool = m.dtype() == mx::bool_;
    const int off = 4 - static_cast<int>(m.ndim());
    for (int d = 0; d < 4; d++) {
      p.ms[d] = d < off || m.shape(d - off) == 1 ? 0 : m.strides()[d - off];
    }
  }
  encoder.dispatch([p, packs = std::move(packs)]() {
    for (const auto& r : packs) {
      r.prepare();
    }
    const int n = static_cast<int>(p.B * p.Hq);
    const bool wide = has_avx512() && p.D % 16 == 0;
    // Threads only pay off with enough work per task.
    auto task = [&](int i) {
      if (wide) {
        attend_task_512(p, i);
      } else {
        attend_task(p, i);
      }
    };
    if (p.L * p.S * p.D * n >= (1 << 18)) {
      parallel_for(n, task);
    } else {
      for (int i = 0; i < n; i++) {
        task(i);
      }
    }
  });
}

bool Attention::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const Attention&>(other);
  return scale_ == o.scale_ && has_mask_ == o.has_mask_ && causal_ == o.causal_ &&
      softcap_ == o.softcap_;
}

void RMSNorm::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("[anvyl.rms_norm] has no GPU implementation.");
}

void GatedActivation::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("[anvyl.swiglu] has no GPU implementation.");
}

void RoPEHeads::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("[anvyl.rope_heads] has no GPU implementation.");
}

void Attention::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("[anvyl.attention] has no GPU implementation.");
}

} // namespace anvyl
