//! Small conversions between host vectors and Burn tensors.

use burn::tensor::{Device, Int, Tensor, TensorData};

pub fn floats<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

pub fn ints<const D: usize>(values: Vec<i64>, shape: [usize; D], device: &Device) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Reads a float tensor back to the host as f32, whatever dtype the backend keeps.
pub fn to_f32s<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 conversion of float data")
}

pub fn to_i64s<const D: usize>(tensor: Tensor<D, Int>) -> Vec<i64> {
    tensor.into_data().convert::<i64>().try_to_vec::<i64>().expect("i64 conversion of int data")
}

/// Each row of a `[rows, V]` tensor, on the host.
pub fn host_rows(logits: Tensor<2>) -> Vec<Vec<f32>> {
    let vocab = logits.dims()[1];
    to_f32s(logits).chunks(vocab).map(<[f32]>::to_vec).collect()
}

/// Each row's logits of a `[rows, 1, V]` tensor, on the host: what the search loop ranks.
pub fn last_logits(logits: Tensor<3>) -> Vec<Vec<f32>> {
    let vocab = logits.dims()[2];
    to_f32s(logits).chunks(vocab).map(<[f32]>::to_vec).collect()
}
