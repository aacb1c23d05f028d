//! The wgpu adapters this machine offers, as `--backend auto` weighs them and
//! `prefix-tune devices` lists them.

/// What kind of adapter wgpu reports. Software renderers (Mesa's lavapipe and llvmpipe,
/// SwiftShader, WARP) report themselves as CPU devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    Discrete,
    Integrated,
    Virtual,
    Software,
    Other,
}

impl AdapterKind {
    /// A real GPU, which `--backend auto` may pick; a software or unknown adapter is used only
    /// when named.
    pub fn is_gpu(self) -> bool {
        matches!(self, Self::Discrete | Self::Integrated | Self::Virtual)
    }
}

/// One adapter: its name, kind, graphics API and driver, and its index among adapters of its
/// kind (how Burn's `DeviceKind` addresses it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Adapter {
    pub name: String,
    pub kind: AdapterKind,
    pub api: String,
    pub driver: String,
    pub index: usize,
}

impl Adapter {
    /// Burn's address of this adapter.
    pub fn device_kind(&self) -> burn::tensor::DeviceKind {
        use burn::tensor::DeviceKind;
        match self.kind {
            AdapterKind::Discrete => DeviceKind::DiscreteGpu(self.index),
            AdapterKind::Integrated => DeviceKind::IntegratedGpu(self.index),
            AdapterKind::Virtual => DeviceKind::VirtualGpu(self.index),
            AdapterKind::Software => DeviceKind::Cpu,
            AdapterKind::Other => DeviceKind::DefaultDevice,
        }
    }
}

impl std::fmt::Display for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = serde_json::to_value(self.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        write!(f, "{} ({kind}, {})", self.name, self.api)
    }
}

/// The best real GPU among `adapters`: discrete before integrated before virtual, then the
/// first listed.
pub fn best_gpu(adapters: &[Adapter]) -> Option<&Adapter> {
    adapters.iter().filter(|a| a.kind.is_gpu()).min_by_key(|a| a.kind)
}

/// Every adapter wgpu enumerates on the native APIs (Vulkan, Metal, DX12; Burn's wgpu backend
/// uses the one native to the platform), in wgpu's order.
/// Empty in a build without a wgpu backend, or where no driver answers.
pub fn adapters() -> Vec<Adapter> {
    #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
    {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: instance_backends(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let infos: Vec<wgpu::AdapterInfo> = futures_lite::future::block_on(instance.enumerate_adapters(instance_backends()))
            .iter()
            .map(wgpu::Adapter::get_info)
            .collect();
        with_indices(infos.into_iter().map(|info| (info.name, kind_of(info.device_type), format!("{:?}", info.backend), info.driver)))
    }
    #[cfg(not(any(feature = "wgpu", feature = "vulkan", feature = "metal")))]
    Vec::new()
}

#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
fn instance_backends() -> wgpu::Backends {
    wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12
}

#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
fn kind_of(device_type: wgpu::DeviceType) -> AdapterKind {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => AdapterKind::Discrete,
        wgpu::DeviceType::IntegratedGpu => AdapterKind::Integrated,
        wgpu::DeviceType::VirtualGpu => AdapterKind::Virtual,
        wgpu::DeviceType::Cpu => AdapterKind::Software,
        wgpu::DeviceType::Other => AdapterKind::Other,
    }
}

/// Numbers each adapter within its kind, in listing order, as Burn counts them.
#[cfg_attr(not(any(feature = "wgpu", feature = "vulkan", feature = "metal")), allow(dead_code))] // only the unit tests list adapters then
pub(crate) fn with_indices(listed: impl Iterator<Item = (String, AdapterKind, String, String)>) -> Vec<Adapter> {
    let mut seen: Vec<AdapterKind> = Vec::new();
    listed
        .map(|(name, kind, api, driver)| {
            let index = seen.iter().filter(|&&k| k == kind).count();
            seen.push(kind);
            Adapter { name, kind, api, driver, index }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(kinds: &[AdapterKind]) -> Vec<Adapter> {
        with_indices(kinds.iter().enumerate().map(|(i, &k)| (format!("gpu{i}"), k, "Vulkan".into(), String::new())))
    }

    #[test]
    fn auto_prefers_a_discrete_gpu_and_never_a_software_one() {
        use AdapterKind::*;
        let adapters = listed(&[Software, Integrated, Discrete, Discrete]);
        let best = best_gpu(&adapters).unwrap();
        assert_eq!((best.name.as_str(), best.index), ("gpu2", 0));
        assert_eq!(adapters[3].index, 1, "indices count within a kind");
        assert_eq!(best_gpu(&listed(&[Software, Other])), None);
        assert_eq!(best_gpu(&listed(&[Software, Virtual])).unwrap().kind, Virtual);
    }
}
