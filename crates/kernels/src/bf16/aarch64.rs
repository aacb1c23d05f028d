//! The aarch64 register tiles: [`super::Path::Neon`] (f32 FMA on widened bf16) and
//! [`super::Path::Bfdot`] (FEAT_BF16's `BFDOT`).

use super::{slot_order, PANEL, ROWS};

/// The NEON register tile: 4·R accumulators of 4 f32 in slot order, a panel row's 16 bf16
/// widened by `SHLL #16` (a bf16 is the top half of its f32).
///
/// # Safety
/// The CPU runs NEON (every aarch64 does).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
pub(super) unsafe fn tile_neon<const R: usize>(x: &[f32], k: usize, panel: &[u16]) -> [f32; ROWS * PANEL] {
    use std::arch::aarch64::*;
    assert!(x.len() >= R * k && panel.len() >= k * PANEL);
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    for i in 0..k {
        // SAFETY: row i of the panel is in bounds (asserted above).
        let (low, high) = unsafe { (vld1q_u16(panel.as_ptr().add(i * PANEL)), vld1q_u16(panel.as_ptr().add(i * PANEL + 8))) };
        let w = [
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(low))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(low)),
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(high))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(high)),
        ];
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r < R and i < k, inside x (asserted above).
            let xv = vdupq_n_f32(unsafe { *x.get_unchecked(r * k + i) });
            for (a, w) in acc.iter_mut().zip(w) {
                *a = vfmaq_f32(*a, xv, w);
            }
        }
    }
    let mut tile = [0.0f32; ROWS * PANEL];
    for (r, acc) in acc.iter().enumerate() {
        for (v, a) in acc.iter().enumerate() {
            // SAFETY: 4 floats at slots 4v.. of row r of a [6, 16] array.
            unsafe { vst1q_f32(tile.as_mut_ptr().add(r * PANEL + 4 * v), *a) };
        }
    }
    tile
}

/// `acc + a·b` pair by pair: lane i adds `a[2i]·b[2i] + a[2i+1]·b[2i+1]` (bf16 products, f32
/// sums). Stable Rust has no intrinsic for it, so it is one instruction of inline assembly.
///
/// # Safety
/// The CPU runs FEAT_BF16.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn bfdot(acc: std::arch::aarch64::float32x4_t, a: std::arch::aarch64::uint16x8_t, b: std::arch::aarch64::uint16x8_t) -> std::arch::aarch64::float32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction; the caller checked the feature.
    unsafe {
        std::arch::asm!(".arch_extension bf16", "bfdot {acc:v}.4s, {a:v}.8h, {b:v}.8h", acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b, options(pure, nomem, nostack));
    }
    acc
}

/// The BFDOT register tile: 4·R accumulators of 4 f32 (columns in order), each pair of rows of
/// `k` taken by one `BFDOT` per 4 columns against the activation pair broadcast.
///
/// # Safety
/// The CPU runs FEAT_BF16.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
pub(super) unsafe fn tile_bfdot<const R: usize>(x: &[u16], pairs: usize, panel: &[u16]) -> [f32; ROWS * PANEL] {
    use std::arch::aarch64::*;
    let width = 2 * pairs;
    assert!(x.len() >= R * width && panel.len() >= pairs * 2 * PANEL);
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    for i in 0..pairs {
        // SAFETY: block i of the panel is in bounds (asserted above).
        let w: [uint16x8_t; 4] = std::array::from_fn(|v| unsafe { vld1q_u16(panel.as_ptr().add(i * 2 * PANEL + 8 * v)) });
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: the pair at 2i of row r is inside x (asserted above); it may be unaligned.
            let pair = unsafe { (x.as_ptr().add(r * width + 2 * i) as *const u32).read_unaligned() };
            let xv = vreinterpretq_u16_u32(vdupq_n_u32(pair));
            for (a, w) in acc.iter_mut().zip(w) {
                // SAFETY: FEAT_BF16 runs here (the caller's contract).
                *a = unsafe { bfdot(*a, w, xv) };
            }
        }
    }
    let mut columns = [0.0f32; ROWS * PANEL];
    for (r, acc) in acc.iter().enumerate() {
        for (v, a) in acc.iter().enumerate() {
            // SAFETY: 4 floats at columns 4v.. of row r of a [6, 16] array.
            unsafe { vst1q_f32(columns.as_mut_ptr().add(r * PANEL + 4 * v), *a) };
        }
    }
    slot_order::<R>(&columns)
}
