// The non-matmul parts of a decoder layer as single CPU primitives.
//
// On the CPU, MLX's `fast` ops (rms_norm, rope, scaled_dot_product_attention) fall back to graphs
// of a dozen elementwise ops each, and every op costs several microseconds of scheduling: with the
// matmuls on Anvyl's kernel, those graphs were most of a decode step (one stream of the bundled
// model: 59 ms a token, of which ~13 ms norms, ~20 ms rope, ~15 ms attention, ~10 ms swiglu).
// Each function here is one graph node with one tight loop, in float32.
#pragma once

#include <optional>

#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace anvyl {

namespace mx = mlx::core;

// `x * rsqrt(mean(x^2, -1) + eps) * w` over the last axis.
mx::array rms_norm(const mx::array& x, const mx::array& w, float eps, mx::StreamOrDevice s = {});

// `silu(gate) * up`, elementwise.
mx::array swiglu(const mx::array& gate, const mx::array& up, mx::StreamOrDevice s = {});

// Rotary position embedding of a projection `x` of shape (B, L, n_heads * head_dim), returned as
// (B, n_heads, L, head_dim): the reshape and transpose of the attention are part of the op. The
// first `dims` features of each head rotate (0: none, only the layout changes); `offset` is a
// scalar or one position per batch row. `float16_out`: the result in float16 (for a half-size KV
// cache), else float32.
mx::array rope_heads(
    const mx::array& x,
    int n_heads,
    int dims,
    bool traditional,
    float base,
    float scale,
    const mx::array& offset,
    bool float16_out = false,
    mx::StreamOrDevice s = {});

// Attention of queries (B, Hq, L, D) over keys and values (B, Hkv, S, D) (Hq a multiple of Hkv),
// returned as (B, L, Hq * D). `mask` broadcasts to (B, Hq, L, S): boolean (false hides a key) or
// additive; `causal` hides key s from query l when s > l + S - L. Keys and values may be float16
// (read as such: a half-size KV cache); everything else is computed in float32.
mx::array attention(
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    float scale,
    const std::optional<mx::array>& mask,
    bool causal,
    mx::StreamOrDevice s = {});

class RMSNorm : public mx::Primitive {
 public:
  RMSNorm(mx::Stream stream, float eps) : mx::Primitive(stream), eps_(eps) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override {
    return "AnvylRMSNorm";
  }
  bool is_equivalent(const mx::Primitive& other) const override;

 private:
  float eps_;
};

class SwiGLU : public mx::Primitive {
 public:
  explicit SwiGLU(mx::Stream stream) : mx::Primitive(stream) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override {
    return "AnvylSwiGLU";
  }
  bool is_equivalent(const mx::Primitive&) const override {
    return true;
  }
};

class RoPEHeads : public mx::Primitive {
 public:
  RoPEHeads(mx::Stream stream, int n_heads, int dims, bool traditional, float base, float scale)
      : mx::Primitive(stream),
        n_heads_(n_heads),
        dims_(dims),
        traditional_(traditional),
        base_(base),
        scale_(scale) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override {
    return "AnvylRoPEHeads";
  }
  bool is_equivalent(const mx::Primitive& other) const override;

 private:
  int n_heads_;
  int dims_;
  bool traditional_;
  float base_;
  float scale_;
};

class Attention : public mx::Primitive {
 public:
  Attention(mx::Stream stream, float scale, bool has_mask, bool causal)
      : mx::Primitive(stream), scale_(scale), has_mask_(has_mask), causal_(causal) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override {
    return "AnvylAttention";
  }
  bool is_equivalent(const mx::Primitive& other) const override;

 private:
  float scale_;
  bool has_mask_;
  bool causal_;
};

} // namespace anvyl
