//! bf16 matrix products with f32 sums for the frozen weights of prefix-tuning (`--dtype bf16`),
//! on whichever path this CPU runs:
//!
//! - [`Path::Amx`]: Intel AMX tiles ([`crate::amx`]), Sapphire Rapids and later;
//! - [`Path::Avx2`]: bf16 storage widened to f32 in registers, f32 FMA (any x86-64 with AVX2 and
//!   FMA: AMD Zen, Intel Haswell and later, and the VMs that hide AMX);
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

use crate::amx::{self, from_bf16, to_bf16};
use rayon::prelude::*;
use std::sync::OnceLock;

/// The environment variable that forces a path (`amx`, `avx2`, `bfdot`, `neon`, `portable`).
pub const FORCE_VAR: &str = "PREFIX_TUNE_BF16_PATH";

/// A way of running the bf16 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Amx,
    Avx2,
    Bfdot,
    Neon,
    Portable,
}

impl Path {
    /// Every path, fastest first.
    pub const ALL: [Path; 5] = [Path::Amx, Path::Avx2, Path::Bfdot, Path::Neon, Path::Portable];

    /// The name `PREFIX_TUNE_BF16_PATH` takes.
    pub fn name(self) -> &'static str {
        match self {
            Path::Amx => "amx",
            Path::Avx2 => "avx2",
            Path::Bfdot => "bfdot",
            Path::Neon => "neon",
            Path::Portable => "portable",
        }
    }

    /// The CPU feature the path needs, as a user would look it up.
    pub fn needs(self) -> &'static str {
        match self {
            Path::Amx => "AMX-BF16 on Linux",
            Path::Avx2 => "AVX2 and FMA",
            Path::Bfdot => "aarch64 with BF16 (FEAT_BF16, BFDOT)",
            Path::Neon => "aarch64 (NEON)",
            Path::Portable => "nothing",
        }
    }

    /// Whether this CPU (and kernel) can run the path.
    pub fn runs_here(self) -> bool {
        match self {
            Path::Amx => amx::available(),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "aarch64")]
            Path::Bfdot => std::arch::is_aarch64_feature_detected!("bf16"),
            #[cfg(target_arch = "aarch64")]
            Path::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            Path::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The paths this machine can run, fastest first.
    pub fn runnable() -> Vec<Path> {
        Path::ALL.into_iter().filter(|p| p.runs_here()).collect()
    }

    /// Whether the path is picked without being forced: the portable loops are a check, not a
    /// path (slower than f32 on x86-64; aarch64 always has NEON).
    fn is_default_candidate(self) -> bool {
        self != Path::Portable
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
            PathError::Unknown(name) => write!(f, "{FORCE_VAR}={name:?} is not a bf16 path (amx, avx2, bfdot, neon or portable)"),
            PathError::Unsupported(path) => {
                write!(f, "{FORCE_VAR}={} needs {}, which this CPU lacks (it runs: {})", path.name(), path.needs(), names(&Path::runnable()))
            }
            PathError::NoneHere => write!(
                f,
                "--dtype bf16 needs an x86-64 CPU with AVX2 and FMA or with AMX-BF16, or an aarch64 one (this one is neither; {FORCE_VAR}=portable forces plain loops)"
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

/// `[k, n]` in panels of 16 columns whose rows of `k` go in pairs, for `BFDOT`: panel `p` is
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
            Path::Bfdot => Layout::Pairs(Pairs::pack(w, k, n, row_stride, col_stride)),
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
        let pairs = k.div_ceil(2);
        let mut data = vec![0u16; n.div_ceil(PANEL) * PANEL * 2 * pairs];
        let mut packed = Self { k, n, data: Vec::new() };
        for j in 0..n {
            for i in 0..k {
                data[packed.index(i, j)] = to_bf16(w[i * row_stride + j * col_stride]);
            }
        }
        packed.data = data;
        packed
    }

    /// Where `(i, j)` is in `data`.
    fn index(&self, i: usize, j: usize) -> usize {
        let pairs = self.k.div_ceil(2);
        (j / PANEL) * PANEL * 2 * pairs + (i / 2) * PANEL * 2 + (j % PANEL) * 2 + i % 2
    }

    fn panel(&self, p: usize) -> &[u16] {
        let size = PANEL * 2 * self.k.div_ceil(2);
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
            tiled(m, n, &|first, count, p| pair_tile(&lhs[first * width..(first + count) * width], count, width / 2, pairs.panel(p)))
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
/// `BFDOT` takes them two by two.
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
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Path::Neon => unsafe { by_rows!(tile_neon) },
        _ => by_rows!(tile_portable),
    }
}

/// `count` ≤ 6 rows of paired bf16 activations (`[count, 2·pairs]`) times one pair panel, in
/// slot order ([`Path::Bfdot`]).
fn pair_tile(x: &[u16], count: usize, pairs: usize, panel: &[u16]) -> [f32; ROWS * PANEL] {
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! by_rows {
            ($($r:literal)*) => {
                match count {
                    $($r => unsafe { tile_bfdot::<$r>(x, pairs, panel) },)*
                    _ => unsafe { tile_bfdot::<6>(x, pairs, panel) },
                }
            };
        }
        // SAFETY: only a weight packed for `Bfdot`, which runs here, has pair panels.
        by_rows!(1 2 3 4 5)
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        let _ = (x, count, pairs, panel);
        unreachable!("pair panels are packed only where BFDOT runs")
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

/// The NEON register tile: 4·R accumulators of 4 f32 in slot order, a panel row's 16 bf16
/// widened by `SHLL #16` (a bf16 is the top half of its f32).
///
/// # Safety
/// The CPU runs NEON (every aarch64 does).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn tile_neon<const R: usize>(x: &[f32], k: usize, panel: &[u16]) -> [f32; ROWS * PANEL] {
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
unsafe fn tile_bfdot<const R: usize>(x: &[u16], pairs: usize, panel: &[u16]) -> [f32; ROWS * PANEL] {
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
    // Columns in order; store() expects slot order.
    let mut columns = [0.0f32; ROWS * PANEL];
    for (r, acc) in acc.iter().enumerate() {
        for (v, a) in acc.iter().enumerate() {
            // SAFETY: 4 floats at columns 4v.. of row r of a [6, 16] array.
            unsafe { vst1q_f32(columns.as_mut_ptr().add(r * PANEL + 4 * v), *a) };
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
        #[cfg(target_arch = "aarch64")]
        assert!(paths.contains(&Path::Neon), "every aarch64 has NEON");
        println!("paths run here: {}", names(&paths));
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
        // Unforced: the fastest path this CPU runs, never the check loops.
        let default = choose(None);
        let fastest = Path::ALL.into_iter().find(|p| p.runs_here() && *p != Path::Portable);
        assert_eq!(default.ok(), fastest);
        assert_eq!(choose(Some("")).ok(), fastest, "an empty variable forces nothing");
    }
}
