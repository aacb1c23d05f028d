//! Which bf16 path this CPU runs: the paths, what each needs, the default, and the one
//! `PREFIX_TUNE_BF16_PATH` forces.

use crate::amx;
use std::sync::OnceLock;

/// The environment variable that forces a path (`amx`, `avx512bf16`, `avx2`, `bfdot`, `neon`,
/// `portable`).
pub const FORCE_VAR: &str = "PREFIX_TUNE_BF16_PATH";

/// A way of running the bf16 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Amx,
    Avx512Bf16,
    Avx2,
    Bfdot,
    Neon,
    Portable,
}

impl Path {
    /// Every path, fastest first.
    pub const ALL: [Path; 6] = [Path::Amx, Path::Avx512Bf16, Path::Avx2, Path::Bfdot, Path::Neon, Path::Portable];

    /// The name `PREFIX_TUNE_BF16_PATH` takes.
    pub fn name(self) -> &'static str {
        match self {
            Path::Amx => "amx",
            Path::Avx512Bf16 => "avx512bf16",
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
            Path::Avx512Bf16 => "AVX512-BF16",
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
            Path::Avx512Bf16 => is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16"),
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
    /// path (slower than f32 on x86-64; aarch64 always has NEON); `vdpbf16ps` only on AMD. AMD's
    /// Zen 4 and 5 run it as one instruction at the rate of an FMA, twice the multiply-adds of
    /// the `avx2` path's f32 FMA; Intel's Xeons run it at half that rate, no more multiply-adds
    /// than the f32 FMA (on a 4th-gen Xeon with AMX, forced: training 215–225 tok/s against
    /// `avx2`'s 232–242, decoding level), so there `avx2` stays the default after AMX.
    fn is_default_candidate(self) -> bool {
        match self {
            Path::Portable => false,
            Path::Avx512Bf16 => cpu_is_amd(),
            _ => true,
        }
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
            PathError::Unknown(name) => write!(f, "{FORCE_VAR}={name:?} is not a bf16 path ({})", names(&Path::ALL)),
            PathError::Unsupported(path) => {
                write!(f, "{FORCE_VAR}={} needs {}, which this CPU lacks (it runs: {})", path.name(), path.needs(), names(&Path::runnable()))
            }
            PathError::NoneHere => write!(
                f,
                "--dtype bf16 needs an x86-64 CPU with AMX-BF16, AVX512-BF16 or AVX2 and FMA, or an aarch64 one (this one is neither; {FORCE_VAR}=portable forces plain loops)"
            ),
        }
    }
}

impl std::error::Error for PathError {}

/// Whether this is an AMD x86-64 CPU (CPUID's vendor string).
pub(super) fn cpu_is_amd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let vendor = std::arch::x86_64::__cpuid(0); // leaf 0: the vendor string, on every x86-64
        let bytes: Vec<u8> = [vendor.ebx, vendor.edx, vendor.ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
        bytes == b"AuthenticAMD"
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

pub(super) fn names(paths: &[Path]) -> String {
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
