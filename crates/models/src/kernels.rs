//! Fused CPU kernels for the BERT encoder.
//!
//! candle runs each elementwise step (bias, activation, residual, norm,
//! mask, softmax) as its own pass over a freshly allocated tensor on its own
//! thread pool; for a small encoder those passes cost as much as the matrix
//! products. These kernels fuse them into one pass per step, run on the
//! caller's rayon pool, and compute attention on packed (unpadded) rows.
//! They are CPU-only custom ops; other devices use candle's own ops.

// SIMD kernels: every unsafe block states the CPU features and bounds it relies on.
#![allow(unsafe_code)]

use candle_core::{CpuStorage, CustomOp1, InplaceOp1, InplaceOp2, Layout, Result, Shape, bail};
use candle_transformers::models::bert::HiddenAct;
use rayon::prelude::*;

/// Rows handed to one rayon task: enough work to amortize the scheduling.
const ROWS_PER_TASK: usize = 8;

/// `e^x`, within 2 ulp over the range softmax uses (Cephes' polynomial,
/// written so the compiler can vectorize it).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // n = round(x / ln 2) by the float magic-number trick (no libm call).
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let exponent = (t.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) << 23;
    y * f32::from_bits(exponent as u32)
}

/// The error function, within ~1e-7 absolute (a rational approximation on
/// [-4, 4], as in Eigen and XLA; beyond that erf is ±1 in f32).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_600_1e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    x * p / q
}

/// GELU as BERT defines it, with the exact error function.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU's tanh approximation: 0.5 x (1 + tanh(z)) = x / (1 + e^(-2z)).
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    let z = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * z))
}

/// Softmax of `scale * row`, in place.
#[inline(always)]
fn softmax(row: &mut [f32], scale: f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = exp((*v - max) * scale);
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// A loop body worth compiling twice: for the baseline target and for
/// AVX2+FMA, picked at run time (the default target only promises SSE2).
pub(crate) trait Kernel {
    /// The loop body; implementations mark it `#[inline(always)]`.
    fn run(self);
}

/// Runs `kernel`, compiled for AVX2+FMA where the CPU has them.
#[inline(always)]
pub(crate) fn dispatch(kernel: impl Kernel) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(kernel: impl Kernel) {
            kernel.run()
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features `avx2` is compiled for.
            return unsafe { avx2(kernel) };
        }
    }
    kernel.run()
}

/// `x = f(x + bias)` over whole rows.
struct MapRows<'a, F> {
    x: &'a mut [f32],
    bias: &'a [f32],
    f: F,
}

impl<F: Fn(f32) -> f32> Kernel for MapRows<'_, F> {
    #[inline(always)]
    fn run(self) {
        for row in self.x.chunks_exact_mut(self.bias.len()) {
            for (v, &b) in row.iter_mut().zip(self.bias) {
                *v = (self.f)(*v + b);
            }
        }
    }
}

/// `x = LayerNorm(x + bias + residual) * gamma + beta` over whole rows.
struct AddNormRows<'a> {
    x: &'a mut [f32],
    residual: &'a [f32],
    op: &'a AddNorm<'a>,
}

impl Kernel for AddNormRows<'_> {
    #[inline(always)]
    fn run(self) {
        let AddNorm { bias, gamma, beta, eps } = *self.op;
        let cols = bias.len();
        for (x, r) in self.x.chunks_exact_mut(cols).zip(self.residual.chunks_exact(cols)) {
            let mut sum = 0.0;
            for ((x, &r), &b) in x.iter_mut().zip(r).zip(bias) {
                *x += r + b;
                sum += *x;
            }
            let mean = sum / cols as f32;
            let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((x, &g), &b) in x.iter_mut().zip(gamma).zip(beta) {
                *x = (*x - mean) * inv * g + b;
            }
        }
    }
}

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { bail!("{what}: expected f32") };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{what}: expected a contiguous tensor"),
    }
}

fn contiguous_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = storage else { bail!("{what}: expected f32") };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&mut data[start..end]),
        None => bail!("{what}: expected a contiguous tensor"),
    }
}

fn dims2(layout: &Layout, what: &str) -> Result<(usize, usize)> {
    match layout.shape().dims() {
        [rows, cols] => Ok((*rows, *cols)),
        dims => bail!("{what}: expected a matrix, got shape {dims:?}"),
    }
}

/// `x = act(x + bias)` in place, for a `[rows, bias.len()]` matrix.
pub(crate) struct BiasAct<'a> {
    pub bias: &'a [f32],
    pub act: HiddenAct,
}

impl InplaceOp1 for BiasAct<'_> {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let (_, cols) = dims2(layout, "bias-act")?;
        if cols != self.bias.len() {
            bail!("bias-act: {cols} columns but a bias of {}", self.bias.len());
        }
        let x = contiguous_mut(storage, layout, "bias-act")?;
        let bias = self.bias;
        x.par_chunks_mut(cols * ROWS_PER_TASK).for_each(|x| match self.act {
            HiddenAct::Gelu => dispatch(MapRows { x, bias, f: gelu }),
            HiddenAct::GeluApproximate => dispatch(MapRows { x, bias, f: gelu_tanh }),
            HiddenAct::Relu => dispatch(MapRows { x, bias, f: |v: f32| v.max(0.0) }),
        });
        Ok(())
    }
}

/// `x = LayerNorm(x + bias + residual) * gamma + beta` in place, row by
/// row: the end of both BERT sublayers.
pub(crate) struct AddNorm<'a> {
    pub bias: &'a [f32],
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub eps: f32,
}

impl InplaceOp2 for AddNorm<'_> {
    fn name(&self) -> &'static str {
        "add-norm"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let (_, cols) = dims2(l1, "add-norm")?;
        if l1.shape() != l2.shape() || [self.bias.len(), self.gamma.len(), self.beta.len()] != [cols; 3] {
            bail!("add-norm: shapes {:?} and {:?} do not match the {cols}-wide parameters", l1.shape(), l2.shape());
        }
        let residual = contiguous(s2, l2, "add-norm residual")?;
        let x = contiguous_mut(s1, l1, "add-norm")?;
        let chunk = cols * ROWS_PER_TASK;
        x.par_chunks_mut(chunk)
            .zip(residual.par_chunks(chunk))
            .for_each(|(x, residual)| dispatch(AddNormRows { x, residual, op: self }));
        Ok(())
    }
}

/// Multi-head self-attention over packed sequences: the input is the fused
/// query/key/value projection `[tokens, 3 * hidden]` (bias not yet added) of
/// sequences laid end to end, `spans` their `(start, len)` rows; the output
/// is the attended context `[tokens, hidden]`. No padding is computed.
pub(crate) struct PackedAttention<'a> {
    pub bias: &'a [f32],
    pub spans: &'a [(usize, usize)],
    pub heads: usize,
    pub head_dim: usize,
}

impl CustomOp1 for PackedAttention<'_> {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous(storage, layout, "packed-attention")?;
        let (tokens, cols) = dims2(layout, "packed-attention")?;
        let hidden = self.heads * self.head_dim;
        if cols != 3 * hidden || self.bias.len() != cols {
            bail!("packed-attention: {cols} columns, {} bias, {} heads of {}", self.bias.len(), self.heads, hidden);
        }
        let mut expected = 0;
        for &(start, len) in self.spans {
            if start != expected {
                bail!("packed-attention: sequences must be laid end to end");
            }
            expected += len;
        }
        if expected != tokens {
            bail!("packed-attention: spans cover {expected} rows of {tokens}");
        }
        let mut out = vec![0.0f32; tokens * hidden];
        // Split the output at sequence boundaries so each task owns its rows.
        let mut parts = Vec::with_capacity(self.spans.len());
        let mut rest = out.as_mut_slice();
        for &(start, len) in self.spans {
            let (part, tail) = rest.split_at_mut(len * hidden);
            parts.push((start, len, part));
            rest = tail;
        }
        parts
            .into_par_iter()
            .for_each(|(start, len, out)| self.sequence(&qkv[start * cols..(start + len) * cols], len, out));
        Ok((CpuStorage::F32(out), Shape::from((tokens, hidden))))
    }
}

impl PackedAttention<'_> {
    /// Attention for one sequence of `len` rows, all heads.
    fn sequence(&self, rows: &[f32], len: usize, out: &mut [f32]) {
        let (d, hidden) = (self.head_dim, self.heads * self.head_dim);
        let stride = 3 * hidden;
        let mut qkv = rows.to_vec();
        dispatch(MapRows { x: &mut qkv, bias: self.bias, f: |v: f32| v });
        let mut scores = vec![0.0f32; len * len];
        let scale = 1.0 / (d as f32).sqrt();
        for h in 0..self.heads {
            let (q, k, v) = (&qkv[h * d..], &qkv[hidden + h * d..], &qkv[2 * hidden + h * d..]);
            // scores = q kᵀ; softmax(scale * scores) by row; context = scores v.
            let scores_mut = MatMut { data: &mut scores, row: len };
            gemm(scores_mut, len, len, d, Mat { data: q, row: stride, col: 1 }, Mat { data: k, row: 1, col: stride });
            scores.chunks_exact_mut(len).for_each(|row| softmax(row, scale));
            let context = MatMut { data: &mut out[h * d..], row: hidden };
            gemm(context, len, d, len, Mat { data: &scores, row: len, col: 1 }, Mat { data: v, row: stride, col: 1 });
        }
    }
}

/// A strided read-only matrix: element `(i, j)` is `data[i * row + j * col]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub row: usize,
    pub col: usize,
}

impl Mat<'_> {
    fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.row + (cols - 1) * self.col < self.data.len()
    }
}

/// A row-major destination: element `(i, j)` is `data[i * row + j]`.
pub(crate) struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub row: usize,
}

/// `dst[m×n] = lhs[m×k] · rhs[k×n]`, single-threaded (callers parallelize
/// over sequences).
pub(crate) fn gemm(dst: MatMut, m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat) {
    let dst_ok = m == 0 || n == 0 || (m - 1) * dst.row + n <= dst.data.len();
    assert!(dst_ok && lhs.covers(m, k) && rhs.covers(k, n), "gemm: operand out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the assertion above keeps every index gemm computes from these
    // strides inside the slices; `dst` is exclusively borrowed and does not
    // alias the shared operands.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            dst.row as isize,
            false,
            lhs.data.as_ptr(),
            lhs.col as isize,
            lhs.row as isize,
            rhs.data.as_ptr(),
            rhs.col as isize,
            rhs.row as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libm_erf(x: f64) -> f64 {
        // Abramowitz-Stegun 7.1.26 is too coarse to judge ours; integrate.
        let steps = 20_000;
        let h = x / steps as f64;
        let f = |t: f64| (-t * t).exp();
        let mut sum = f(0.0) + f(x);
        for i in 1..steps {
            sum += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        sum * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_matches_std_within_a_few_ulp() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, exact) = (exp(x), (x as f64).exp());
            let rel = ((ours as f64 - exact) / exact).abs();
            assert!(rel < 3e-7, "exp({x}) = {ours}, expected {exact} (rel {rel})");
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e4) >= 0.0 && exp(-1e4) < 1e-37);
    }

    #[test]
    fn erf_matches_the_integral() {
        let mut x = -5.0f32;
        while x < 5.0 {
            let (ours, exact) = (erf(x) as f64, libm_erf(x as f64));
            assert!((ours - exact).abs() < 5e-7, "erf({x}) = {ours}, expected {exact}");
            x += 0.013;
        }
    }

    #[test]
    fn gemm_respects_strides() {
        // lhs 2x3 row-major; rhs given transposed (3x2 viewed from a 2x3 buffer).
        let lhs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let rhs_t = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let mut dst = [0.0; 4];
        let out = MatMut { data: &mut dst, row: 2 };
        gemm(out, 2, 2, 3, Mat { data: &lhs, row: 3, col: 1 }, Mat { data: &rhs_t, row: 1, col: 3 });
        assert_eq!(dst, [4.0, 2.0, 10.0, 5.0]);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut row = [1.0, 3.0, 2.0, -50.0];
        softmax(&mut row, 1.0);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[1] > row[2] && row[2] > row[0] && row[3] < 1e-20);
    }
}
