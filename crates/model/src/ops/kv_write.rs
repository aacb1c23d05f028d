//! Writing a pass's keys and values into a KV cache's pools: on a GPU one kernel for both,
//! reading them where they lie ([`prefix_tune_shaders::kv`]); elsewhere a `select_assign` each.

use burn::tensor::{IndexingUpdateOp, Int, Tensor};

use crate::attention::KeyValue;

/// The key and value pools `[H·capacity, Dh]` with `current` (`[B, H, T, Dh]`) written at rows
/// `slots` (`[B·H·T]`, in (row, head, token) order).
pub fn write((keys, values): (Tensor<2>, Tensor<2>), slots: &Tensor<1, Int>, current: KeyValue) -> (Tensor<2>, Tensor<2>) {
    #[cfg(feature = "gpu")]
    if !keys.device().is_autodiff() && crate::backend::is_gpu(&keys.device()) && keys.dtype() == burn::tensor::DType::F32 && current.keys.dtype() == burn::tensor::DType::F32 {
        return gpu::write((keys, values), slots.clone(), current);
    }
    let head_dim = keys.dims()[1];
    let rows = |t: Tensor<4>| t.reshape([-1, head_dim as i32]);
    (
        keys.select_assign(0, slots.clone(), rows(current.keys), IndexingUpdateOp::Assign),
        values.select_assign(0, slots.clone(), rows(current.values), IndexingUpdateOp::Assign),
    )
}

#[cfg(feature = "gpu")]
mod gpu {
    use burn::backend::tensor::{FloatTensor, IntTensor};
    use burn::backend::backend_extension;
    use burn::tensor::{Int, Tensor};
    use prefix_tune_shaders::{kv, CubeBackend, CubeTensor};

    use crate::attention::KeyValue;

    #[backend_extension(Cube, Fusion)]
    pub trait CubeKvWrite: burn::backend::Backend {
        /// The pools with the keys and values written at rows `slots`.
        #[fusion(meta = |pool_keys, pool_values, _slots, _keys, _values| (pool_keys.clone(), pool_values.clone()))]
        fn cube_kv_write(pool_keys: FloatTensor<Self>, pool_values: FloatTensor<Self>, slots: IntTensor<Self>, keys: FloatTensor<Self>, values: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>);
    }

    impl CubeKvWrite for CubeBackend {
        fn cube_kv_write(pool_keys: CubeTensor, pool_values: CubeTensor, slots: CubeTensor, keys: CubeTensor, values: CubeTensor) -> (CubeTensor, CubeTensor) {
            kv::write(pool_keys, pool_values, slots, keys, values)
        }
    }

    pub fn write((keys, values): (Tensor<2>, Tensor<2>), slots: Tensor<1, Int>, current: KeyValue) -> (Tensor<2>, Tensor<2>) {
        let (keys, values) = <burn::backend::Dispatch as CubeKvWrite>::cube_kv_write(
            keys.into_dispatch(),
            values.into_dispatch(),
            slots.into_dispatch(),
            current.keys.into_dispatch(),
            current.values.into_dispatch(),
        );
        (Tensor::from_dispatch(keys), Tensor::from_dispatch(values))
    }
}
