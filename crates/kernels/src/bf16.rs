//! bf16 matrix products with f32 sums for the frozen weights of prefix-tuning (`--dtype bf16`),
//! on whichever path this CPU runs:
//!
//! - [`Path::Amx`]: Intel AMX tiles ([`crate::amx`]), Sapphire Rapids and later;
//! - [`Path::Avx2`]: bf16 storage widened to f32 in registers, f32 FMA (any x86-64 with AVX2 and
//!   FMA: AMD Zen, Intel Haswell and later, and the VMs that hide AMX);
//! - [`Path::Portable`]: the same layout through plain loops the compiler vectorises (NEON on
//!   aarch64, where it is the default; on x86-64 only when forced).
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

use crate::amx::{self, from_bf16, to_bf16};
use rayon::prelude::*;
use std::sync::OnceLock;

/// The environment variable that forces a path (`amx`, `avx2`, `portable`).
pub const FORCE_VAR: &str = "PREFIX_TUNE_BF16_PATH";

/// A way of running the bf16 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Amx,
    Avx2,
    Portable,
}

impl Path {
    /// Every path, fastest first.
    pub const ALL: [Path; 3] = [Path::Amx, Path::Avx2, Path::Portable];

    /// The name `PREFIX_TUNE_BF16_PATH` takes.
    pub fn name(self) -> &'static str {
        match self {
            Path::Amx => "amx",
            Path::Avx2 => "avx2",
            Path::Portable => "portable",
        }
    }

    /// The CPU feature the path needs, as a user would look it up.
    pub fn needs(self) -> &'static str {
        match self {
            Path::Amx => "AMX-BF16 on Linux",
            Path::Avx2 => "AVX2 and FMA",
            Path::Portable => "nothing",
        }
    }

    /// Whether this CPU (and kernel) can run the path.
    pub fn runs_here(self) -> bool {
        match self {
            Path::Amx => amx::available(),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            Path::Avx2 => false,
            Path::Portable => true,
        }
    }

    /// The paths this machine can run, fastest first.
    pub fn runnable() -> Vec<Path> {
        Path::ALL.into_iter().filter(|p| p.runs_here()).collect()
    }

    /// Whether the path is picked without being forced: the portable loops are a fallback on
    /// x86-64 (slower than f32 there) but the native vectors of aarch64.
    fn is_default_candidate(self) -> bool {
        self != Path::Portable || cfg!(target_arch = "aarch64")
    }
}

impl std::str::FromStr for Path {
    type Err = PathError;

    fn from_str(name: &str) -> Result<Self, PathError> {
        Path::ALL.into_iter().find(|p| p.name() == name.trim().to_ascii_lowercase()).ok_or_else(|| PathError::Unknown(name.to_string()))
    }
}

/// Why no bf16 path runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// `PREFIX_TUNE_BF16_PATH` names no path.
    Unknown(String),
    /// `PREFIX_TUNE_BF16_PATH` names a path this CPU cannot run.
    Unsupported(Path),
    /// No path runs here unless forced.
    NoneHere,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Unknown(name) => write!(f, "{FORCE_VAR}={name:?} is not a bf16 path (amx, avx2 or portable)"),
            PathError::Unsupported(path) => {
                write!(f, "{FORCE_VAR}={} needs {}, which this CPU lacks (it runs: {})", path.name(), path.needs(), names(&Path::runnable()))
            }
            PathError::NoneHere => write!(
                f,
                "--dtype bf16 needs a CPU with AVX2 and FMA or with AMX-BF16 (this one has neither; {FORCE_VAR}=portable forces plain loops)"
            ),
        }
    }
}

impl std::error::Error for PathError {}

fn names(paths: &[Path]) -> String {
    paths.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
}

/// The path `forced` names, or the fastest this machine runs by default.
pub fn choose(forced: Option<&str>) -> Result<Path, PathError> {
    match forced.filter(|name| !name.trim().is_empty()) {
        Some(name) => {
            let path: Path = name.parse()?;
            if path.runs_here() {
                Ok(path)
            } else {
                Err(PathError::Unsupported(path))
            }
        }
        None => Path::ALL.into_iter().find(|p| p.is_default_candidate() && p.runs_here()).ok_or(PathError::NoneHere),
    }
}

/// This process's path: [`choose`] over `PREFIX_TUNE_BF16_PATH`, once.
pub fn path() -> Result<Path, PathError> {
    static PATH: OnceLock<Result<Path, PathError>> = OnceLock::new();
    PATH.get_or_init(|| choose(std::env::var(FORCE_VAR).ok().as_deref())).clone()
}

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
}

/// `[k, n]` in panels of 16 columns: panel `p` is `k` rows of 16 bf16 at `data[p·16k..]`, in
/// [`COLUMN_OF_SLOT`] order, zero past `n`.
#[derive(Clone)]
struct Panels {
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
        let layout = match path {
            Path::Amx => Layout::Tiles(amx::PackedBf16::pack(w, k, n, row_stride, col_stride)),
            Path::Avx2 | Path::Portable => Layout::Panels(Panels::pack(w, k, n, row_stride, col_stride)),
        };
        Self { path, layout }
    }

    /// `[k, n]`.
    pub fn dims(&self) -> [usize; 2] {
        match &self.layout {
            Layout::Tiles(tiles) => tiles.dims(),
            Layout::Panels(panels) => [panels.k, panels.n],
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
        }
    }
}

impl Panels {
    fn pack(w: &[f32], k: usize, n: usize, row_stride: usize, col_stride: usize) -> Self {
        if k > 0 && n > 0 {
            let last = (k - 1) * row_stride + (n - 1) * col_stride;
            assert!(w.len() > last, "PackedBf16::pack: {} values, [{k}, {n}] with these strides reads index {last}", w.len());
        }
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

/// `x · w` for `x` row-major `[m, k]` (rounded to bf16 here) and a packed `w` `[k, n]`: returns
/// `[m, n]` row-major f32. Panics unless the shapes agree.
pub fn matmul(x: &[f32], m: usize, k: usize, w: &PackedBf16) -> Vec<f32> {
    assert_eq!(k, w.dims()[0], "bf16::matmul: x has {k} columns, the weight {} rows", w.dims()[0]);
    assert!(x.len() >= m * k, "bf16::matmul: x holds {} values, [{m}, {k}] needs {}", x.len(), m * k);
    match &w.layout {
        Layout::Tiles(tiles) => amx::matmul(x, m, k, tiles),
        Layout::Panels(panels) => panels_matmul(x, m, panels, w.path),
    }
}

fn panels_matmul(x: &[f32], m: usize, w: &Panels, path: Path) -> Vec<f32> {
    let (k, n) = (w.k, w.n);
    let mut out = vec![0.0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    let lhs = round_rows(&x[..m * k]);
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
                    let tile = register_tile(path, &lhs[first * k..(first + count) * k], count, k, w.panel(p));
                    store(&tile, count, out, first, p * PANEL, n);
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

/// The activations rounded to bf16 (kept as the f32 they stand for).
fn round_rows(x: &[f32]) -> Vec<f32> {
    let round = |v: &f32| from_bf16(to_bf16(*v));
    if x.len() < 1 << 16 {
        x.iter().map(round).collect()
    } else {
        x.par_iter().map(round).collect()
    }
}

/// One register tile: `count` ≤ 6 rows of `x` (`[count, k]`) times one panel, in slot order.
fn register_tile(path: Path, x: &[f32], count: usize, k: usize, panel: &[u16]) -> [f32; ROWS * PANEL] {
    macro_rules! by_rows {
        ($kernel:ident) => {
            match count {
                1 => $kernel::<1>(x, k, panel),
                2 => $kernel::<2>(x, k, panel),
                3 => $kernel::<3>(x, k, panel),
                4 => $kernel::<4>(x, k, panel),
                5 => $kernel::<5>(x, k, panel),
                _ => $kernel::<6>(x, k, panel),
            }
        };
    }
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a packed weight's path runs here (checked at packing).
        Path::Avx2 => unsafe { by_rows!(tile_avx2) },
        _ => by_rows!(tile_portable),
    }
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

/// The AVX2 register tile: 2·R accumulators of 8 f32, one 32-byte panel row widened per step.
///
/// # Safety
/// The CPU runs AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const R: usize>(x: &[f32], k: usize, panel: &[u16]) -> [f32; ROWS * PANEL] {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-1, 1), already bf16, from a xorshift stream.
    fn bf16_values(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                from_bf16(to_bf16((state as f32 / u32::MAX as f32) * 2.0 - 1.0))
            })
            .collect()
    }

    #[test]
    fn every_runnable_path_equals_an_f64_triple_loop_for_every_edge_and_both_packings() {
        let paths = Path::runnable();
        assert!(paths.contains(&Path::Portable));
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            assert!(paths.contains(&Path::Avx2));
        }
        // Partial panels and register tiles in every dimension, one row, 6k±1 rows past the
        // row chunk, the team/rayon switch at 32 rows, and an LM-head-like width.
        let shapes = [(1, 1, 1), (37, 70, 53), (33, 64, 32), (64, 96, 1000), (5, 3072, 17), (16, 33, 48), (8, 70, 53), (3, 96, 1000), (49, 20, 15), (32, 7, 16)];
        for path in paths {
            for (m, k, n) in shapes {
                let x = bf16_values(m * k, 1 + m as u32);
                let w = bf16_values(k * n, 7 + n as u32); // [k, n] row-major
                let w_t: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect(); // [n, k]
                let want: Vec<f64> = (0..m * n).map(|e| (0..k).map(|l| x[e / n * k + l] as f64 * w[l * n + e % n] as f64).sum()).collect();
                // Inputs are exact in bf16 and so are their products: only the f32 sums round.
                let tolerance = 2.0 * f32::EPSILON as f64 * k as f64;
                for (layout, packed) in [("row-major", PackedBf16::pack_for(path, &w, k, n, n, 1)), ("transposed", PackedBf16::pack_for(path, &w_t, k, n, 1, k))] {
                    assert_eq!(packed.dims(), [k, n]);
                    assert_eq!(packed.path(), path);
                    assert_eq!(packed.get(k - 1, n - 1), w[(k - 1) * n + n - 1]);
                    assert_eq!(packed.get(0, n / 2), w[n / 2]);
                    let got = matmul(&x, m, k, &packed);
                    assert_eq!(got.len(), m * n);
                    for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!((*g as f64 - w).abs() <= tolerance, "{path:?} [{m}, {k}, {n}] {layout}: element {e}: {g} against {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_path_rounds_the_inputs_to_bf16_first() {
        for path in Path::runnable() {
            let x = [1.0 + 2f32.powi(-9), 3.0]; // rounds to 1.0
            let packed = PackedBf16::pack_for(path, &[1.0, 0.1], 2, 1, 1, 1);
            assert_eq!(matmul(&x, 1, 2, &packed)[0], 1.0 + 3.0 * from_bf16(to_bf16(0.1)), "{path:?}");
        }
    }

    #[test]
    fn a_forced_path_is_taken_or_refused_by_name() {
        assert_eq!(choose(Some("portable")), Ok(Path::Portable));
        assert_eq!(choose(Some(" Portable ")), Ok(Path::Portable));
        assert_eq!(choose(Some("tiles")), Err(PathError::Unknown("tiles".into())));
        assert!(PathError::Unknown("tiles".into()).to_string().contains("PREFIX_TUNE_BF16_PATH=\"tiles\""));
        for path in Path::ALL {
            match choose(Some(path.name())) {
                Ok(chosen) => assert!(chosen == path && path.runs_here()),
                Err(why) => {
                    assert!(!path.runs_here() && why == PathError::Unsupported(path));
                    assert!(why.to_string().contains(path.needs()), "{why}");
                }
            }
        }
        // Unforced: the fastest path this CPU runs, never the x86 fallback loops.
        let default = choose(None);
        let fastest = Path::ALL.into_iter().find(|p| p.runs_here() && (*p != Path::Portable || cfg!(target_arch = "aarch64")));
        assert_eq!(default.ok(), fastest);
        assert_eq!(choose(Some("")).ok(), fastest, "an empty variable forces nothing");
    }
}
