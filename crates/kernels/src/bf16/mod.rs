//! bf16 matrix products with f32 sums for the frozen weights of prefix-tuning (`--dtype bf16`),
//! on whichever path this CPU runs:
//!
//! - [`Path::Amx`]: Intel AMX tiles ([`crate::amx`]), Sapphire Rapids and later;
//! - [`Path::Avx512Bf16`]: AVX512-BF16's `vdpbf16ps` (by default on AMD Zen 4 and 5; on Intel's
//!   CPUs with it only when forced: see the default's notes in `path.rs`): two bf16 products per lane and
//!   instruction, 16 lanes, on the panels that pair rows of `k`, as `BFDOT` takes them;
//! - [`Path::Avx2`]: bf16 storage widened to f32 in registers, f32 FMA (any x86-64 with AVX2 and
//!   FMA: AMD Zen 2 and 3, Intel Haswell and later without AMX, and the VMs that hide AMX);
//! - [`Path::Bfdot`]: aarch64's `BFDOT` (FEAT_BF16: Apple M2 and later, Graviton 3, Neoverse
//!   V1/N2): two bf16 products per f32 lane and instruction, on panels that pair rows of `k`;
//! - [`Path::Neon`]: aarch64 without FEAT_BF16 (Apple M1, Graviton 2): the x86 panels widened
//!   by a shift, f32 FMA in NEON registers;
//! - [`Path::Portable`]: the same layout through plain loops (only when forced: the tests' check
//!   on every machine).
//!
//! Every path has the same numeric contract: the weight and the activations are rounded to bf16
//! (ties to even, as PyTorch's `to(torch.bfloat16)`), every product of two bf16 values is exact
//! in f32, and the sums are f32; the paths differ only in the order of those sums. The path is
//! chosen once per process ([`path`]); `PREFIX_TUNE_BF16_PATH` forces one, so tests can run
//! every path the machine can execute.
//!
//! The AVX2 and portable paths keep the weight as bf16 in panels of 16 columns, row after row
//! along `k` (32 bytes a row), so a task streams one panel while 6 rows of activations stay in
//! registers: half the bytes of an f32 weight, which is what decoding's time is made of.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
use aarch64::{tile_bfdot, tile_neon};
#[cfg(target_arch = "x86_64")]
use x86::{tile_avx2, tile_avx512bf16};

mod path;

pub use path::{choose, path, Path, PathError, FORCE_VAR};
#[cfg(test)]
use path::{cpu_is_amd, names};

use crate::amx::{self, from_bf16, to_bf16};
use rayon::prelude::*;

/// Columns of a panel.
const PANEL: usize = 16;
/// Rows of activations one register tile holds.
const ROWS: usize = 6;
/// Rows a task takes at a time, so that they stay in L2 while it walks its panels.
const ROW_CHUNK: usize = 8 * ROWS;

/// The column each of a panel row's 16 slots holds. AVX2 widens bf16 to f32 by interleaving
/// zero words below them (`vpunpcklwd` / `vpunpckhwd`), which works within 128-bit halves:
/// slots 0–3 and 8–11 become the low 8 f32, 4–7 and 12–15 the high 8. Storing the columns in
/// this order makes those the columns 0–7 and 8–15.
const COLUMN_OF_SLOT: [usize; PANEL] = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15];

/// A frozen `[k, n]` matrix rounded to bf16 and laid out for one path.
#[derive(Clone)]
pub struct PackedBf16 {
    path: Path,
    layout: Layout,
}

#[derive(Clone)]
enum Layout {
    Tiles(amx::PackedBf16),
    Panels(Panels),
    Pairs(Pairs),
}

/// `[k, n]` in panels of 16 columns: panel `p` is `k` rows of 16 bf16 at `data[p·16k..]`, in
/// [`COLUMN_OF_SLOT`] order, zero past `n`.
#[derive(Clone)]
struct Panels {
    k: usize,
    n: usize,
    data: Vec<u16>,
}

/// `[k, n]` in panels of 16 columns whose rows of `k` go in pairs, for `BFDOT` and `vdpbf16ps`
/// (each f32 lane of theirs takes a pair of bf16 weights and a pair of activations): panel `p` is
/// `⌈k/2⌉` blocks of 32 bf16 at `data[p·32⌈k/2⌉..]`, column by column (columns 0–15 in order),
/// each column's two values rows `2i` and `2i + 1`; zero past `k` and `n`.
#[derive(Clone)]
struct Pairs {
    k: usize,
    n: usize,
    data: Vec<u16>,
}

impl std::fmt::Debug for PackedBf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [k, n] = self.dims();
        write!(f, "PackedBf16 [{k}, {n}] ({})", self.path.name())
    }
}

impl PackedBf16 {
    /// Packs `w` `[k, n]` for this process's [`path`]; element `(i, j)` is
    /// `w[i * row_stride + j * col_stride]` (a transposed matrix packs without a copy).
    /// Panics where [`path`] is an error.
    pub fn pack(w: &[f32], k: usize, n: usize, row_stride: usize, col_stride: usize) -> Self {
        let path = path().unwrap_or_else(|why| panic!("PackedBf16::pack: {why}"));
        Self::pack_for(path, w, k, n, row_stride, col_stride)
    }

    /// As [`pack`](Self::pack), for a given path (tests run each one).
    pub fn pack_for(path: Path, w: &[f32], k: usize, n: usize, row_stride: usize, col_stride: usize) -> Self {
        assert!(path.runs_here(), "PackedBf16::pack_for: this CPU cannot run the {} path", path.name());
        if k > 0 && n > 0 {
            let last = (k - 1) * row_stride + (n - 1) * col_stride;
            assert!(w.len() > last, "PackedBf16::pack: {} values, [{k}, {n}] with these strides reads index {last}", w.len());
        }
        let layout = match path {
            Path::Amx => Layout::Tiles(amx::PackedBf16::pack(w, k, n, row_stride, col_stride)),
            Path::Avx2 | Path::Neon | Path::Portable => Layout::Panels(Panels::pack(w, k, n, row_stride, col_stride)),
            Path::Avx512Bf16 | Path::Bfdot => Layout::Pairs(Pairs::pack(w, k, n, row_stride, col_stride)),
        };
        Self { path, layout }
    }

    /// `[k, n]`.
    pub fn dims(&self) -> [usize; 2] {
        match &self.layout {
            Layout::Tiles(tiles) => tiles.dims(),
            Layout::Panels(panels) => [panels.k, panels.n],
            Layout::Pairs(pairs) => [pairs.k, pairs.n],
        }
    }

    /// The path it was packed for.
    pub fn path(&self) -> Path {
        self.path
    }

    /// The bf16 value at `(i, j)` (tests).
    pub fn get(&self, i: usize, j: usize) -> f32 {
        match &self.layout {
            Layout::Tiles(tiles) => tiles.get(i, j),
            Layout::Panels(panels) => {
                let slot = COLUMN_OF_SLOT.iter().position(|&c| c == j % PANEL).unwrap();
                from_bf16(panels.data[(j / PANEL) * PANEL * panels.k + i * PANEL + slot])
            }
            Layout::Pairs(pairs) => from_bf16(pairs.data[pairs.index(i, j)]),
        }
    }
}

impl Panels {
    fn pack(w: &[f32], k: usize, n: usize, row_stride: usize, col_stride: usize) -> Self {
        let mut data = vec![0u16; n.div_ceil(PANEL) * PANEL * k];
        if k > 0 {
            data.par_chunks_mut(PANEL * k).enumerate().for_each(|(p, panel)| {
                for (i, row) in panel.chunks_mut(PANEL).enumerate() {
                    for (slot, value) in row.iter_mut().enumerate() {
                        let j = p * PANEL + COLUMN_OF_SLOT[slot];
                        if j < n {
                            *value = to_bf16(w[i * row_stride + j * col_stride]);
                        }
                    }
                }
            });
        }
        Self { k, n, data }
    }

    fn panel(&self, p: usize) -> &[u16] {
        &self.data[p * PANEL * self.k..(p + 1) * PANEL * self.k]
    }
}

impl Pairs {
    fn pack(w: &[f32], k: usize, n: usize, row_stride: usize, col_stride: usize) -> Self {
        let mut packed = Self { k, n, data: vec![0u16; n.div_ceil(PANEL) * Self::panel_size(k)] };
        if k > 0 {
            packed.data.par_chunks_mut(Self::panel_size(k)).enumerate().for_each(|(p, panel)| {
                for j in p * PANEL..n.min((p + 1) * PANEL) {
                    for i in 0..k {
                        panel[(i / 2) * PANEL * 2 + (j % PANEL) * 2 + i % 2] = to_bf16(w[i * row_stride + j * col_stride]);
                    }
                }
            });
        }
        packed
    }

    /// The values of one panel: `⌈k/2⌉` blocks of 16 columns × 2 rows.
    fn panel_size(k: usize) -> usize {
        PANEL * 2 * k.div_ceil(2)
    }

    /// Where `(i, j)` is in `data`.
    fn index(&self, i: usize, j: usize) -> usize {
        (j / PANEL) * Self::panel_size(self.k) + (i / 2) * PANEL * 2 + (j % PANEL) * 2 + i % 2
    }

    fn panel(&self, p: usize) -> &[u16] {
        let size = Self::panel_size(self.k);
        &self.data[p * size..(p + 1) * size]
    }
}

/// `x · w` for `x` row-major `[m, k]` (rounded to bf16 here) and a packed `w` `[k, n]`: returns
/// `[m, n]` row-major f32. Panics unless the shapes agree.
pub fn matmul(x: &[f32], m: usize, k: usize, w: &PackedBf16) -> Vec<f32> {
    assert_eq!(k, w.dims()[0], "bf16::matmul: x has {k} columns, the weight {} rows", w.dims()[0]);
    assert!(x.len() >= m * k, "bf16::matmul: x holds {} values, [{m}, {k}] needs {}", x.len(), m * k);
    let n = w.dims()[1];
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    match &w.layout {
        Layout::Tiles(tiles) => amx::matmul(x, m, k, tiles),
        Layout::Panels(panels) => {
            let lhs = round_rows(&x[..m * k]);
            tiled(m, n, &|first, count, p| register_tile(w.path, &lhs[first * k..(first + count) * k], count, k, panels.panel(p)))
        }
        Layout::Pairs(pairs) => {
            let lhs = paired_rows(&x[..m * k], m, k);
            let width = 2 * k.div_ceil(2);
            tiled(m, n, &|first, count, p| pair_tile(w.path, &lhs[first * width..(first + count) * width], count, width / 2, pairs.panel(p)))
        }
    }
}

/// `[m, n]` from register tiles: `tile(first_row, rows, panel)` is rows `first_row..+rows` (≤ 6)
/// times panel `panel`, in slot order. Tasks take strips of panels; a decoding step's few rows
/// go to the spinning team, longer products to rayon.
fn tiled(m: usize, n: usize, tile: &(dyn Fn(usize, usize, usize) -> [f32; ROWS * PANEL] + Sync)) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    let panels = n.div_ceil(PANEL);
    let tasks = (rayon::current_num_threads() * 4).clamp(1, panels);
    let per_task = panels.div_ceil(tasks);
    let strips = panels.div_ceil(per_task);
    let out_addr = out.as_mut_ptr() as usize;
    let task = |task: usize| {
        let strip = task * per_task..((task + 1) * per_task).min(panels);
        // SAFETY: each task writes only the columns of its own panels, and `out` outlives the tasks.
        let out = unsafe { std::slice::from_raw_parts_mut(out_addr as *mut f32, m * n) };
        for rows in (0..m).step_by(ROW_CHUNK) {
            for p in strip.clone() {
                for first in (rows..(rows + ROW_CHUNK).min(m)).step_by(ROWS) {
                    let count = ROWS.min(m - first);
                    store(&tile(first, count, p), count, out, first, p * PANEL, n);
                }
            }
        }
    };
    // A decoding step's products are short enough that a rayon hand-off shows.
    if m <= 32 {
        crate::team::for_each(strips, &task);
    } else {
        (0..strips).into_par_iter().for_each(task);
    }
    out
}

/// The activations `[m, k]` rounded to bf16, each row padded with a zero to an even length:
/// `BFDOT` and `vdpbf16ps` take them two by two.
fn paired_rows(x: &[f32], m: usize, k: usize) -> Vec<u16> {
    let width = 2 * k.div_ceil(2);
    let mut rows = vec![0u16; m * width];
    rows.par_chunks_mut(width).zip(x.par_chunks(k)).for_each(|(out, row)| {
        for (o, v) in out.iter_mut().zip(row) {
            *o = to_bf16(*v);
        }
    });
    rows
}

/// The activations rounded to bf16 (kept as the f32 they stand for).
fn round_rows(x: &[f32]) -> Vec<f32> {
    let round = |v: &f32| from_bf16(to_bf16(*v));
    if x.len() < 1 << 16 {
        x.iter().map(round).collect()
    } else {
        x.par_iter().map(round).collect()
    }
}

/// `$kernel::<R>(args)` for `R` = `count` rows (1 to 6) of a register tile.
macro_rules! by_rows {
    ($kernel:ident, $count:expr, $($arg:expr),*) => {
        match $count {
            1 => $kernel::<1>($($arg),*),
            2 => $kernel::<2>($($arg),*),
            3 => $kernel::<3>($($arg),*),
            4 => $kernel::<4>($($arg),*),
            5 => $kernel::<5>($($arg),*),
            _ => $kernel::<6>($($arg),*),
        }
    };
}

/// One register tile: `count` ≤ 6 rows of `x` (`[count, k]`) times one panel, in slot order.
fn register_tile(path: Path, x: &[f32], count: usize, k: usize, panel: &[u16]) -> [f32; ROWS * PANEL] {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a packed weight's path runs here (checked at packing).
        Path::Avx2 => unsafe { by_rows!(tile_avx2, count, x, k, panel) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Path::Neon => unsafe { by_rows!(tile_neon, count, x, k, panel) },
        _ => by_rows!(tile_portable, count, x, k, panel),
    }
}

/// `count` ≤ 6 rows of paired bf16 activations (`[count, 2·pairs]`) times one pair panel, in
/// slot order ([`Path::Avx512Bf16`], [`Path::Bfdot`]).
fn pair_tile(path: Path, x: &[u16], count: usize, pairs: usize, panel: &[u16]) -> [f32; ROWS * PANEL] {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a packed weight's path runs here (checked at packing).
        Path::Avx512Bf16 => unsafe { by_rows!(tile_avx512bf16, count, x, pairs, panel) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Path::Bfdot => unsafe { by_rows!(tile_bfdot, count, x, pairs, panel) },
        _ => unreachable!("pair panels are packed only for the paths that take them"),
    }
}

/// A register tile's rows of 16 columns in order, as [`store`] takes them: in slot order.
fn slot_order<const R: usize>(columns: &[f32; ROWS * PANEL]) -> [f32; ROWS * PANEL] {
    let mut tile = [0.0f32; ROWS * PANEL];
    for r in 0..R {
        for (slot, &c) in COLUMN_OF_SLOT.iter().enumerate() {
            tile[r * PANEL + slot] = columns[r * PANEL + c];
        }
    }
    tile
}

/// Writes a register tile's `count` rows into columns `col..col + 16` of `out` `[.., n]`,
/// those that exist.
fn store(tile: &[f32; ROWS * PANEL], count: usize, out: &mut [f32], row: usize, col: usize, n: usize) {
    for r in 0..count {
        let out_row = &mut out[(row + r) * n..(row + r + 1) * n];
        for (slot, &c) in COLUMN_OF_SLOT.iter().enumerate() {
            if col + c < n {
                out_row[col + c] = tile[r * PANEL + slot];
            }
        }
    }
}

/// `a · b + c`: fused where the CPU fuses for free (aarch64), two roundings elsewhere, where a
/// fused multiply-add without the instruction is a library call.
#[inline(always)]
fn multiply_add(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_arch = "aarch64")]
    return a.mul_add(b, c);
    #[cfg(not(target_arch = "aarch64"))]
    return a * b + c;
}

/// The portable register tile: accumulators in slot order, bf16 widened by a shift.
#[inline(always)]
fn tile_portable<const R: usize>(x: &[f32], k: usize, panel: &[u16]) -> [f32; ROWS * PANEL] {
    let mut acc = [[0.0f32; PANEL]; R];
    for (i, raw) in panel.chunks_exact(PANEL).enumerate().take(k) {
        let w: [f32; PANEL] = std::array::from_fn(|s| from_bf16(raw[s]));
        for (r, acc) in acc.iter_mut().enumerate() {
            let xv = x[r * k + i];
            for (a, &wv) in acc.iter_mut().zip(&w) {
                *a = multiply_add(xv, wv, *a);
            }
        }
    }
    let mut tile = [0.0f32; ROWS * PANEL];
    for (r, acc) in acc.iter().enumerate() {
        tile[r * PANEL..(r + 1) * PANEL].copy_from_slice(acc);
    }
    tile
}
