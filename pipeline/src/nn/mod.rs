//! Tensor operations for the pretrained networks (NHWC f32, batch of one).
//!
//! Only what the detectors and the landmark network need: convolutions (k×k through im2col
//! and one GEMM, 1×1 as a plain GEMM), depthwise 3×3 convolutions over channels-last memory,
//! pooling, and the input preparation of the tfjs library (pad to square, legacy bilinear
//! resize). Batch norm is folded into the weights when a network is loaded, so a layer is
//! always `act(conv(x) + bias)`.
//!
//! Speed: the GEMMs go through the `gemm` crate, whose kernels pick AVX2/AVX-512 at run
//! time and handle the skinny shapes of these networks (a million rows, 16–64 columns) far
//! better than a packing-first GEMM. The element-wise loops (depthwise, bias + activation)
//! are compiled twice, for baseline x86-64 and for AVX2+FMA, and chosen once at run time,
//! since release builds target baseline x86-64 and must run on any x86-64 machine.
//!
//! - [`tensor`]: the [`Tensor`] type, [`Padding`], [`Activation`], `sigmoid`, `js_round`.
//! - [`conv`]: [`Conv2d`], [`DepthwiseConv`], [`SeparableConv`], and [`vector`] for
//!   checked bias/norm vectors.
//! - [`gemm`]: the matrix products and the process-wide thread count
//!   ([`set_gemm_threads`], [`gemm_threads`]).
//! - [`pool`]: [`max_pool`], [`avg_pool_valid`].
//! - [`input`]: the tfjs input preparation ([`square_input`]).
//! - `simd`: the element-wise loops, compiled for baseline x86-64 and for AVX2.
//!
//! Every item is re-exported here: callers write `crate::nn::Conv2d`, not the submodule.

pub mod conv;
pub mod gemm;
pub mod input;
pub mod pool;
// `unsafe` here only to call CPU-specific copies of the loops.
#[allow(unsafe_code)]
mod simd;
pub mod tensor;

pub use conv::{vector, Conv2d, DepthwiseConv, SeparableConv};
// `self::`: a bare `gemm` would also name the `gemm` crate.
pub use self::gemm::{gemm_acc, gemm_new, gemm_threads, set_gemm_threads, DEFAULT_GEMM_THREADS};
pub use input::square_input;
pub use pool::{avg_pool_valid, max_pool};
pub use tensor::{js_round, sigmoid, Activation, Padding, Tensor};
