//! Where a layer's earlier keys and values come from, and where its new ones go.
//!
//! Two stores serve the one forward pass of each model ([`KvStore`]):
//! - [`Appended`]: the earlier keys (a prefix, a cache) in front of the new ones, returning
//!   past + current: what training and one-off passes use;
//! - [`KvCache`]: a cache written in place. Every layer's keys and values live in one
//!   preallocated pool of token slots and each row owns a list of slots (its prefix, its
//!   prompt, every token fed since). A row joining writes its own slots only; a row leaving, or
//!   beams reordering, moves slot numbers, never keys; beams that share a history share its
//!   slots (counted, freed when the last row holding one lets go). This is what decoding and
//!   the server's continuous batch use.

use burn::tensor::{Device, Int, Tensor};

use crate::attention::{attend, attend_written, KeyValue, Memory, Pages};
use crate::dropout::Site;
use crate::past::Past;
use crate::tensors::ints;
use crate::ModelError;

/// A cache's limit when nothing bounds it but slot numbers (`u32`): `generate`'s.
pub const NO_LIMIT: usize = u32::MAX as usize;

/// Layer by layer, the keys/values each layer's queries attend over.
pub trait KvStore {
    /// Layer `layer`'s keys and values to attend over, `[B, H, S, Dh]` in all: the earlier
    /// ones, then `current` `[B, H, T, Dh]` (the tokens of this pass).
    fn extend(&mut self, layer: usize, current: KeyValue) -> Memory;

    /// `queries` `[B, H, T, Dh]` attend over layer `layer`'s earlier keys and values and
    /// `current`, which the store keeps: [`attend`] over [`KvStore::extend`]'s memory, where a
    /// KV cache writes the new keys and attends in one kernel on a GPU. Returns `[B, T, H·Dh]`.
    fn attend(&mut self, layer: usize, queries: Tensor<4>, current: KeyValue, bias: Option<Tensor<4>>, scale: f32, dropout: Site) -> Tensor<3> {
        let memory = self.extend(layer, current);
        attend(queries, memory, bias, scale, dropout)
    }

    /// For a store that keeps nothing of this pass (a loss's): layer `layer`'s earlier keys and
    /// values, taken, so that the caller attends over them and its current ones as it holds
    /// them (GPT-2's packed projection). `None` where the store must see the current keys.
    fn passing(&mut self, _layer: usize) -> Option<Option<KeyValue>> {
        None
    }
}

/// Keys and values a layer reads without adding to them: cross-attention's memory (a cross
/// prefix, then the encoder's keys).
pub trait KvMemory {
    /// Layer `layer`'s keys and values, S in all.
    fn layer(&self, layer: usize) -> Memory;
}

impl KvMemory for Vec<KeyValue> {
    fn layer(&self, layer: usize) -> Memory {
        self[layer].clone().into()
    }
}

/// Cross-attention's memory in two parts per layer, for teacher forcing: the cross prefix
/// (`[B|1, H, P, Dh]`, one row a training batch shares), then the encoder's keys and values. A
/// GPU's attention reads them where they lie; decoding joins them once for its cache instead
/// ([`Past::then`](crate::past::Past::then)).
pub struct Fronted {
    pub front: Option<Vec<KeyValue>>,
    pub rest: Vec<KeyValue>,
}

impl KvMemory for Fronted {
    fn layer(&self, layer: usize) -> Memory {
        Memory::Parts { earlier: self.front.as_ref().map(|front| front[layer].clone()), current: self.rest[layer].clone() }
    }
}

/// Earlier keys/values per layer (or none) in front of the current ones; unless
/// [`Appended::transient`], keeps each layer's past + current (`presents`, concatenated), the
/// next pass's past.
pub struct Appended {
    past: Vec<Option<KeyValue>>,
    keep: bool,
    pub presents: Vec<KeyValue>,
}

impl Appended {
    pub fn new(past: Option<Vec<KeyValue>>, n_layer: usize) -> Self {
        let past = match past {
            Some(layers) => layers.into_iter().map(Some).collect(),
            None => (0..n_layer).map(|_| None).collect(),
        };
        Self { past, keep: true, presents: Vec::with_capacity(n_layer) }
    }

    /// A pass whose keys no later pass reads (teacher forcing in training, a loss): no
    /// presents, so the earlier keys are never concatenated with the current ones on a GPU.
    pub fn transient(past: Option<Vec<KeyValue>>, n_layer: usize) -> Self {
        Self { keep: false, ..Self::new(past, n_layer) }
    }
}

impl KvStore for Appended {
    fn passing(&mut self, layer: usize) -> Option<Option<KeyValue>> {
        (!self.keep).then(|| self.past.get_mut(layer).and_then(Option::take))
    }

    fn extend(&mut self, layer: usize, current: KeyValue) -> Memory {
        let memory = Memory::Parts { earlier: self.past.get_mut(layer).and_then(Option::take), current };
        if self.keep {
            self.presents.push(memory.clone().joined());
        }
        memory
    }
}

/// The slots one row sees, in order, and whether each is a real key (1) or padding (0).
#[derive(Debug, Clone, Default)]
struct RowSlots {
    slots: Vec<u32>,
    mask: Vec<f32>,
}

/// One layer's pool: keys and values `[H · capacity, Dh]`, head-major, so that a row's keys
/// gathered in (row, head, slot) order are `[B, H, S, Dh]` as they come.
#[derive(Debug, Clone)]
struct Pool {
    keys: Tensor<2>,
    values: Tensor<2>,
}

/// A KV cache written in place (see the module's text).
#[derive(Debug)]
pub struct KvCache {
    /// One per layer; `None` only while a layer is being written.
    layers: Vec<Option<Pool>>,
    heads: usize,
    head_dim: usize,
    /// Slots per head in every pool.
    capacity: usize,
    /// The most slots the pool may grow to.
    limit: usize,
    /// Per slot: how many rows hold it.
    holders: Vec<u32>,
    free: Vec<u32>,
    rows: Vec<RowSlots>,
    device: Device,
}

/// A [`KvCache`] during one forward pass that adds keys.
pub struct CacheStep<'a> {
    cache: &'a mut KvCache,
    /// `[B · H · T]`: the pool rows the current keys `[B, H, T, Dh]` go to.
    writes: Tensor<1, Int>,
    /// `[B, H, S]`: the pool row of each key every row reads.
    reads: Tensor<3, Int>,
}

impl KvStore for CacheStep<'_> {
    fn extend(&mut self, layer: usize, current: KeyValue) -> Memory {
        self.cache.write(layer, &self.writes, current);
        Memory::Paged(self.cache.pages(layer, &self.reads))
    }

    fn attend(&mut self, layer: usize, queries: Tensor<4>, current: KeyValue, bias: Option<Tensor<4>>, scale: f32, dropout: Site) -> Tensor<3> {
        let pool = self.cache.layers[layer].take().expect("every layer's pool between passes");
        let (out, (keys, values)) = attend_written(queries, current, (pool.keys, pool.values), self.reads.clone(), &self.writes, bias, scale, dropout);
        self.cache.layers[layer] = Some(Pool { keys, values });
        out
    }
}

/// A [`KvCache`] read as it is (cross-attention's memory).
pub struct CacheRead<'a> {
    cache: &'a KvCache,
    /// `[B, H, S]`, as [`CacheStep`]'s.
    reads: Tensor<3, Int>,
}

impl KvMemory for CacheRead<'_> {
    fn layer(&self, layer: usize) -> Memory {
        Memory::Paged(self.cache.pages(layer, &self.reads))
    }
}

impl KvCache {
    /// An empty cache for `n_layer` layers of `heads` × `head_dim`, room for `capacity` tokens
    /// before it grows, never more than `limit`.
    pub fn new(n_layer: usize, heads: usize, head_dim: usize, capacity: usize, limit: usize, device: &Device) -> Self {
        let capacity = capacity.clamp(1, limit.max(1));
        let pool = || Tensor::<2>::zeros([heads * capacity, head_dim], device);
        Self {
            layers: (0..n_layer).map(|_| Some(Pool { keys: pool(), values: pool() })).collect(),
            heads,
            head_dim,
            capacity,
            limit: limit.max(capacity),
            holders: vec![0; capacity],
            free: (0..capacity as u32).rev().collect(),
            rows: Vec::new(),
            device: device.clone(),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Slots held by at least one row.
    pub fn used(&self) -> usize {
        self.holders.iter().filter(|&&n| n > 0).count()
    }

    /// Slots that can still be taken, growth included.
    pub fn available(&self) -> usize {
        self.free.len() + (self.limit - self.capacity)
    }

    /// Row `row`'s key mask: 1 for each real key it sees, in order.
    pub fn mask(&self, row: usize) -> &[f32] {
        &self.rows[row].mask
    }

    /// Appends `count` rows that see nothing yet.
    pub fn push_empty(&mut self, count: usize) {
        self.rows.extend((0..count).map(|_| RowSlots::default()));
    }

    /// Appends `prefix`'s rows, or `rows` that see nothing yet where there is no prefix: how a
    /// decoder's cache starts.
    pub fn push_prefix(&mut self, prefix: Option<Past>, rows: usize) -> Result<(), ModelError> {
        match prefix {
            Some(prefix) => self.push(prefix),
            None => {
                self.push_empty(rows);
                Ok(())
            }
        }
    }

    /// Appends `past`'s rows (a prefix, or a prompt prefilled with one), each written into its
    /// own new slots; nobody else's keys move.
    pub fn push(&mut self, past: Past) -> Result<(), ModelError> {
        let (rows, length) = (past.rows(), past.len());
        let first = self.rows.len();
        self.ensure(rows * length)?;
        for row in past.mask {
            let slots = self.take(length)?;
            self.rows.push(RowSlots { slots, mask: row });
        }
        if length == 0 {
            return Ok(());
        }
        let writes = self.write_index(first..first + rows, length);
        for (layer, kv) in past.layers.into_iter().enumerate() {
            self.write(layer, &writes, kv);
        }
        Ok(())
    }

    /// Keeps rows `rows`, in that order (beams reordered, rows finished): a row kept twice
    /// shares its slots; slots no row keeps are free again. No key moves.
    pub fn keep(&mut self, rows: &[usize]) {
        let kept: Vec<RowSlots> = rows.iter().map(|&r| self.rows[r].clone()).collect();
        for slot in kept.iter().flat_map(|row| &row.slots) {
            self.holders[*slot as usize] += 1;
        }
        for row in std::mem::replace(&mut self.rows, kept) {
            self.release(&row.slots);
        }
    }

    /// Drops the last row (one that joined and is already done); its slots are free again.
    pub fn pop(&mut self) {
        if let Some(row) = self.rows.pop() {
            self.release(&row.slots);
        }
    }

    /// Every row's key mask once `new_mask`'s tokens follow it: what a pass's positions and
    /// attention bias are built from. An error when the batch's rows are not the cache's.
    pub fn masks_with(&self, new_mask: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.check_rows(new_mask.len())?;
        Ok(self.rows.iter().zip(new_mask).map(|(row, new)| [row.mask.as_slice(), new].concat()).collect())
    }

    fn check_rows(&self, batch: usize) -> Result<(), ModelError> {
        if batch != self.rows.len() {
            return Err(ModelError::Input(format!("the KV cache has {} rows but the batch has {batch}", self.rows.len())));
        }
        Ok(())
    }

    /// Makes room for `new_mask[b].len()` new tokens per row (the same count for every row):
    /// their slots are taken and their mask entries appended. Returns the pass's store; on an
    /// error nothing changed.
    pub fn step(&mut self, new_mask: &[Vec<f32>]) -> Result<CacheStep<'_>, ModelError> {
        self.check_rows(new_mask.len())?;
        let new_len = new_mask.first().map_or(0, Vec::len);
        self.ensure(new_mask.len() * new_len)?;
        for (row, mask) in new_mask.iter().enumerate() {
            let slots = self.take(new_len)?;
            self.rows[row].slots.extend(slots);
            self.rows[row].mask.extend_from_slice(mask);
        }
        let writes = self.write_index(0..self.rows.len(), new_len);
        let reads = self.reads();
        Ok(CacheStep { cache: self, writes, reads })
    }

    /// Every row's keys as they are, for a pass that reads them only.
    pub fn read(&self) -> CacheRead<'_> {
        CacheRead { cache: self, reads: self.reads() }
    }

    /// Every row's key mask (rows of different lengths).
    pub fn masks(&self) -> Vec<Vec<f32>> {
        self.rows.iter().map(|row| row.mask.clone()).collect()
    }

    /// Room for `count` more slots, the pool grown (doubled, within its limit) when too few are
    /// free; an error, with nothing taken, when they cannot fit.
    fn ensure(&mut self, count: usize) -> Result<(), ModelError> {
        if self.free.len() >= count {
            return Ok(());
        }
        let needed = self.capacity - self.free.len() + count;
        if needed > self.limit {
            return Err(ModelError::Input(format!("the KV cache is full: {count} more tokens do not fit in its {} slots", self.limit)));
        }
        self.grow(needed.max(2 * self.capacity).min(self.limit));
        Ok(())
    }

    /// `count` free slots (room made by [`KvCache::ensure`]).
    fn take(&mut self, count: usize) -> Result<Vec<u32>, ModelError> {
        self.ensure(count)?;
        let slots = self.free.split_off(self.free.len() - count);
        for &slot in &slots {
            self.holders[slot as usize] = 1;
        }
        Ok(slots)
    }

    fn release(&mut self, slots: &[u32]) {
        for &slot in slots {
            let holders = &mut self.holders[slot as usize];
            *holders -= 1;
            if *holders == 0 {
                self.free.push(slot);
            }
        }
    }

    /// Every pool to `capacity` slots per head (the one time keys are copied: amortised, as a
    /// growing vector's are).
    fn grow(&mut self, capacity: usize) {
        let (heads, head_dim, old) = (self.heads, self.head_dim, self.capacity);
        let grow = |pool: Tensor<2>| {
            let extra = Tensor::<3>::zeros([heads, capacity - old, head_dim], &pool.device());
            Tensor::cat(vec![pool.reshape([heads, old, head_dim]), extra], 1).reshape([heads * capacity, head_dim])
        };
        for layer in self.layers.iter_mut() {
            let pool = layer.take().expect("every layer's pool between passes");
            *layer = Some(Pool { keys: grow(pool.keys), values: grow(pool.values) });
        }
        self.holders.resize(capacity, 0);
        self.free.extend((old as u32..capacity as u32).rev());
        self.capacity = capacity;
    }

    /// The pool row of `slot` in head `head`.
    fn pool_row(&self, head: usize, slot: u32) -> i64 {
        (head * self.capacity + slot as usize) as i64
    }

    /// `[B · H · T]`: where the last `new_len` slots of rows `rows` take their keys, in the
    /// order of a `[B, H, T, Dh]` tensor.
    fn write_index(&self, rows: std::ops::Range<usize>, new_len: usize) -> Tensor<1, Int> {
        let mut index = Vec::with_capacity(rows.len() * self.heads * new_len);
        for row in &self.rows[rows] {
            let new = &row.slots[row.slots.len() - new_len..];
            for head in 0..self.heads {
                index.extend(new.iter().map(|&slot| self.pool_row(head, slot)));
            }
        }
        let len = index.len();
        ints(index, [len], &self.device)
    }

    /// `[B, H, S]`: every row's pool rows, head by head, padded at the end to the longest row's
    /// length with the row's first slot (masked: its keys are never seen there).
    fn reads(&self) -> Tensor<3, Int> {
        let longest = self.rows.iter().map(|row| row.slots.len()).max().unwrap_or(0);
        let mut index = Vec::with_capacity(self.rows.len() * self.heads * longest);
        for row in &self.rows {
            let pad = row.slots.first().copied().unwrap_or(0);
            for head in 0..self.heads {
                index.extend(row.slots.iter().map(|&slot| self.pool_row(head, slot)));
                index.extend(std::iter::repeat_n(self.pool_row(head, pad), longest - row.slots.len()));
            }
        }
        ints(index, [self.rows.len(), self.heads, longest], &self.device)
    }

    /// Writes `kv` `[B, H, T, Dh]` into layer `layer`'s pool rows `writes`, in place.
    fn write(&mut self, layer: usize, writes: &Tensor<1, Int>, kv: KeyValue) {
        let pool = self.layers[layer].take().expect("every layer's pool between passes");
        let (keys, values) = crate::kv_write::write((pool.keys, pool.values), writes, kv);
        self.layers[layer] = Some(Pool { keys, values });
    }

    /// Layer `layer`'s keys and values of every row where they lie, and where each is.
    fn pages(&self, layer: usize, reads: &Tensor<3, Int>) -> Pages {
        let pool = self.layers[layer].as_ref().expect("every layer's pool between passes");
        Pages { keys: pool.keys.clone(), values: pool.values.clone(), rows: reads.clone() }
    }
}
