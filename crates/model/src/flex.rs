//! What the CPU backend's custom ops ([`gelu`](crate::gelu), [`few_rows`](crate::few_rows),
//! [`bf16`](crate::bf16), [`cross_entropy`](crate::cross_entropy)) share: reading a flex
//! tensor's values and wrapping a result without a copy.

use burn::tensor::{Shape, TensorData};
use burn_flex::FlexTensor;

/// A contiguous f32 tensor's values (from its start offset).
pub fn values(tensor: &FlexTensor) -> &[f32] {
    let count = tensor.layout().shape().num_elements();
    let start = tensor.layout().start_offset();
    &tensor.storage::<f32>()[start..start + count]
}

/// An f32 tensor owning `values`. `FlexTensor::empty` zeroes a byte buffer and then copies it
/// to realign it; a `Vec<f32>` is taken as it is.
pub fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}
