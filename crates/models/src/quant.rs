//! Quantized matrix-vector products for the native CPU engine.
//!
//! Weights stay in their GGUF block formats (Q4_0, Q4_1, Q8_0: 32 values per
//! block with an f16 scale, and an f16 minimum for Q4_1); activations are
//! quantized to 8 bits per block with their integer sums (ggml's Q8_1), so
//! each block's dot product is integer arithmetic and two multiplies. The
//! AVX2 kernels are chosen at run time; portable ones are the reference.

// SIMD kernels: every unsafe block states the CPU features and bounds it relies on.
#![allow(unsafe_code)]

use candle_core::quantized::GgmlDType;
use half::f16;
use rayon::prelude::*;

use crate::kernels::{Mat, MatMut, gemm};

/// Values per quantization block.
pub(crate) const BLOCK: usize = 32;

/// The weight block formats the native engine multiplies directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightType {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl WeightType {
    /// The format of a GGUF tensor type, if supported.
    pub(crate) fn from_ggml(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4_0 => Some(Self::Q4_0),
            GgmlDType::Q4_1 => Some(Self::Q4_1),
            GgmlDType::Q8_0 => Some(Self::Q8_0),
            _ => None,
        }
    }

    /// Bytes per block of 32 values.
    pub(crate) fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
        }
    }
}

/// A weight matrix of `rows × cols` values in a GGUF block format, row-major.
pub(crate) struct QMatrix {
    pub kind: WeightType,
    pub rows: usize,
    pub cols: usize,
    data: Vec<u8>,
    dot: DotFn,
}

impl QMatrix {
    /// Wraps raw GGUF tensor data; checks that the sizes agree.
    pub(crate) fn new(kind: WeightType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self, String> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(format!("rows of {cols} values are not whole blocks of {BLOCK}"));
        }
        let expected = rows * cols / BLOCK * kind.block_bytes();
        if data.len() != expected {
            return Err(format!("{} bytes of data for {rows}×{cols} {kind:?} (expected {expected})", data.len()));
        }
        Ok(Self { kind, rows, cols, data, dot: dot_fn(kind) })
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * self.kind.block_bytes()
    }

    fn row(&self, r: usize) -> &[u8] {
        let n = self.row_bytes();
        &self.data[r * n..(r + 1) * n]
    }

    /// Row `r` as floats, into `out` (`cols` long).
    pub(crate) fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let bb = self.kind.block_bytes();
        for (block, out) in self.row(r).chunks_exact(bb).zip(out.as_chunks_mut::<BLOCK>().0) {
            let d = half(block, 0);
            match self.kind {
                WeightType::Q8_0 => {
                    for (o, &q) in out.iter_mut().zip(&block[2..]) {
                        *o = d * f32::from(q as i8);
                    }
                }
                WeightType::Q4_0 | WeightType::Q4_1 => {
                    let (min, qs) = match self.kind {
                        WeightType::Q4_1 => (half(block, 2), &block[4..]),
                        _ => (-8.0 * d, &block[2..]),
                    };
                    for (j, &q) in qs.iter().enumerate() {
                        out[j] = d * f32::from(q & 0x0F) + min;
                        out[j + BLOCK / 2] = d * f32::from(q >> 4) + min;
                    }
                }
            }
        }
    }

    /// `out[t * rows + r] = row r · x[t]` for every row `t` of `x` (rows of
    /// `cols` floats), parallel over weight rows on the current rayon pool.
    /// A few rows (decoding) use the integer kernels on 8-bit activations;
    /// many (a prompt) dequantize tiles of weights once and run a float GEMM.
    pub(crate) fn matmul(&self, x: &[f32], out: &mut [f32]) {
        assert_eq!(x.len() % self.cols, 0, "activation width does not match the weights");
        let n = x.len() / self.cols;
        assert_eq!(out.len(), n * self.rows, "output size");
        let rows_per_task = self.rows.div_ceil(rayon::current_num_threads() * 4).max(16);
        if n == 1 {
            let x = QActs::quantize(x, self.cols);
            let (q, d, s) = x.row(0);
            out.par_chunks_mut(rows_per_task).enumerate().for_each(|(chunk, out)| {
                let first = chunk * rows_per_task;
                for (i, o) in out.iter_mut().enumerate() {
                    *o = (self.dot)(self.row(first + i), q, d, s);
                }
            });
            return;
        }
        // Each task turns its weight rows into a float tile once and
        // multiplies every token by it: [n × rows_per_task] results.
        let rows_per_task = rows_per_task.min(64);
        let tiles: Vec<Vec<f32>> = (0..self.rows.div_ceil(rows_per_task))
            .into_par_iter()
            .map(|chunk| {
                let first = chunk * rows_per_task;
                let rows = rows_per_task.min(self.rows - first);
                let mut weights = vec![0.0f32; rows * self.cols];
                for (i, row) in weights.chunks_exact_mut(self.cols).enumerate() {
                    self.dequantize_row(first + i, row);
                }
                let mut tile = vec![0.0f32; n * rows];
                gemm(
                    MatMut { data: &mut tile, row: rows },
                    n,
                    rows,
                    self.cols,
                    Mat { data: x, row: self.cols, col: 1 },
                    Mat { data: &weights, row: 1, col: self.cols },
                );
                tile
            })
            .collect();
        for (chunk, tile) in tiles.iter().enumerate() {
            let first = chunk * rows_per_task;
            let rows = tile.len() / n;
            for (t, values) in tile.chunks_exact(rows).enumerate() {
                out[t * self.rows + first..t * self.rows + first + rows].copy_from_slice(values);
            }
        }
    }
}

/// Activation rows quantized to 8 bits per block of 32: the integers, the
/// scale of each block and the sum of each block's integers.
pub(crate) struct QActs {
    cols: usize,
    q: Vec<i8>,
    d: Vec<f32>,
    sum: Vec<f32>,
}

impl QActs {
    /// Quantizes `x`, rows of `cols` floats (`cols` a multiple of 32).
    pub(crate) fn quantize(x: &[f32], cols: usize) -> Self {
        assert!(cols.is_multiple_of(BLOCK) && x.len().is_multiple_of(cols), "activations are not whole blocks");
        let blocks = x.len() / BLOCK;
        let mut q = vec![0i8; x.len()];
        let mut d = vec![0.0f32; blocks];
        let mut sum = vec![0.0f32; blocks];
        let (xs, qs) = (x.as_chunks::<BLOCK>().0, q.as_chunks_mut::<BLOCK>().0);
        for (((x, q), d), sum) in xs.iter().zip(qs).zip(&mut d).zip(&mut sum) {
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            *d = amax / 127.0;
            let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            let mut total = 0i32;
            for (q, &v) in q.iter_mut().zip(x) {
                *q = (v * inv).round() as i8;
                total += i32::from(*q);
            }
            *sum = total as f32;
        }
        Self { cols, q, d, sum }
    }

    fn row(&self, t: usize) -> (&[i8], &[f32], &[f32]) {
        let blocks = self.cols / BLOCK;
        (
            &self.q[t * self.cols..(t + 1) * self.cols],
            &self.d[t * blocks..(t + 1) * blocks],
            &self.sum[t * blocks..(t + 1) * blocks],
        )
    }
}

/// One weight row (raw blocks) · one activation row (values, scales, sums).
type DotFn = fn(&[u8], &[i8], &[f32], &[f32]) -> f32;

fn half(block: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[at], block[at + 1]])).to_f32()
}

fn dot_fn(kind: WeightType) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    if let Some(kernel) = avx2::select(kind) {
        return kernel;
    }
    match kind {
        WeightType::Q4_0 => |w, q, d, s| portable::dot_q4(w, q, d, s, false),
        WeightType::Q4_1 => |w, q, d, s| portable::dot_q4(w, q, d, s, true),
        WeightType::Q8_0 => portable::dot_q8_0,
    }
}

/// The reference kernels.
mod portable {
    use super::{BLOCK, half};

    pub(super) fn dot_q4(w: &[u8], q: &[i8], d: &[f32], s: &[f32], with_min: bool) -> f32 {
        let bb = if with_min { 20 } else { 18 };
        let mut total = 0.0;
        for (((block, q), &dx), &sx) in w.chunks_exact(bb).zip(q.as_chunks::<BLOCK>().0).zip(d).zip(s) {
            let dw = half(block, 0);
            let qs = &block[bb - 16..];
            let mut acc = 0i32;
            for (j, &byte) in qs.iter().enumerate() {
                acc += i32::from(byte & 0x0F) * i32::from(q[j]) + i32::from(byte >> 4) * i32::from(q[j + 16]);
            }
            let offset = if with_min { half(block, 2) } else { -8.0 * dw };
            total += dw * dx * acc as f32 + offset * dx * sx;
        }
        total
    }

    pub(super) fn dot_q8_0(w: &[u8], q: &[i8], d: &[f32], _s: &[f32]) -> f32 {
        let mut total = 0.0;
        for ((block, q), &dx) in w.as_chunks::<34>().0.iter().zip(q.as_chunks::<BLOCK>().0).zip(d) {
            let acc: i32 = block[2..].iter().zip(q).map(|(&w, &x)| i32::from(w as i8) * i32::from(x)).sum();
            total += half(block, 0) * dx * acc as f32;
        }
        total
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{DotFn, WeightType};

    /// The fastest kernels this CPU runs, if it has AVX2 at all.
    pub(super) fn select(kind: WeightType) -> Option<DotFn> {
        let has = |f: &str| match f {
            "avx2" => std::is_x86_feature_detected!("avx2"),
            "fma" => std::is_x86_feature_detected!("fma"),
            "f16c" => std::is_x86_feature_detected!("f16c"),
            "avx512vnni" => std::is_x86_feature_detected!("avx512vnni"),
            "avx512vl" => std::is_x86_feature_detected!("avx512vl"),
            _ => false,
        };
        if !["avx2", "fma", "f16c"].into_iter().all(has) {
            return None;
        }
        let vnni = has("avx512vnni") && has("avx512vl");
        // SAFETY (every closure): the features each kernel is compiled for
        // were detected above; the kernels check their slice lengths.
        Some(match (kind, vnni) {
            (WeightType::Q4_0, true) => |w, q, d, s| unsafe { vnni::dot_q4(w, q, d, s, false) },
            (WeightType::Q4_1, true) => |w, q, d, s| unsafe { vnni::dot_q4(w, q, d, s, true) },
            (WeightType::Q8_0, true) => |w, q, d, s| unsafe { vnni::dot_q8_0(w, q, d, s) },
            (WeightType::Q4_0, false) => |w, q, d, s| unsafe { plain::dot_q4(w, q, d, s, false) },
            (WeightType::Q4_1, false) => |w, q, d, s| unsafe { plain::dot_q4(w, q, d, s, true) },
            (WeightType::Q8_0, false) => |w, q, d, s| unsafe { plain::dot_q8_0(w, q, d, s) },
        })
    }

    /// The same kernels compiled twice: `mul_sum` is the step that sums
    /// groups of four u8 × i8 products into i32 lanes, one VNNI instruction
    /// or two AVX2 ones.
    macro_rules! kernels {
        ($module:ident, $features:literal, |$a:ident, $b:ident| $mul_sum:expr) => {
            mod $module {
                use std::arch::x86_64::*;

                use super::super::BLOCK;
                use super::hsum;

                #[inline(always)]
                unsafe fn mul_sum($a: __m256i, $b: __m256i) -> __m256i {
                    // SAFETY: only inlined into kernels with the features enabled.
                    unsafe { $mul_sum }
                }

                /// Q4_0 (`with_min == false`) or Q4_1 weights · 8-bit activations.
                #[target_feature(enable = $features)]
                pub(in super::super) unsafe fn dot_q4(w: &[u8], q: &[i8], d: &[f32], s: &[f32], with_min: bool) -> f32 {
                    let bb = if with_min { 20 } else { 18 };
                    let blocks = d.len();
                    assert!(w.len() >= blocks * bb && q.len() >= blocks * BLOCK && s.len() >= blocks);
                    let mask = _mm_set1_epi8(0x0F);
                    let mut acc = [_mm256_setzero_ps(); 2];
                    let mut offsets = _mm_setzero_ps();
                    for b in 0..blocks {
                        // SAFETY: the assertion above keeps every read inside the slices.
                        unsafe {
                            let block = w.as_ptr().add(b * bb);
                            // d (and m for Q4_1) as floats in one conversion.
                            let scales = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(block.cast::<i32>())));
                            let dw = _mm_cvtss_f32(scales);
                            let raw = _mm_loadu_si128(block.add(bb - 16).cast());
                            let lo = _mm_and_si128(raw, mask);
                            let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
                            let xv = _mm256_loadu_si256(q.as_ptr().add(b * BLOCK).cast());
                            let dots = _mm256_cvtepi32_ps(mul_sum(_mm256_set_m128i(hi, lo), xv));
                            let dx = *d.get_unchecked(b);
                            let lane = &mut acc[b & 1];
                            *lane = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx), dots, *lane);
                            // The offset term: m (Q4_1) or -8 d (Q4_0), times dx · Σx.
                            let offset = if with_min { _mm_movehdup_ps(scales) } else { _mm_set_ss(-8.0 * dw) };
                            offsets = _mm_fmadd_ss(offset, _mm_set_ss(dx * *s.get_unchecked(b)), offsets);
                        }
                    }
                    hsum(_mm256_add_ps(acc[0], acc[1])) + _mm_cvtss_f32(offsets)
                }

                /// Q8_0 weights · 8-bit activations.
                #[target_feature(enable = $features)]
                pub(in super::super) unsafe fn dot_q8_0(w: &[u8], q: &[i8], d: &[f32], _s: &[f32]) -> f32 {
                    let blocks = d.len();
                    assert!(w.len() >= blocks * 34 && q.len() >= blocks * BLOCK);
                    let mut acc = [_mm256_setzero_ps(); 2];
                    for b in 0..blocks {
                        // SAFETY: the assertion above keeps every read inside the slices.
                        unsafe {
                            let block = w.as_ptr().add(b * 34);
                            let wv = _mm256_loadu_si256(block.add(2).cast());
                            let xv = _mm256_loadu_si256(q.as_ptr().add(b * BLOCK).cast());
                            // u8 × i8 products: move w's sign onto x.
                            let dots = mul_sum(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
                            let dw = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
                                std::ptr::read_unaligned(block.cast::<u16>()),
                            ))));
                            let scale = _mm256_set1_ps(dw * *d.get_unchecked(b));
                            let lane = &mut acc[b & 1];
                            *lane = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dots), *lane);
                        }
                    }
                    hsum(_mm256_add_ps(acc[0], acc[1]))
                }
            }
        };
    }

    kernels!(plain, "avx2,fma,f16c", |a, b| _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)));
    kernels!(vnni, "avx2,fma,f16c,avx512vnni,avx512vl", |a, b| _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b));

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (xorshift).
    fn bytes(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    /// Random blocks with sane f16 scales (and minimums) in front.
    fn matrix(kind: WeightType, rows: usize, cols: usize, seed: u64) -> QMatrix {
        let mut data = bytes(rows * cols / BLOCK * kind.block_bytes(), seed);
        for (i, block) in data.chunks_exact_mut(kind.block_bytes()).enumerate() {
            let scale = f16::from_f32(0.01 + (i % 7) as f32 * 0.003).to_bits().to_le_bytes();
            block[..2].copy_from_slice(&scale);
            if kind == WeightType::Q4_1 {
                block[2..4].copy_from_slice(&f16::from_f32(-0.05 * (i % 3) as f32).to_bits().to_le_bytes());
            }
        }
        QMatrix::new(kind, rows, cols, data).unwrap()
    }

    fn floats(n: usize, seed: u64) -> Vec<f32> {
        bytes(n, seed).into_iter().map(|b| (f32::from(b) - 127.5) / 40.0).collect()
    }

    #[test]
    fn matmul_agrees_with_float_arithmetic_for_every_type() {
        for kind in [WeightType::Q4_0, WeightType::Q4_1, WeightType::Q8_0] {
            let (rows, cols, tokens) = (37, 256, 3);
            let w = matrix(kind, rows, cols, 7);
            let x = floats(tokens * cols, 11);
            let mut out = vec![0.0; tokens * rows];
            w.matmul(&x, &mut out);
            let mut row = vec![0.0; cols];
            for r in 0..rows {
                w.dequantize_row(r, &mut row);
                for t in 0..tokens {
                    let exact: f32 = row.iter().zip(&x[t * cols..(t + 1) * cols]).map(|(a, b)| a * b).sum();
                    let got = out[t * rows + r];
                    // 8-bit activations: error well under 1% of the magnitude.
                    let scale = row.iter().map(|v| v.abs()).sum::<f32>() * 3.2 / 127.0;
                    assert!((got - exact).abs() <= scale.max(1e-3), "{kind:?} row {r} token {t}: {got} vs {exact}");
                }
            }
        }
    }

    #[test]
    fn simd_and_portable_kernels_agree() {
        for kind in [WeightType::Q4_0, WeightType::Q4_1, WeightType::Q8_0] {
            let w = matrix(kind, 5, 512, 3);
            let x = QActs::quantize(&floats(512, 5), 512);
            let (q, d, s) = x.row(0);
            for r in 0..w.rows {
                let fast = (w.dot)(w.row(r), q, d, s);
                let reference = match kind {
                    WeightType::Q4_0 => portable::dot_q4(w.row(r), q, d, s, false),
                    WeightType::Q4_1 => portable::dot_q4(w.row(r), q, d, s, true),
                    WeightType::Q8_0 => portable::dot_q8_0(w.row(r), q, d, s),
                };
                assert!((fast - reference).abs() <= 1e-4 * reference.abs().max(1.0), "{kind:?}: {fast} vs {reference}");
            }
        }
    }

    #[test]
    fn sizes_are_checked() {
        assert!(QMatrix::new(WeightType::Q8_0, 2, 33, vec![0; 68]).is_err());
        assert!(QMatrix::new(WeightType::Q8_0, 2, 32, vec![0; 67]).is_err());
        assert!(QMatrix::new(WeightType::Q8_0, 2, 32, vec![0; 68]).is_ok());
    }
}
