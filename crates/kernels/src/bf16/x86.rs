//! The x86-64 register tiles of [`super::Path::Avx2`] and [`super::Path::Avx512Bf16`].

use super::{slot_order, PANEL, ROWS};

/// The AVX2 register tile: 2·R accumulators of 8 f32, one 32-byte panel row widened per step.
///
/// # Safety
/// The CPU runs AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_avx2<const R: usize>(x: &[f32], k: usize, panel: &[u16]) -> [f32; ROWS * PANEL] {
    use std::arch::x86_64::*;
    assert!(x.len() >= R * k && panel.len() >= k * PANEL);
    let zero = _mm256_setzero_si256();
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for i in 0..k {
        // SAFETY: row i of the panel is in bounds (asserted above); unaligned loads.
        let raw = unsafe { _mm256_loadu_si256(panel.as_ptr().add(i * PANEL) as *const __m256i) };
        let low = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, raw)); // columns 0–7
        let high = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, raw)); // columns 8–15
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r < R and i < k, inside x (asserted above).
            let xv = _mm256_set1_ps(unsafe { *x.get_unchecked(r * k + i) });
            acc[0] = _mm256_fmadd_ps(xv, low, acc[0]);
            acc[1] = _mm256_fmadd_ps(xv, high, acc[1]);
        }
    }
    let mut columns = [0.0f32; ROWS * PANEL];
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: 16 floats at row r of a [6, 16] array.
        unsafe {
            _mm256_storeu_ps(columns.as_mut_ptr().add(r * PANEL), acc[0]);
            _mm256_storeu_ps(columns.as_mut_ptr().add(r * PANEL + 8), acc[1]);
        }
    }
    slot_order::<R>(&columns)
}

/// The AVX512-BF16 register tile: R accumulators of 16 f32 (the panel's columns in order). Each
/// pair of rows of `k` is one 64-byte block of the pair panel, and one `vdpbf16ps` per row adds
/// to each column the products of its two weights with the row's two activations, broadcast
/// as one 32-bit pair (bf16 products are exact in f32; the instruction rounds each addition to
/// nearest even).
///
/// # Safety
/// The CPU runs AVX-512F and AVX512-BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn tile_avx512bf16<const R: usize>(x: &[u16], pairs: usize, panel: &[u16]) -> [f32; ROWS * PANEL] {
    use std::arch::x86_64::*;
    let width = 2 * pairs;
    assert!(x.len() >= R * width && panel.len() >= pairs * 2 * PANEL);
    // Two sums per row, of the even and the odd pairs: 2·R independent chains, enough to keep
    // the instruction's pipeline full (its latency is several cycles).
    let mut acc = [[_mm512_setzero_ps(); R]; 2];
    let step = |acc: &mut [__m512; R], i: usize| {
        // SAFETY: block i of the panel is in bounds (asserted above); an unaligned load of 32
        // bf16, reinterpreted as the bf16 vector it is.
        let w: __m512bh = unsafe { std::mem::transmute(_mm512_loadu_si512(panel.as_ptr().add(i * 2 * PANEL) as *const __m512i)) };
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: the pair at 2i of row r is inside x (asserted above); it may be unaligned.
            let pair = unsafe { (x.as_ptr().add(r * width + 2 * i) as *const i32).read_unaligned() };
            // SAFETY: 16 copies of a pair of bf16, reinterpreted as the 32 bf16 they are.
            let xv: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(pair)) };
            *acc = _mm512_dpbf16_ps(*acc, w, xv);
        }
    };
    let [even, odd] = &mut acc;
    for i in (0..pairs / 2 * 2).step_by(2) {
        step(even, i);
        step(odd, i + 1);
    }
    if pairs % 2 == 1 {
        step(even, pairs - 1);
    }
    let acc: [__m512; R] = std::array::from_fn(|r| _mm512_add_ps(even[r], odd[r]));
    let mut columns = [0.0f32; ROWS * PANEL];
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: 16 floats at row r of a [6, 16] array.
        unsafe { _mm512_storeu_ps(columns.as_mut_ptr().add(r * PANEL), *acc) };
    }
    slot_order::<R>(&columns)
}

