//! Reading Hugging Face safetensors checkpoints (single file or sharded) tensor by tensor, with
//! errors that name the file and the tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::ModelError;

/// The safetensors files of one checkpoint, read into memory.
pub struct WeightFiles {
    files: Vec<(PathBuf, Vec<u8>)>,
    /// tensor name → index into `files`
    index: HashMap<String, usize>,
}

impl WeightFiles {
    /// Opens `model.safetensors`, or every shard listed in `model.safetensors.index.json`.
    /// A directory with only `pytorch_model.bin` is refused: we never unpickle.
    pub fn open_dir(dir: &Path) -> Result<Self, ModelError> {
        let single = dir.join("model.safetensors");
        let sharded = dir.join("model.safetensors.index.json");
        if single.is_file() {
            return Self::open(vec![single]);
        }
        if sharded.is_file() {
            let text = std::fs::read_to_string(&sharded).map_err(|e| ModelError::io(&sharded, e))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::config(&sharded, "(json)", format!("not valid JSON: {e}")))?;
            let map = value
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::config(&sharded, "weight_map", "missing or not an object"))?;
            let mut shards: Vec<PathBuf> = Vec::new();
            for file in map.values() {
                let file = file
                    .as_str()
                    .ok_or_else(|| ModelError::config(&sharded, "weight_map", "values must be file names"))?;
                let path = dir.join(file);
                if !shards.contains(&path) {
                    shards.push(path);
                }
            }
            return Self::open(shards);
        }
        for pickle in ["pytorch_model.bin", "pytorch_model.bin.index.json"] {
            if dir.join(pickle).exists() {
                return Err(ModelError::PickleRefused { path: dir.join(pickle) });
            }
        }
        Err(ModelError::NoWeights { path: dir.to_path_buf() })
    }

    pub fn open(paths: Vec<PathBuf>) -> Result<Self, ModelError> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for path in paths {
            if path.extension().is_some_and(|ext| ext == "bin" || ext == "pt" || ext == "pth") {
                return Err(ModelError::PickleRefused { path });
            }
            let bytes = std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
            let tensors = SafeTensors::deserialize(&bytes)
                .map_err(|e| ModelError::Safetensors { path: path.clone(), reason: e.to_string() })?;
            for name in tensors.names() {
                index.insert(name.to_string(), files.len());
            }
            files.push((path, bytes));
        }
        Ok(Self { files, index })
    }

    /// The path named in errors when a tensor is missing from every file.
    pub fn describe(&self) -> PathBuf {
        match self.files.as_slice() {
            [(path, _)] => path.clone(),
            [(path, _), ..] => path.parent().map(Path::to_path_buf).unwrap_or_default(),
            [] => PathBuf::new(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// The tensor `name` as f32 values, checked against `expected` shape; `why` tells the user
    /// which config fields the expected shape comes from.
    pub fn read(&self, name: &str, expected: &[usize], why: &str) -> Result<Vec<f32>, ModelError> {
        self.view(name, |path, view| {
            if view.shape() != expected {
                return Err(ModelError::ShapeMismatch {
                    path: path.into(),
                    name: name.into(),
                    found: view.shape().to_vec(),
                    expected: expected.to_vec(),
                    why: why.into(),
                });
            }
            to_f32(view).ok_or_else(|| ModelError::Dtype { path: path.into(), name: name.into(), dtype: format!("{:?}", view.dtype()) })
        })?
    }

    /// Runs `f` on the tensor `name` and the file it is in (integer tensors in fixtures,
    /// prefix files, optimizer state).
    pub fn view<T>(&self, name: &str, f: impl FnOnce(&Path, &TensorView) -> T) -> Result<T, ModelError> {
        let file = *self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor { path: self.describe(), name: name.into() })?;
        let (path, bytes) = &self.files[file];
        let safetensors_error = |e: safetensors::SafeTensorError| ModelError::Safetensors { path: path.clone(), reason: e.to_string() };
        let tensors = SafeTensors::deserialize(bytes).map_err(safetensors_error)?;
        let view = tensors.tensor(name).map_err(safetensors_error)?;
        Ok(f(path, &view))
    }
}

/// Little-endian floats of any of the dtypes checkpoints ship in, widened to f32.
pub fn to_f32(view: &TensorView) -> Option<Vec<f32>> {
    let data = view.data();
    Some(match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        _ => return None,
    })
}

/// Little-endian integers (I64 or I32) as i64.
pub fn to_i64(view: &TensorView) -> Option<Vec<i64>> {
    let data = view.data();
    Some(match view.dtype() {
        Dtype::I64 => data.chunks_exact(8).map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])).collect(),
        Dtype::I32 => data.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64).collect(),
        _ => return None,
    })
}

/// Writes f32 tensors to a safetensors file atomically (temp file + rename), so a crash never
/// leaves a half-written file where a good one was.
pub fn save_f32(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<(), ModelError> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), data)
                .map_err(|e| ModelError::Safetensors { path: path.into(), reason: e.to_string() })?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_, ModelError>>()?;
    let serialized = safetensors::serialize(views, None)
        .map_err(|e| ModelError::Safetensors { path: path.into(), reason: e.to_string() })?;
    write_atomic(path, &serialized)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    std::fs::write(&tmp, bytes).map_err(|e| ModelError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}
