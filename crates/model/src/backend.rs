//! The one place where a backend name becomes a Burn `Device`.
//!
//! Burn 0.22 compiles backends in through cargo features and picks them at run time through a
//! `Device` value. Everything else in the workspace takes a `&Device` and never asks which
//! backend it is.

use burn::tensor::Device;

use crate::ModelError;

mod adapters;

pub use adapters::{adapters, best_gpu, Adapter, AdapterKind};

/// The backends this workspace knows, whether or not this build compiled them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A real GPU adapter through wgpu if one is present, else the CPU backend (flex). A
    /// software adapter (lavapipe, llvmpipe, SwiftShader) is never picked: name `wgpu` for it.
    Auto,
    /// wgpu with automatic API choice (Metal / Vulkan / DX12), WGSL shaders. Feature `wgpu`.
    Wgpu,
    /// wgpu pinned to Vulkan, SPIR-V shaders. Feature `vulkan`.
    Vulkan,
    /// wgpu pinned to Metal, MSL shaders. Feature `metal`.
    Metal,
    /// NVIDIA CUDA. Feature `cuda`.
    Cuda,
    /// Pure-Rust CPU backend. Feature `flex`.
    Flex,
}

impl Backend {
    pub const ALL: [Backend; 6] = [Self::Auto, Self::Wgpu, Self::Vulkan, Self::Metal, Self::Cuda, Self::Flex];

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Wgpu => "wgpu",
            Self::Vulkan => "vulkan",
            Self::Metal => "metal",
            Self::Cuda => "cuda",
            Self::Flex => "flex",
        }
    }

    pub fn parse(name: &str) -> Result<Self, ModelError> {
        Self::ALL
            .into_iter()
            .find(|backend| backend.name() == name.to_ascii_lowercase())
            .ok_or_else(|| ModelError::Backend(format!(
                "unknown backend `{name}`: expected one of auto, wgpu, vulkan, metal, cuda, flex"
            )))
    }

    /// Whether this binary was built with the cargo feature of the same name (`auto` always is).
    pub fn is_compiled(self) -> bool {
        match self {
            Self::Auto => true,
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Vulkan => cfg!(feature = "vulkan"),
            Self::Metal => cfg!(feature = "metal"),
            Self::Cuda => cfg!(feature = "cuda"),
            Self::Flex => cfg!(feature = "flex"),
        }
    }

    /// The backends compiled into this build, in order of preference.
    pub fn compiled() -> Vec<Backend> {
        [Self::Cuda, Self::Metal, Self::Vulkan, Self::Wgpu, Self::Flex]
            .into_iter()
            .filter(|backend| backend.is_compiled())
            .collect()
    }

    /// Whether this backend runs through wgpu's adapters.
    pub fn uses_wgpu(self) -> bool {
        matches!(self, Self::Wgpu | Self::Vulkan | Self::Metal)
    }

    /// The device for this backend (`auto` resolved), or a one-line error naming what is
    /// available instead.
    pub fn device(self) -> Result<Device, ModelError> {
        resolve(Some(self)).map(|resolved| resolved.device)
    }
}

/// The device a command runs on, and what it is.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The backend itself, never `Auto`.
    pub backend: Backend,
    pub device: Device,
    /// The wgpu adapter, for a wgpu backend: the one `auto` picked, or the one wgpu prefers.
    pub adapter: Option<Adapter>,
}

impl std::fmt::Display for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.adapter {
            Some(adapter) => write!(f, "{} on {adapter}", self.backend.name()),
            None => f.write_str(self.backend.name()),
        }
    }
}

/// The device of `backend`; `None` is `auto`.
pub fn resolve(backend: Option<Backend>) -> Result<Resolved, ModelError> {
    match backend.unwrap_or(Backend::Auto) {
        Backend::Auto => auto(),
        backend => named(backend),
    }
}

/// `--backend auto`: the best real GPU adapter through the first compiled wgpu backend, else
/// CUDA where an NVIDIA driver is present, else the CPU.
fn auto() -> Result<Resolved, ModelError> {
    let seen = adapters();
    if let Some(backend) = [Backend::Wgpu, Backend::Vulkan, Backend::Metal].into_iter().find(|b| b.is_compiled()) {
        if let Some(adapter) = best_gpu(&seen) {
            return Ok(Resolved { backend, device: wgpu_device(backend, adapter.device_kind()), adapter: Some(adapter.clone()) });
        }
    }
    if Backend::Cuda.is_compiled() && std::path::Path::new("/dev/nvidiactl").exists() {
        return named(Backend::Cuda);
    }
    if Backend::Flex.is_compiled() {
        return named(Backend::Flex);
    }
    Err(ModelError::Backend(format!(
        "--backend auto: no GPU adapter{} and no CPU backend in this build: name one (--backend wgpu) or rebuild with `--features flex`",
        if seen.is_empty() { String::new() } else { format!(" (seen, used only by name: {})", listed(&seen)) }
    )))
}

/// A backend named on the command line: compiled in, and for wgpu, with an adapter to run on.
fn named(backend: Backend) -> Result<Resolved, ModelError> {
    if !backend.is_compiled() {
        return Err(ModelError::Backend(format!(
            "backend `{}` is not compiled into this build (available: {}): rebuild with `--features {}`",
            backend.name(),
            available(),
            backend.name()
        )));
    }
    let adapter = if backend.uses_wgpu() {
        let seen = adapters();
        let adapter = best_gpu(&seen).or(seen.first()).cloned();
        if adapter.is_none() {
            return Err(ModelError::Backend(format!(
                "backend `{}`: no adapter found (no Vulkan, Metal or DX12 driver answered; available: {})",
                backend.name(),
                available()
            )));
        }
        adapter
    } else {
        None
    };
    let device = match &adapter {
        Some(adapter) => wgpu_device(backend, adapter.device_kind()),
        None => plain_device(backend),
    };
    Ok(Resolved { backend, device, adapter })
}

/// What this build can run on here, for error messages: `flex, wgpu (lavapipe (software, Vulkan))`.
pub fn available() -> String {
    let seen = adapters();
    let names: Vec<String> = Backend::compiled()
        .into_iter()
        .filter(|b| !b.uses_wgpu() || !seen.is_empty())
        .map(|b| match b.uses_wgpu() {
            true => format!("{} ({})", b.name(), listed(&seen)),
            false => b.name().to_string(),
        })
        .collect();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

/// Adapters as one comma-separated line.
fn listed(adapters: &[Adapter]) -> String {
    adapters.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[allow(unused_variables)]
fn wgpu_device(backend: Backend, kind: burn::tensor::DeviceKind) -> Device {
    #[allow(unreachable_code)]
    match backend {
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => Device::wgpu(kind),
        #[cfg(feature = "vulkan")]
        Backend::Vulkan => Device::vulkan(kind),
        #[cfg(feature = "metal")]
        Backend::Metal => Device::metal(kind),
        _ => unreachable!("wgpu_device: {} is compiled and runs through wgpu", backend.name()),
    }
}

fn plain_device(backend: Backend) -> Device {
    #[allow(unreachable_code)]
    match backend {
        #[cfg(feature = "cuda")]
        Backend::Cuda => Device::cuda(0),
        #[cfg(feature = "flex")]
        Backend::Flex => Device::flex(),
        _ => unreachable!("plain_device: {} is compiled and is not a wgpu backend", backend.name()),
    }
}

/// The threads the CPU backend computes on (`--threads`, `RAYON_NUM_THREADS`, else the cores).
pub fn cpu_threads() -> usize {
    #[cfg(feature = "flex")]
    return prefix_tune_kernels::team::threads();
    #[cfg(not(feature = "flex"))]
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sets the CPU backend's threads (before any CPU work).
pub fn set_cpu_threads(threads: usize) -> Result<(), crate::ModelError> {
    #[cfg(feature = "flex")]
    return prefix_tune_kernels::team::set_threads(threads).map_err(|e| crate::ModelError::Backend(format!("cannot set {threads} CPU threads: {e}")));
    #[cfg(not(feature = "flex"))]
    {
        let _ = threads;
        Err(crate::ModelError::Backend("--threads: this build has no CPU backend (flex)".into()))
    }
}

/// Whether tensors on `device` run on the CPU backend (flex), with or without autodiff: the
/// place to take CPU-specific scheduling and kernels.
pub fn is_cpu(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    return matches!(device.clone().without_autodiff().as_dispatch(), burn::backend::DispatchDevice::Flex(_));
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// Whether `device` runs on a CubeCL runtime (wgpu, Vulkan, Metal, CUDA): where the kernels of
/// `shaders/` apply.
pub fn is_gpu(device: &Device) -> bool {
    #[cfg(feature = "gpu")]
    return matches!(device.clone().without_autodiff().as_dispatch(), burn::backend::DispatchDevice::Cube(_));
    #[cfg(not(feature = "gpu"))]
    {
        let _ = device;
        false
    }
}

/// The device for `--backend NAME`; no name is `auto`.
pub fn device(name: Option<&str>) -> Result<Device, ModelError> {
    device_for(name.map(Backend::parse).transpose()?)
}

/// The device of `backend`; `None` is `auto`.
pub fn device_for(backend: Option<Backend>) -> Result<Device, ModelError> {
    resolve(backend).map(|resolved| resolved.device)
}

/// Where a command runs: `--backend` and `--dtype`, the same flags for every command that
/// runs a model.
#[derive(clap::Args, Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceArgs {
    /// auto (default: a GPU adapter if one is present, else the CPU), wgpu, vulkan, metal, cuda
    /// or flex.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// bf16 or f16: the frozen model's matrix products in half precision with f32 sums (CPU
    /// backend: bf16 on AMX tiles, else AVX2+FMA, else portable loops; a GPU: f16, or bf16
    /// where the adapter has it); a prefix, its gradients and optimizer stay f32.
    #[arg(long, value_enum, default_value_t = crate::bf16::Dtype::F32)]
    #[serde(default)]
    pub dtype: crate::bf16::Dtype,
}

impl DeviceArgs {
    /// The device of `--backend`.
    pub fn device(&self) -> Result<Device, ModelError> {
        device_for(self.backend)
    }
}

/// Logs every GPU kernel launch to `log`, one line each (CubeCL's execution log), so that a
/// benchmark can count dispatches. Call it before the first GPU operation: CubeCL reads its
/// settings once.
pub fn log_gpu_dispatches(log: &std::path::Path) -> Result<(), ModelError> {
    #[cfg(feature = "gpu")]
    {
        use cubecl_runtime::config::{profiling::ProfilingLogLevel, CubeClRuntimeConfig, RuntimeConfig};
        let mut config = CubeClRuntimeConfig::default();
        config.profiling.logger.level = ProfilingLogLevel::Minimal;
        config.profiling.logger.file = Some(log.to_path_buf());
        config.profiling.logger.append = false;
        if !CubeClRuntimeConfig::try_set(config) {
            return Err(ModelError::Backend("cannot count GPU dispatches: CubeCL's settings were already read".into()));
        }
        Ok(())
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = log;
        Err(ModelError::Backend("counting GPU dispatches needs a GPU backend in this build".into()))
    }
}

/// The kernel launches `log_gpu_dispatches` has written so far.
pub fn gpu_dispatches_logged(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |text| text.lines().filter(|l| l.starts_with("Executing ")).count())
}
