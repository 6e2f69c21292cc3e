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

// `x * rsqrt(mean(x^2, -1) + eps) * w` over the last axis; `residual` (x's shape) is added to
// the result when given (Gemma's `h + norm(r)` after attention and MLP, one node).
mx::array rms_norm(
    const mx::array& x,
    const mx::array& w,
    float eps,
    const std::optional<mx::array>& residual = std::nullopt,
    mx::StreamOrDevice s = {});

// `silu(gate) * up`, elementwise.
mx::array swiglu(const mx::array& gate, const mx::array& up, mx::StreamOrDevice s = {});

// `gelu_approx(gate) * up` (MLX's tanh approximation, Gemma's MLP), elementwise.
mx::array geglu(const mx::array& gate, const mx::array& up, mx::StreamOrDevice s = {});

// Rotary position embedding of a projection `x` of shape (B, L, n_heads * head_dim), returned as
// (B, n_heads, L, head_dim): the reshape and transpose of the attention are part of the op. The
// first `dims` features of each head rotate (0: none, only the layout changes); `offset` is a
// scalar or one position per batch row. `float16_out`: the result in float16 (for a half-size KV
// cache), else float32.
//
// What mlx-lm's attention modules do around `mx.fast.rope` is part of the op too, each optional:
// `bias` (n_heads * head_dim values) is added to `x` first (Qwen2's q/k/v biases); `norm` (head_dim weights): each head is RMS-normalized first (Qwen3's and Gemma 3's q/k norms,
// `eps` `norm_eps`); `mscale`: the rotated features are multiplied by it before the rotation
// (Phi-3's long-context and YaRN scaling); `freqs` (dims / 2 values): the rotation periods of
// `mx.fast.rope(..., base=None, freqs=freqs)` (Llama 3's scaling, YaRN, Phi-3's longrope)
// instead of `base`.
mx::array rope_heads(
    const mx::array& x,
    int n_heads,
    int dims,
    bool traditional,
    float base,
    float scale,
    const mx::array& offset,
    bool float16_out = false,
    const std::optional<mx::array>& bias = std::nullopt,
    const std::optional<mx::array>& freqs = std::nullopt,
    const std::optional<mx::array>& norm = std::nullopt,
    float norm_eps = 1e-6f,
    float mscale = 1.0f,
    mx::StreamOrDevice s = {});

// Attention of queries (B, Hq, L, D) over keys and values (B, Hkv, S, D) (Hq a multiple of Hkv),
// returned as (B, L, Hq * D). `mask` broadcasts to (B, Hq, L, S): boolean (false hides a key) or
// additive; `causal` hides key s from query l when s > l + S - L. Keys and values may be float16
// (read as such: a half-size KV cache); everything else is computed in float32. `softcap` > 0:
// each score becomes `tanh(score / softcap) * softcap` before the mask (Gemma 2).
mx::array attention(
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    float scale,
    const std::optional<mx::array>& mask,
    bool causal,
    float softcap = 0.0f,
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

// A gated activation `act(gate) * up`: silu (SwiGLU) or MLX's tanh-approximated gelu (GeGLU).
class GatedActivation : public mx::Primitive {
 public:
  GatedActivation(mx::Stream stream, bool gelu) : mx::Primitive(stream), gelu_(gelu) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override {
    return gelu_ ? "AnvylGeGLU" : "AnvylSwiGLU";
  }
  bool is_equivalent(const mx::Primitive& other) const override {
    return gelu_ == static_cast<const GatedActivation&>(other).gelu_;
  }

 private:
  bool gelu_;
};

class RoPEHeads : public mx::Primitive {
 public:
  RoPEHeads(
      mx::Stream stream,
      int n_heads,
      int dims,
      bool traditional,
      float base,
      float scale,
      bool has_bias,
      bool has_freqs,
      bool has_norm,
      float norm_eps,
      float mscale)
      : mx::Primitive(stream),
        n_heads_(n_heads),
        dims_(dims),
        traditional_(traditional),
        base_(base),
        scale_(scale),
        has_bias_(has_bias),
        has_freqs_(has_freqs),
        has_norm_(has_norm),
        norm_eps_(norm_eps),
        mscale_(mscale) {}
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
  bool has_bias_;
  bool has_freqs_;
  bool has_norm_;
  float norm_eps_;
  float mscale_;
};

class Attention : public mx::Primitive {
 public:
  Attention(mx::Stream stream, float scale, bool has_mask, bool causal, float softcap)
      : mx::Primitive(stream),
        scale_(scale),
        has_mask_(has_mask),
        causal_(causal),
        softcap_(softcap) {}
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
  float softcap_;
};

} // namespace anvyl
