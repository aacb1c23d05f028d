//! Matrix products of a few rows (decoding steps) through [`prefix_tune_kernels`] on the CPU
//! backend: one Burn backend-extension op, so the tensors never leave Burn.
//!
//! Decoding multiplies one row per sequence or beam by each weight, and its time is the time to
//! read the weights. Flex's general matmul reads them at about 6 GB/s; the kernel streams them
//! at memory bandwidth on every core (GPT-2 small's LM head: 23–26 ms → 5–9 ms per step here).
//! Every other backend, and anything autodiff records, takes Burn's own matmul.

use burn::tensor::Tensor;

/// `x · w` for `x` `[M, K]` and `w` `[K, N]` (any strides, e.g. a transposed embedding).
pub fn matmul(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    #[cfg(feature = "flex")]
    if takes_the_kernel(&x) && w.dtype() == burn::tensor::DType::F32 {
        return flex::matmul(x, w);
    }
    x.matmul(w)
}

/// Whether [`matmul`] runs the bandwidth kernel for `x` rather than Burn's matmul.
pub fn takes_the_kernel(x: &Tensor<2>) -> bool {
    #[cfg(feature = "flex")]
    return x.dims()[0] <= prefix_tune_kernels::MAX_ROWS && flex::applies(x);
    #[cfg(not(feature = "flex"))]
    {
        let _ = x;
        false
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::{backend_extension, tensor::FloatTensor, Dispatch, Flex};
    use burn::tensor::{DType, Tensor};
    use burn_flex::FlexTensor;
    use prefix_tune_kernels::{few_rows_matmul, Weight};

    /// Only plain (not autodiff) f32 tensors on the flex device: decoding, evaluation, serving.
    pub fn applies(x: &Tensor<2>) -> bool {
        let device = x.device();
        !device.is_autodiff() && crate::backend::is_cpu(&device) && x.dtype() == DType::F32
    }

    pub fn matmul(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
        Tensor::from_dispatch(<Dispatch as FewRows>::few_rows_matmul(x.into_dispatch(), w.into_dispatch()))
    }

    enum Layout {
        Rows(usize),
        Columns(usize),
    }

    /// How `w` `[K, N]` lies: row-major (a `Linear` weight), column-major (a transposed
    /// embedding), or neither, in which case a contiguous copy is returned with it.
    fn weight_layout(w: &FlexTensor, k: usize, n: usize) -> (Option<FlexTensor>, Layout) {
        let strides = w.layout().strides();
        let (row, col) = (strides[0], strides[1]);
        if col == 1 && (row >= n as isize || k == 1) {
            (None, Layout::Rows(n.max(row as usize)))
        } else if row == 1 && (col >= k as isize || n == 1) {
            (None, Layout::Columns(k.max(col as usize)))
        } else {
            (Some(w.to_contiguous()), Layout::Rows(n))
        }
    }

    #[backend_extension(Flex)]
    pub trait FewRows: burn::backend::Backend {
        /// `[M, K] · [K, N] → [M, N]` for M ≤ `MAX_ROWS`.
        fn few_rows_matmul(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    impl FewRows for Flex {
        fn few_rows_matmul(x: FlexTensor, w: FlexTensor) -> FlexTensor {
            let x = x.to_contiguous();
            let (x_dims, w_dims) = (x.layout().shape(), w.layout().shape());
            let (m, k, n) = (x_dims[0], x_dims[1], w_dims[1]);
            assert_eq!(w_dims[0], k, "few_rows_matmul: inner dimensions differ");
            let (copy, layout) = weight_layout(&w, k, n);
            let w = copy.as_ref().unwrap_or(&w);
            let data: &[f32] = &w.storage::<f32>()[w.layout().start_offset()..];
            let weight = match layout {
                Layout::Rows(stride) => Weight::Rows { data, stride },
                Layout::Columns(stride) => Weight::Columns { data, stride },
            };
            let out = few_rows_matmul(crate::flex::values(&x), m, k, weight, n);
            crate::flex::tensor(out, [m, n])
        }
    }
}
