// Anvyl's quantized matmul for the CPU: y = x @ dequantize(w).T for the few rows of a decode step.
#pragma once

#include <functional>
#include <string>

#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace anvyl {

namespace mx = mlx::core;

// `x @ dequantize(w, scales, biases).T` for MLX affine quantized `w` (bits 4 or 8, group size a
// multiple of 32), computed in float32 without materializing the float weights.
mx::array qmm(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    mx::StreamOrDevice s = {});

// The same for several weights on one input (q/k/v, gate/up): one pass, one output each.
std::vector<mx::array> qmm_many(
    const mx::array& x,
    const std::vector<mx::array>& ws,
    const std::vector<mx::array>& scales,
    const std::vector<mx::array>& biases,
    int group_size,
    int bits,
    mx::StreamOrDevice s = {});

// `mx.dequantize` with float32 scales, fast (AVX-512; MLX's own op elsewhere): the weight for a
// prompt's BLAS matmul.
mx::array dequantize(
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    mx::StreamOrDevice s = {});

// Threads the kernel splits output columns over (the calling thread included).
void set_num_threads(int n);
int num_threads();

// Calls f(i) for i in [0, n_tasks) on the kernel's thread pool (the calling thread included).
void parallel_for(int n_tasks, const std::function<void(int)>& f);

// The instruction set the kernel runs with on this CPU: "avx512", "avx2" or "scalar".
std::string simd();

// Weight widths (bits) with a SIMD path here: 4 and 8 with AVX2 or AVX-512, 5 with AVX-512 VBMI.
std::vector<int> simd_bits();

// Whether that is AVX-512 (the layer ops and the fast dequantize use it too).
bool has_avx512();

class QMM : public mx::Primitive {
 public:
  QMM(mx::Stream stream, int group_size, int bits)
      : mx::Primitive(stream), group_size_(group_size), bits_(bits) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;

  const char* name() const override {
    return "AnvylQMM";
  }
  bool is_equivalent(const mx::Primitive& other) const override;

 private:
  int group_size_;
  int bits_;
};

class Dequantize : public mx::Primitive {
 public:
  Dequantize(mx::Stream stream, int group_size, int bits)
      : mx::Primitive(stream), group_size_(group_size), bits_(bits) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;

  const char* name() const override {
    return "AnvylDequantize";
  }
  bool is_equivalent(const mx::Primitive& other) const override;

 private:
  int group_size_;
  int bits_;
};

} // namespace anvyl
