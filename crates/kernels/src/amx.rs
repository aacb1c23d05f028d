//! bf16 matrix products with f32 accumulation on Intel AMX tiles, for the frozen weights of
//! prefix-tuning (`--dtype bf16`).
//!
//! An AMX tile multiply (`tdpbf16ps`) takes a 16 × 32 bf16 tile of the left matrix and a
//! 32 × 16 tile of the right one, stored as 16 rows of pairs (`B[2r][c], B[2r+1][c]`, the
//! "VNNI" layout), and adds their f32 product into a 16 × 16 tile. The frozen weight is packed
//! into that layout once ([`PackedBf16`]); the activations are rounded to bf16 on each call.
//! Each task holds a 32 × 32 block of the output in four tiles while it walks the inner
//! dimension, so every loaded tile feeds two multiplies.
//!
//! Stable Rust has no AMX intrinsics, so the few instructions are written as inline assembly,
//! and Linux hands out the 8 KB of tile state only to a process that asks for it
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which [`available`] does once.

use rayon::prelude::*;
use std::sync::OnceLock;

/// Rows of a tile, and columns of an f32 tile.
const TILE: usize = 16;
/// bf16 values in a tile row (64 bytes): the inner depth of one tile multiply.
const DEPTH: usize = 32;
/// u16 values in one packed tile.
const TILE_VALUES: usize = TILE * DEPTH;

/// Whether this CPU and kernel run AMX bf16 (checked, and the tile state requested, once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            tiles::cpu_has_amx_bf16() && tiles::request_tile_state()
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        false
    })
}

/// `x` rounded to the nearest bf16 (ties to even), as PyTorch's `to(torch.bfloat16)` rounds.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16; // stays a quiet NaN
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// The f32 a bf16 stands for.
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// A `[k, n]` matrix rounded to bf16 and laid out as AMX right-hand tiles: tile `(nb, kt)`
/// holds rows `32·kt..32·kt+32` and columns `16·nb..16·nb+16`, zero past the edges, in pairs
/// of rows. Tiles of one column block follow each other along `k`, so a task streams them.
#[derive(Clone)]
pub struct PackedBf16 {
    k: usize,
    n: usize,
    k_tiles: usize,
    /// Column blocks of 16, rounded up to an even count (tasks take them two at a time).
    n_blocks: usize,
    data: Vec<u16>,
}

impl std::fmt::Debug for PackedBf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedBf16 [{}, {}]", self.k, self.n)
    }
}

impl PackedBf16 {
    /// Packs `w` `[k, n]`, whose element `(i, j)` is `w[i * row_stride + j * col_stride]`
    /// (so a transposed matrix packs without a copy).
    pub fn pack(w: &[f32], k: usize, n: usize, row_stride: usize, col_stride: usize) -> Self {
        if k > 0 && n > 0 {
            let last = (k - 1) * row_stride + (n - 1) * col_stride;
            assert!(w.len() > last, "PackedBf16::pack: {} values, [{k}, {n}] with these strides reads index {last}", w.len());
        }
        let k_tiles = k.div_ceil(DEPTH);
        let n_blocks = n.div_ceil(TILE).next_multiple_of(2);
        let mut data = vec![0u16; n_blocks * k_tiles * TILE_VALUES];
        if k_tiles > 0 {
            data.par_chunks_mut(k_tiles * TILE_VALUES).enumerate().for_each(|(nb, block)| {
                for (kt, tile) in block.chunks_mut(TILE_VALUES).enumerate() {
                    for pair in 0..TILE {
                        for parity in 0..2 {
                            let i = kt * DEPTH + 2 * pair + parity;
                            if i >= k {
                                continue;
                            }
                            for c in 0..TILE.min(n.saturating_sub(nb * TILE)) {
                                let j = nb * TILE + c;
                                tile[pair * DEPTH + 2 * c + parity] = to_bf16(w[i * row_stride + j * col_stride]);
                            }
                        }
                    }
                }
            });
        }
        Self { k, n, k_tiles, n_blocks, data }
    }

    /// `[k, n]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.k, self.n]
    }

    /// The bf16 value at `(i, j)` (tests).
    pub fn get(&self, i: usize, j: usize) -> f32 {
        let (nb, c, kt, r) = (j / TILE, j % TILE, i / DEPTH, i % DEPTH);
        from_bf16(self.data[(nb * self.k_tiles + kt) * TILE_VALUES + (r / 2) * DEPTH + 2 * c + r % 2])
    }
}

/// `x · w` for `x` row-major `[m, k]` (rounded to bf16 here) and a packed `w` `[k, n]`:
/// returns `[m, n]` row-major f32. Panics unless [`available`] and the shapes agree.
pub fn matmul(x: &[f32], m: usize, k: usize, w: &PackedBf16) -> Vec<f32> {
    assert!(available(), "amx::matmul: this CPU or kernel does not run AMX bf16");
    assert_eq!(k, w.k, "amx::matmul: x has {k} columns, the weight {} rows", w.k);
    assert!(x.len() >= m * k, "amx::matmul: x holds {} values, [{m}, {k}] needs {}", x.len(), m * k);
    let n = w.n;
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0f32; m * n];
    }
    // Every element is stored by exactly one tile below, so the output starts unwritten
    // rather than zeroed (a pass over it, 5% of a bf16 training step).
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let lhs = Lhs::round(x, m, k, w.k_tiles);
    // Tasks own pairs of column blocks, i.e. disjoint 32-column strips of the output.
    let pairs = w.n_blocks / 2;
    let tasks = (rayon::current_num_threads() * 4).clamp(1, pairs);
    let per_task = pairs.div_ceil(tasks);
    let strips = pairs.div_ceil(per_task);
    let out_addr = out.as_mut_ptr() as usize;
    let task = |task: usize| {
        let first = task * per_task;
        let strip = Strip { lhs: &lhs, w, out: out_addr as *mut f32, m, n };
        // SAFETY: `available()` holds; each task writes only its own columns of `out`.
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        unsafe {
            tiles::run(&strip, first..(first + per_task).min(pairs))
        };
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        let _ = (strip, first);
    };
    // A decoding step's products are short enough that a rayon hand-off shows.
    if m <= 2 * TILE {
        crate::team::for_each(strips, &task);
    } else {
        (0..strips).into_par_iter().for_each(task);
    }
    // SAFETY: the tasks stored all m·n values (every row of every 32-column strip).
    unsafe { out.set_len(m * n) };
    out
}

/// The left matrix in bf16, `[m_pad, 32·k_tiles]` row-major, zero past `m` and `k`, with `m`
/// rounded up to 32 so every task takes rows two tiles at a time. (Read by the tiles only:
/// elsewhere [`matmul`] is never reached.)
#[cfg_attr(not(all(target_arch = "x86_64", target_os = "linux")), allow(dead_code))]
struct Lhs {
    data: Vec<u16>,
    m_pad: usize,
    row: usize,
}

impl Lhs {
    fn round(x: &[f32], m: usize, k: usize, k_tiles: usize) -> Self {
        let (m_pad, row) = (m.next_multiple_of(2 * TILE), k_tiles * DEPTH);
        let mut data = vec![0u16; m_pad * row];
        let fill = |(chunk, rows): (usize, &mut [u16])| {
            for (r, out) in rows.chunks_mut(row).enumerate() {
                let i = chunk * 8 + r;
                if i < m {
                    out[..k].iter_mut().zip(&x[i * k..(i + 1) * k]).for_each(|(o, &v)| *o = to_bf16(v));
                }
            }
        };
        // A decoding step's few rows are not worth a hand-off.
        if m * k < 1 << 16 {
            data.chunks_mut(row * 8).enumerate().for_each(fill);
        } else {
            data.par_chunks_mut(row * 8).enumerate().for_each(fill);
        }
        Self { data, m_pad, row }
    }
}

/// What one task needs: the left matrix, the weight and the output it writes a strip of.
#[cfg_attr(not(all(target_arch = "x86_64", target_os = "linux")), allow(dead_code))]
struct Strip<'a> {
    lhs: &'a Lhs,
    w: &'a PackedBf16,
    out: *mut f32,
    m: usize,
    n: usize,
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod tiles {
    use super::{Strip, DEPTH, TILE, TILE_VALUES};
    use std::arch::asm;
    use std::ops::Range;

    pub fn cpu_has_amx_bf16() -> bool {
        // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
        let leaf = std::arch::x86_64::__cpuid_count(7, 0);
        leaf.edx & (1 << 22) != 0 && leaf.edx & (1 << 24) != 0
    }

    /// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: without it the first tile
    /// instruction kills the process. The permission is the whole process's.
    pub fn request_tile_state() -> bool {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: a plain system call with integer arguments.
        unsafe {
            asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL => ret, in("rdi") ARCH_REQ_XCOMP_PERM,
                 in("rsi") XFEATURE_XTILEDATA, lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret == 0
    }

    /// The 64-byte `ldtilecfg` operand: palette 1, eight tiles of 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: Config = Config {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// Output columns `32·pairs.start..32·pairs.end`, all rows. Tiles 0–3 hold the 32 × 32
    /// output block, 4–5 two row tiles of the left matrix, 6–7 two column tiles of the weight.
    ///
    /// # Safety
    /// AMX must be [`available`](super::available), and no other task may write these columns.
    pub unsafe fn run(s: &Strip, pairs: Range<usize>) {
        let lhs_stride = s.lhs.row * 2; // bytes per left row
        let k_tiles = s.w.k_tiles;
        let mut spill = [0.0f32; TILE * TILE];
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack));
            for pair in pairs {
                let left_cols = s.w.data.as_ptr().add(2 * pair * k_tiles * TILE_VALUES);
                let right_cols = left_cols.add(k_tiles * TILE_VALUES);
                for rows in (0..s.lhs.m_pad).step_by(2 * TILE) {
                    if rows >= s.m {
                        break;
                    }
                    let top = s.lhs.data.as_ptr().add(rows * s.lhs.row);
                    let bottom = top.add(TILE * s.lhs.row);
                    asm!(
                        "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
                        "2:",
                        "tileloadd tmm4, [{top} + {lhs_stride}]",
                        "tileloadd tmm5, [{bottom} + {lhs_stride}]",
                        "tileloadd tmm6, [{left} + {w_stride}]",
                        "tileloadd tmm7, [{right} + {w_stride}]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        "add {top}, 64",
                        "add {bottom}, 64",
                        "add {left}, 1024",
                        "add {right}, 1024",
                        "dec {count}",
                        "jnz 2b",
                        top = inout(reg) top => _,
                        bottom = inout(reg) bottom => _,
                        left = inout(reg) left_cols => _,
                        right = inout(reg) right_cols => _,
                        count = inout(reg) k_tiles => _,
                        lhs_stride = in(reg) lhs_stride,
                        w_stride = in(reg) 2 * DEPTH,
                        options(nostack),
                    );
                    store::<0>(s, rows, 2 * pair * TILE, &mut spill);
                    store::<1>(s, rows, (2 * pair + 1) * TILE, &mut spill);
                    store::<2>(s, rows + TILE, 2 * pair * TILE, &mut spill);
                    store::<3>(s, rows + TILE, (2 * pair + 1) * TILE, &mut spill);
                }
            }
            asm!("tilerelease", options(nostack));
        }
    }

    /// Writes output tile `T` (16 × 16 at `row`, `col`): straight into the output when it lies
    /// inside, through `spill` at the edges.
    unsafe fn store<const T: u8>(s: &Strip, row: usize, col: usize, spill: &mut [f32; TILE * TILE]) {
        if row >= s.m || col >= s.n {
            return;
        }
        let inside = row + TILE <= s.m && col + TILE <= s.n;
        let (dst, stride) = if inside { (unsafe { s.out.add(row * s.n + col) }, s.n * 4) } else { (spill.as_mut_ptr(), TILE * 4) };
        unsafe {
            match T {
                0 => asm!("tilestored [{} + {}], tmm0", in(reg) dst, in(reg) stride, options(nostack)),
                1 => asm!("tilestored [{} + {}], tmm1", in(reg) dst, in(reg) stride, options(nostack)),
                2 => asm!("tilestored [{} + {}], tmm2", in(reg) dst, in(reg) stride, options(nostack)),
                _ => asm!("tilestored [{} + {}], tmm3", in(reg) dst, in(reg) stride, options(nostack)),
            }
        }
        if !inside {
            for r in 0..TILE.min(s.m - row) {
                for c in 0..TILE.min(s.n - col) {
                    unsafe { *s.out.add((row + r) * s.n + col + c) = spill[r * TILE + c] };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_bf16_rounds_to_nearest_even_like_pytorch() {
        let half_ulp = 2f32.powi(-8); // bf16 keeps 7 fraction bits
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + half_ulp), 0x3f80, "a tie goes to the even neighbour");
        assert_eq!(to_bf16(1.0 + 3.0 * half_ulp), 0x3f82, "a tie goes to the even neighbour");
        assert_eq!(to_bf16(1.0 + half_ulp + 2f32.powi(-20)), 0x3f81, "above the tie rounds up");
        assert_eq!(to_bf16(-1.5), 0xbfc0);
        assert_eq!(to_bf16(f32::MAX), 0x7f80, "overflows to infinity, as torch's bfloat16()");
        assert_eq!(to_bf16(f32::NEG_INFINITY), 0xff80);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        for x in [0.1f32, -3.7e-5, 12345.678, 1e30] {
            let rounded = from_bf16(to_bf16(x));
            assert!((rounded - x).abs() <= x.abs() * half_ulp, "{x} → {rounded}");
        }
    }

    // Products on the tiles are held to an f64 triple loop with every other path in `bf16::tests`.
}
