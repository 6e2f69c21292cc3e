// Python bindings of anvyl_kernels._ext.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "layers.h"
#include "qmm.h"

namespace nb = nanobind;
using namespace nb::literals;

NB_MODULE(_ext, m) {
  m.doc() = "Anvyl's CPU kernels for MLX.";
  m.def(
      "qmm",
      &anvyl::qmm,
      "x"_a,
      "w"_a,
      "scales"_a,
      "biases"_a,
      "group_size"_a,
      "bits"_a,
      nb::kw_only(),
      "stream"_a = nb::none(),
      "``x @ dequantize(w, scales, biases).T`` in float32, weights kept packed (CPU).");
  m.def(
      "qmm_many",
      &anvyl::qmm_many,
      "x"_a,
      "ws"_a,
      "scales"_a,
      "biases"_a,
      "group_size"_a,
      "bits"_a,
      nb::kw_only(),
      "stream"_a = nb::none(),
      "``qmm`` of one ``x`` against several weights in one pass: a list of outputs.");
  m.def(
      "dequantize",
      &anvyl::dequantize,
      "w"_a,
      "scales"_a,
      "biases"_a,
      "group_size"_a,
      "bits"_a,
      nb::kw_only(),
      "stream"_a = nb::none(),
      "``mx.dequantize`` with float32 scales, in float32 (fast on AVX-512 CPUs).");
  m.def(
      "rms_norm",
      &anvyl::rms_norm,
      "x"_a,
      "w"_a,
      "eps"_a,
      "residual"_a = nb::none(),
      nb::kw_only(),
      "stream"_a = nb::none(),
      "``residual + x * rsqrt(mean(x ** 2, -1) + eps) * w`` in float32, one node (CPU).");
  m.def(
      "swiglu",
      &anvyl::swiglu,
      "gate"_a,
      "up"_a,
      nb::kw_only(),
      "stream"_a = nb::none(),
      "``silu(gate) * up`` in float32, one node (CPU).");
  m.def(
      "geglu",
      &anvyl::geglu,
      "gate"_a,
      "up"_a,
      nb::kw_only(),
      "stream"_a = nb::none(),
      "``nn.gelu_approx(gate) * up`` in float32, one node (CPU).");
  m.def(
      "rope_heads",
      &anvyl::rope_heads,
      "x"_a,
      "n_heads"_a,
      "dims"_a,
      "traditional"_a,
      "base"_a,
      "scale"_a,
      "offset"_a,
      nb::kw_only(),
      "float16_out"_a = false,
      "bias"_a = nb::none(),
      "freqs"_a = nb::none(),
      "norm"_a = nb::none(),
      "norm_eps"_a = 1e-6f,
      "mscale"_a = 1.0f,
      "stream"_a = nb::none(),
      "Rotary embedding of a (B, L, H * D) projection, returned as (B, H, L, D) (CPU).");
  m.def(
      "attention",
      &anvyl::attention,
      "q"_a,
      "k"_a,
      "v"_a,
      "scale"_a,
      "mask"_a = nb::none(),
      "causal"_a = false,
      nb::kw_only(),
      "softcap"_a = 0.0f,
      "stream"_a = nb::none(),
      "Attention of (B, Hq, L, D) queries over (B, Hkv, S, D) keys and values: (B, L, Hq * D).");
  m.def("set_num_threads", &anvyl::set_num_threads, "n"_a, "Threads the kernel uses.");
  m.def("num_threads", &anvyl::num_threads, "Threads the kernel uses.");
  m.def("simd", &anvyl::simd, "The instruction set in use: avx512, avx2 or scalar.");
  m.def("simd_bits", &anvyl::simd_bits, "Weight widths qmm has a SIMD path for on this CPU.");
}
