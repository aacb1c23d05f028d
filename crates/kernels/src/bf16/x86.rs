//! The x86-64 register tile of [`super::Path::Avx2`].

use super::{COLUMN_OF_SLOT, PANEL, ROWS};

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
    // The tile is in column order; store() expects slot order.
    let mut columns = [0.0f32; ROWS * PANEL];
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: 16 floats at row r of a [6, 16] array.
        unsafe {
            _mm256_storeu_ps(columns.as_mut_ptr().add(r * PANEL), acc[0]);
            _mm256_storeu_ps(columns.as_mut_ptr().add(r * PANEL + 8), acc[1]);
        }
    }
    let mut tile = [0.0f32; ROWS * PANEL];
    for r in 0..R {
        for (slot, &c) in COLUMN_OF_SLOT.iter().enumerate() {
            tile[r * PANEL + slot] = columns[r * PANEL + c];
        }
    }
    tile
}
