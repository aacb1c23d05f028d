//! Matrix products of a few rows (one per sequence or beam in a decoding step) by a large
//! weight, at memory bandwidth: each weight element read once for all the rows, the weight split
//! over every core in contiguous runs, partial sums kept in L1.

use crate::team;

/// At most this many rows take these loops: past it a matmul has enough reuse of each weight
/// element that `gemm`'s packed microkernels win.
pub const MAX_ROWS: usize = 16;

/// A weight `[K, N]` as it lies in memory.
#[derive(Debug, Clone, Copy)]
pub enum Weight<'a> {
    /// Row-major `[K, N]`, row `k` at `data[k * stride..]` (stride ≥ N): a `Linear` weight
    /// stored `[in, out]`.
    Rows { data: &'a [f32], stride: usize },
    /// The transpose of a row-major `[N, K]`, column `n` at `data[n * stride..]` (stride ≥ K):
    /// a tied embedding `[vocab, d_model]` used as the LM head.
    Columns { data: &'a [f32], stride: usize },
}

/// `x · w` for `x` row-major `[m, k]` (contiguous) and `w` `[k, n]`: returns `[m, n]`
/// row-major. Panics when a slice is shorter than the shapes say.
pub fn few_rows_matmul(x: &[f32], m: usize, k: usize, w: Weight, n: usize) -> Vec<f32> {
    assert!(x.len() >= m * k, "few_rows_matmul: x holds {} values, [{m}, {k}] needs {}", x.len(), m * k);
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let (data, stride) = match w {
        Weight::Rows { data, stride } => (data, stride),
        Weight::Columns { data, stride } => (data, stride),
    };
    let (outer, inner) = match w {
        Weight::Rows { .. } => (k, n),
        Weight::Columns { .. } => (n, k),
    };
    assert!(stride >= inner && data.len() >= (outer - 1) * stride + inner, "few_rows_matmul: weight too short");

    // Below a few hundred thousand multiply-adds a thread hand-off costs more than it saves.
    let threads = if m * k * n < 1 << 18 { 1 } else { rayon::current_num_threads().max(1) };
    match w {
        Weight::Rows { .. } => rows_matmul(x, m, k, data, stride, n, threads),
        Weight::Columns { .. } => columns_matmul(x, m, k, data, stride, n, threads),
    }
}

/// Row-major weight: each task reads a contiguous run of weight rows (a slice of k), so the
/// hardware prefetchers see one long stream; the tasks' partial products are summed at the end.
fn rows_matmul(x: &[f32], m: usize, k: usize, w: &[f32], stride: usize, n: usize, threads: usize) -> Vec<f32> {
    let tasks = if threads == 1 { 1 } else { (threads * 2).min(k.div_ceil(16)) };
    let depth = k.div_ceil(tasks);
    let partial = |task: usize| {
        let (first, last) = (task * depth, ((task + 1) * depth).min(k));
        let mut out = vec![0.0f32; m * n]; // [m, n]
        // Column panels keep the partial sums of all m rows in L1 while the rows stream by.
        for start in (0..n).step_by(PANEL) {
            let cols = PANEL.min(n - start);
            let mut block = vec![0.0f32; m * cols];
            rows_block(&x[first..], k, m, last - first, &w[first * stride..], stride, start, cols, &mut block);
            place(&block, m, &mut out, n, start);
        }
        out
    };
    let partials: Vec<Vec<f32>> = if threads == 1 { vec![partial(0)] } else { team::map(tasks, partial) };
    let mut partials = partials.into_iter();
    let mut out = partials.next().expect("at least one task");
    for part in partials {
        out.iter_mut().zip(part).for_each(|(o, p)| *o += p);
    }
    out
}

/// Columns per panel of the row-major case: 1,024 floats (4 KiB) of each weight row.
const PANEL: usize = 1024;

/// Transposed weight: each column is a contiguous run of k values, so tasks take runs of columns.
fn columns_matmul(x: &[f32], m: usize, k: usize, w: &[f32], stride: usize, n: usize, threads: usize) -> Vec<f32> {
    let width = n.div_ceil(threads * 4).clamp(16, ((1 << 16) / k.max(1)).max(16));
    let starts: Vec<usize> = (0..n).step_by(width).collect();
    let compute = |&start: &usize| {
        let cols = width.min(n - start);
        let mut block = vec![0.0f32; m * cols]; // [m, cols]
        columns_block(x, m, k, w, stride, start, cols, &mut block);
        block
    };
    let blocks: Vec<Vec<f32>> = if threads == 1 { starts.iter().map(compute).collect() } else { team::map(starts.len(), |i| compute(&starts[i])) };
    let mut out = vec![0.0f32; m * n];
    for (&start, block) in starts.iter().zip(&blocks) {
        place(block, m, &mut out, n, start);
    }
    out
}

/// Copies `block` `[m, cols]` into columns `start..start + cols` of `out` `[m, n]`.
fn place(block: &[f32], m: usize, out: &mut [f32], n: usize, start: usize) {
    let cols = block.len() / m;
    for (row, values) in block.chunks_exact(cols).enumerate() {
        out[row * n + start..row * n + start + cols].copy_from_slice(values);
    }
}

/// `block[m, cols] += x[m, ..k] · w[..k, start..start + cols]`, weight row-major; row i of x
/// starts at `x[i * x_stride]`.
#[allow(clippy::too_many_arguments)]
fn rows_block(x: &[f32], x_stride: usize, m: usize, k: usize, w: &[f32], stride: usize, start: usize, cols: usize, block: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::rows_block(x, x_stride, m, k, w, stride, start, cols, block) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::rows_block(x, x_stride, m, k, w, stride, start, cols, block) };
    }
    rows_block_portable(x, x_stride, m, k, w, stride, start, cols, block)
}

/// `block[m, cols] = x[m, k] · w[start..start + cols, k]ᵀ`: one dot product per row and column.
#[allow(clippy::too_many_arguments)]
fn columns_block(x: &[f32], m: usize, k: usize, w: &[f32], stride: usize, start: usize, cols: usize, block: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::columns_block(x, m, k, w, stride, start, cols, block) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::columns_block(x, m, k, w, stride, start, cols, block) };
    }
    columns_block_portable(x, m, k, w, stride, start, cols, block)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[allow(clippy::too_many_arguments)]
fn rows_block_portable(x: &[f32], x_stride: usize, m: usize, k: usize, w: &[f32], stride: usize, start: usize, cols: usize, block: &mut [f32]) {
    for kk in 0..k {
        let row = &w[kk * stride + start..kk * stride + start + cols];
        for i in 0..m {
            let xv = x[i * x_stride + kk];
            for (acc, &wv) in block[i * cols..(i + 1) * cols].iter_mut().zip(row) {
                *acc += xv * wv;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn columns_block_portable(x: &[f32], m: usize, k: usize, w: &[f32], stride: usize, start: usize, cols: usize, block: &mut [f32]) {
    for j in 0..cols {
        let column = &w[(start + j) * stride..(start + j) * stride + k];
        for i in 0..m {
            block[i * cols + j] = x[i * k..(i + 1) * k].iter().zip(column).map(|(a, b)| a * b).sum();
        }
    }
}

/// The same loops with AVX2 registers (8 lanes) and fused multiply-adds.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Four weight rows at a time, so each partial sum is loaded and stored once per four rows.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn rows_block(x: &[f32], x_stride: usize, m: usize, k: usize, w: &[f32], stride: usize, start: usize, cols: usize, block: &mut [f32]) {
        assert!(k > 0 && x.len() >= (m - 1) * x_stride + k && block.len() >= m * cols && w.len() >= (k - 1) * stride + start + cols);
        let vectors = cols / 8 * 8;
        let (x, w, out) = (x.as_ptr(), w.as_ptr().add(start), block.as_mut_ptr());
        let mut kk = 0;
        while kk < k {
            let rows = (k - kk).min(4);
            for i in 0..m {
                let xs = x.add(i * x_stride + kk);
                let acc = out.add(i * cols);
                let mut scale = [_mm256_setzero_ps(); 4];
                for (r, s) in scale.iter_mut().enumerate().take(rows) {
                    *s = _mm256_set1_ps(*xs.add(r));
                }
                let row = |r: usize| w.add((kk + r) * stride);
                if rows == 4 {
                    let (w0, w1, w2, w3) = (row(0), row(1), row(2), row(3));
                    for j in (0..vectors).step_by(8) {
                        let mut sum = _mm256_loadu_ps(acc.add(j));
                        sum = _mm256_fmadd_ps(scale[0], _mm256_loadu_ps(w0.add(j)), sum);
                        sum = _mm256_fmadd_ps(scale[1], _mm256_loadu_ps(w1.add(j)), sum);
                        sum = _mm256_fmadd_ps(scale[2], _mm256_loadu_ps(w2.add(j)), sum);
                        sum = _mm256_fmadd_ps(scale[3], _mm256_loadu_ps(w3.add(j)), sum);
                        _mm256_storeu_ps(acc.add(j), sum);
                    }
                } else {
                    for j in (0..vectors).step_by(8) {
                        let mut sum = _mm256_loadu_ps(acc.add(j));
                        for (r, s) in scale.iter().enumerate().take(rows) {
                            sum = _mm256_fmadd_ps(*s, _mm256_loadu_ps(row(r).add(j)), sum);
                        }
                        _mm256_storeu_ps(acc.add(j), sum);
                    }
                }
                for j in vectors..cols {
                    for r in 0..rows {
                        *acc.add(j) += *xs.add(r) * *w.add((kk + r) * stride + j);
                    }
                }
            }
            kk += rows;
        }
    }

    /// Up to four rows of `x` against each weight column in one pass over the column, with two
    /// registers per row so that consecutive multiply-adds do not wait on each other.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn columns_block(x: &[f32], m: usize, k: usize, w: &[f32], stride: usize, start: usize, cols: usize, block: &mut [f32]) {
        assert!(x.len() >= m * k && block.len() >= m * cols && w.len() >= (start + cols - 1) * stride + k);
        let pairs = k / 16 * 16;
        for j in 0..cols {
            let column = w.as_ptr().add((start + j) * stride);
            for first in (0..m).step_by(4) {
                let rows = (m - first).min(4);
                let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                for kk in (0..pairs).step_by(16) {
                    let (w0, w1) = (_mm256_loadu_ps(column.add(kk)), _mm256_loadu_ps(column.add(kk + 8)));
                    for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                        let xr = x.as_ptr().add((first + r) * k + kk);
                        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(xr), w0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(_mm256_loadu_ps(xr.add(8)), w1, acc[1]);
                    }
                }
                for (r, acc) in acc.iter().enumerate().take(rows) {
                    let mut sum = horizontal_sum(_mm256_add_ps(acc[0], acc[1]));
                    let xr = x.as_ptr().add((first + r) * k);
                    for kk in pairs..k {
                        sum += *xr.add(kk) * *column.add(kk);
                    }
                    block[(first + r) * cols + j] = sum;
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn horizontal_sum(v: __m256) -> f32 {
        let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
        _mm_cvtss_f32(_mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1)))
    }
}


/// AVX-512 (16 lanes, 32 registers): enough registers to hold every row's multipliers, so each
/// weight vector is loaded once for up to five rows (row-major) or eight (transposed).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn rows_block(x: &[f32], x_stride: usize, m: usize, k: usize, w: &[f32], stride: usize, start: usize, cols: usize, block: &mut [f32]) {
        assert!(k > 0 && x.len() >= (m - 1) * x_stride + k && block.len() >= m * cols && w.len() >= (k - 1) * stride + start + cols);
        for first in (0..m).step_by(5) {
            let (x, out) = (x.as_ptr().add(first * x_stride), block.as_mut_ptr().add(first * cols));
            let w = w.as_ptr().add(start);
            match (m - first).min(5) {
                1 => rows_group::<1>(x, x_stride, k, w, stride, cols, out),
                2 => rows_group::<2>(x, x_stride, k, w, stride, cols, out),
                3 => rows_group::<3>(x, x_stride, k, w, stride, cols, out),
                4 => rows_group::<4>(x, x_stride, k, w, stride, cols, out),
                _ => rows_group::<5>(x, x_stride, k, w, stride, cols, out),
            }
        }
    }

    /// `R` rows against all k weight rows, four weight rows at a time: the 4·R multipliers stay
    /// in registers and each weight vector is loaded once for the R rows.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows_group<const R: usize>(x: *const f32, x_stride: usize, k: usize, w: *const f32, stride: usize, cols: usize, out: *mut f32) {
        let vectors = cols / 16 * 16;
        let mut kk = 0;
        while kk + 4 <= k {
            let mut scale = [[_mm512_setzero_ps(); 4]; R];
            for (i, row) in scale.iter_mut().enumerate() {
                for (r, s) in row.iter_mut().enumerate() {
                    *s = _mm512_set1_ps(*x.add(i * x_stride + kk + r));
                }
            }
            let rows = [w.add(kk * stride), w.add((kk + 1) * stride), w.add((kk + 2) * stride), w.add((kk + 3) * stride)];
            for j in (0..vectors).step_by(16) {
                let weights = [_mm512_loadu_ps(rows[0].add(j)), _mm512_loadu_ps(rows[1].add(j)), _mm512_loadu_ps(rows[2].add(j)), _mm512_loadu_ps(rows[3].add(j))];
                for (i, scale) in scale.iter().enumerate() {
                    let acc = out.add(i * cols + j);
                    let mut sum = _mm512_loadu_ps(acc);
                    for r in 0..4 {
                        sum = _mm512_fmadd_ps(scale[r], weights[r], sum);
                    }
                    _mm512_storeu_ps(acc, sum);
                }
            }
            for j in vectors..cols {
                for i in 0..R {
                    for (r, row) in rows.iter().enumerate() {
                        *out.add(i * cols + j) += *x.add(i * x_stride + kk + r) * *row.add(j);
                    }
                }
            }
            kk += 4;
        }
        for kk in kk..k {
            let row = w.add(kk * stride);
            for i in 0..R {
                let xv = *x.add(i * x_stride + kk);
                for j in 0..cols {
                    *out.add(i * cols + j) += xv * *row.add(j);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn columns_block(x: &[f32], m: usize, k: usize, w: &[f32], stride: usize, start: usize, cols: usize, block: &mut [f32]) {
        assert!(x.len() >= m * k && block.len() >= m * cols && w.len() >= (start + cols - 1) * stride + k);
        for first in (0..m).step_by(5) {
            let (x, out) = (x.as_ptr().add(first * k), block.as_mut_ptr().add(first * cols));
            let w = w.as_ptr().add(start * stride);
            match (m - first).min(5) {
                1 => columns_group::<1>(x, k, w, stride, cols, out),
                2 => columns_group::<2>(x, k, w, stride, cols, out),
                3 => columns_group::<3>(x, k, w, stride, cols, out),
                4 => columns_group::<4>(x, k, w, stride, cols, out),
                _ => columns_group::<5>(x, k, w, stride, cols, out),
            }
        }
    }

    /// `R` rows against the weight columns four at a time: each row vector of x is loaded once
    /// for four columns and each column vector once for the R rows.
    #[target_feature(enable = "avx512f")]
    unsafe fn columns_group<const R: usize>(x: *const f32, k: usize, w: *const f32, stride: usize, cols: usize, out: *mut f32) {
        let quads = cols / 4 * 4;
        for j in (0..quads).step_by(4) {
            columns_tile::<R, 4>(x, k, w.add(j * stride), stride, cols, out.add(j));
        }
        for j in quads..cols {
            columns_tile::<R, 1>(x, k, w.add(j * stride), stride, cols, out.add(j));
        }
    }

    /// One `R × C` tile of dot products over k.
    #[target_feature(enable = "avx512f")]
    unsafe fn columns_tile<const R: usize, const C: usize>(x: *const f32, k: usize, w: *const f32, stride: usize, out_stride: usize, out: *mut f32) {
        let body = k / 16 * 16;
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for kk in (0..body).step_by(16) {
            let mut columns = [_mm512_setzero_ps(); C];
            for (c, column) in columns.iter_mut().enumerate() {
                *column = _mm512_loadu_ps(w.add(c * stride + kk));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let xr = _mm512_loadu_ps(x.add(r * k + kk));
                for c in 0..C {
                    acc[c] = _mm512_fmadd_ps(xr, columns[c], acc[c]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (c, acc) in acc.iter().enumerate() {
                let mut sum = _mm512_reduce_add_ps(*acc);
                for kk in body..k {
                    sum += *x.add(r * k + kk) * *w.add(c * stride + kk);
                }
                *out.add(r * out_stride + c) = sum;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop in f64.
    fn reference(x: &[f32], m: usize, k: usize, w: impl Fn(usize, usize) -> f32, n: usize) -> Vec<f64> {
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|kk| x[i * k + kk] as f64 * w(kk, j) as f64).sum();
            }
        }
        out
    }

    /// Deterministic values in [-1, 1) with no pattern a wrong index could line up with.
    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn assert_close(got: &[f32], want: &[f64], k: usize) {
        assert_eq!(got.len(), want.len());
        // f32 sums of k products of values below 1 in magnitude.
        let tolerance = 4.0 * f32::EPSILON as f64 * k as f64;
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((*g as f64 - w).abs() <= tolerance, "element {i}: {g} against {w}");
        }
    }

    // Shapes with remainders everywhere: k not a multiple of 4 or 32, n not of the chunk, strides
    // wider than the matrix, rows from 1 to MAX_ROWS, and sizes on both sides of the threading cut.
    const SHAPES: [(usize, usize, usize); 6] = [(1, 7, 5), (3, 37, 70), (5, 768, 2304), (2, 130, 1001), (16, 64, 300), (1, 3072, 768)];

    #[test]
    fn row_major_weights_match_the_triple_loop() {
        for (case, &(m, k, n)) in SHAPES.iter().enumerate() {
            let stride = n + 3;
            let x = values(m * k, case as u32);
            let w = values(k * stride, 100 + case as u32);
            let got = few_rows_matmul(&x, m, k, Weight::Rows { data: &w, stride }, n);
            assert_close(&got, &reference(&x, m, k, |kk, j| w[kk * stride + j], n), k);
        }
    }

    #[test]
    fn transposed_weights_match_the_triple_loop() {
        for (case, &(m, k, n)) in SHAPES.iter().enumerate() {
            let stride = k + 5;
            let x = values(m * k, 200 + case as u32);
            let w = values(n * stride, 300 + case as u32);
            let got = few_rows_matmul(&x, m, k, Weight::Columns { data: &w, stride }, n);
            assert_close(&got, &reference(&x, m, k, |kk, j| w[j * stride + kk], n), k);
        }
    }

    #[test]
    fn the_portable_loops_match_the_vector_ones_for_every_row_count() {
        for m in 1..=MAX_ROWS {
            let (k, n) = (133, 97);
            let x = values(m * k, 10 + m as u32);
            let w = values(k * n, 20 + m as u32);
            let (mut portable, mut vector) = (vec![0.0; m * n], vec![0.0; m * n]);
            rows_block_portable(&x, k, m, k, &w, n, 0, n, &mut portable);
            rows_block(&x, k, m, k, &w, n, 0, n, &mut vector);
            assert_close(&vector, &portable.iter().map(|&v| v as f64).collect::<Vec<_>>(), k);
            let (mut portable, mut vector) = (vec![0.0; m * n], vec![0.0; m * n]);
            columns_block_portable(&x, m, k, &w, k, 0, n, &mut portable);
            columns_block(&x, m, k, &w, k, 0, n, &mut vector);
            assert_close(&vector, &portable.iter().map(|&v| v as f64).collect::<Vec<_>>(), k);
        }
    }

    #[test]
    fn the_portable_loops_match_the_vector_ones() {
        let (m, k, n) = (4, 133, 97);
        let x = values(m * k, 7);
        let w = values(k * n, 8);
        let mut portable = vec![0.0; m * n];
        let mut vector = vec![0.0; m * n];
        rows_block_portable(&x, k, m, k, &w, n, 0, n, &mut portable);
        rows_block(&x, k, m, k, &w, n, 0, n, &mut vector);
        assert_close(&portable, &reference(&x, m, k, |kk, j| w[kk * n + j], n), k);
        assert_close(&vector, &portable.iter().map(|&v| v as f64).collect::<Vec<_>>(), k);

        let (mut portable, mut vector) = (vec![0.0; m * n], vec![0.0; m * n]);
        columns_block_portable(&x, m, k, &w, k, 0, n.min(w.len() / k), &mut portable);
        columns_block(&x, m, k, &w, k, 0, n.min(w.len() / k), &mut vector);
        let want = reference(&x, m, k, |kk, j| w[j * k + kk], n);
        assert_close(&portable, &want, k);
        assert_close(&vector, &want, k);
    }
}
