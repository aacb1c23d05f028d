//! What the CPU backend's custom ops ([`gelu`](crate::gelu), [`few_rows`](crate::few_rows),
//! [`bf16`](crate::bf16), [`cross_entropy`](crate::cross_entropy),
//! [`layer_norm`](crate::layer_norm)) share: reading a flex tensor's values, wrapping a result
//! without a copy, and the backward step of a one-input op.

use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::Ops;
use burn::backend::Flex;
use burn::tensor::{Shape, TensorData};
use burn_flex::FlexTensor;

/// [`crate::ops::backward_one`] on the CPU backend, the upstream gradient made contiguous for
/// the kernels' slices.
pub fn backward_one<S>(ops: Ops<S, 1>, grads: &mut Gradients, input_grad: impl FnOnce(S, FlexTensor) -> FlexTensor) {
    crate::ops::backward_one::<Flex, S>(ops, grads, |state, grad| input_grad(state, grad.to_contiguous()));
}

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
