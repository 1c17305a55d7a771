//! The GRU encoder's forward pass for one sequence, in plain Rust.
//!
//! libtorch runs a GRU step as a dozen small operators; at batch size one their dispatch, not the
//! arithmetic, is most of the cost. Serving mostly embeds one sequence at a time, so the embedder
//! runs single sequences here and batches through libtorch (`EmbedderConfig::single_sequence_kernel`
//! turns this off). Both compute the model's canonical input, the sequence left-padded to `max_len`:
//! padding steps do not depend on the sequence, so their states are computed once and a sequence
//! of `n` items costs `n` steps.

use std::collections::HashMap;

use tch::Tensor;

use crate::encoder::SingleSequenceEncoder;

/// Above this size the per-item input gates are computed per step instead of kept in a table.
const MAX_INPUT_GATE_TABLE_BYTES: usize = 256 << 20;

/// Weights of a one-layer GRU followed by a linear projection, as `f32`, matrices transposed
/// (`[inputs, outputs]`) so a matrix-vector product is a sum of scaled rows, which vectorises
/// without horizontal sums.
pub struct GruKernel {
    dim: usize,
    max_len: usize,
    /// `[num_items + 1, dim]`, row 0 is padding.
    item_table: Vec<f32>,
    /// `W_ih e + b_ih` of every item, `[num_items + 1, 3 * dim]`, when small enough.
    input_gate_table: Option<Vec<f32>>,
    /// `[dim, 3 * dim]` each; gate order (reset, update, new) as in PyTorch.
    input_weights: Vec<f32>,
    hidden_weights: Vec<f32>,
    input_bias: Vec<f32>,
    hidden_bias: Vec<f32>,
    /// `[dim, dim]` and `[dim]`.
    projection_weights: Vec<f32>,
    projection_bias: Vec<f32>,
    /// Whether this CPU runs the AVX2 + FMA build of the loops.
    use_avx2_fma: bool,
    /// `padded_states[k]`: the hidden state after `k` padding steps from zero.
    padded_states: Vec<Vec<f32>>,
}

/// Outputs computed together: their partial sums stay in registers (8 AVX2 registers) while
/// every input is folded in, instead of going through memory once per input.
const OUTPUT_BLOCK: usize = 64;

/// `out = bias + Σ_j vector[j] · weights[j]`, `weights` row-major `[vector.len(), out.len()]`.
/// `FUSED` uses fused multiply-add: only where the CPU has it, elsewhere `mul_add` is a slow
/// library call.
#[inline(always)]
fn affine<const FUSED: bool>(weights: &[f32], vector: &[f32], bias: &[f32], out: &mut [f32]) {
    let width = out.len();
    for (block_index, (block, block_bias)) in out
        .chunks_mut(OUTPUT_BLOCK)
        .zip(bias.chunks(OUTPUT_BLOCK))
        .enumerate()
    {
        let start = block_index * OUTPUT_BLOCK;
        if block.len() == OUTPUT_BLOCK {
            let mut sums = [0.0f32; OUTPUT_BLOCK];
            sums.copy_from_slice(block_bias);
            for (input, &scale) in vector.iter().enumerate() {
                let row = &weights[input * width + start..][..OUTPUT_BLOCK];
                for (sum, &weight) in sums.iter_mut().zip(row) {
                    *sum = multiply_add::<FUSED>(weight, scale, *sum);
                }
            }
            block.copy_from_slice(&sums);
        } else {
            block.copy_from_slice(block_bias);
            for (input, &scale) in vector.iter().enumerate() {
                let row = &weights[input * width + start..][..block.len()];
                for (sum, &weight) in block.iter_mut().zip(row) {
                    *sum = multiply_add::<FUSED>(weight, scale, *sum);
                }
            }
        }
    }
}

#[inline(always)]
fn multiply_add<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED {
        a.mul_add(b, c)
    } else {
        c + a * b
    }
}

/// `e^x` to about one part in 10^7 (Cephes' single-precision polynomial), without branches so
/// that the gate loops vectorise; libm's `expf` is a call per value.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    2.0 * sigmoid(2.0 * x) - 1.0
}

/// `[rows, columns]` row-major to `[columns, rows]`.
fn transposed(matrix: &[f32], rows: usize, columns: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; matrix.len()];
    for row in 0..rows {
        for column in 0..columns {
            out[column * rows + row] = matrix[row * columns + column];
        }
    }
    out
}

impl GruKernel {
    /// From the model's variables: `item_embedding.weight`, `encoder.gru.{weight,bias}_{ih,hh}_l0`
    /// and `encoder.projection.{weight,bias}`.
    pub fn from_variables(
        variables: &HashMap<String, Tensor>,
        dim: usize,
        max_len: usize,
    ) -> Result<GruKernel, String> {
        let get = |name: &str, expected_len: Option<usize>| -> Result<Vec<f32>, String> {
            let tensor = variables
                .get(name)
                .ok_or_else(|| format!("the GRU kernel needs variable {name}"))?;
            let values = Vec::<f32>::try_from(
                tensor
                    .detach()
                    .to_kind(tch::Kind::Float)
                    .contiguous()
                    .view([-1]),
            )
            .map_err(|error| format!("{name}: {error}"))?;
            match expected_len {
                Some(expected) if values.len() != expected => Err(format!(
                    "{name} has {} values, a one-layer GRU of {dim} dims has {expected}",
                    values.len()
                )),
                _ => Ok(values),
            }
        };
        let gates = 3 * dim;
        let item_table = get("item_embedding.weight", None)?;
        if item_table.len() % dim != 0 {
            return Err(format!("item_embedding.weight is not [items, {dim}]"));
        }
        // The padded states below are computed once from a zero input; a bundle whose padding row
        // is not zero would get different queries here than from libtorch.
        if item_table[..dim].iter().any(|value| *value != 0.0) {
            return Err(
                "row 0 of item_embedding.weight (the padding item) is not zero, which the GRU \
                 kernel assumes"
                    .to_owned(),
            );
        }
        let mut kernel = GruKernel {
            dim,
            max_len,
            input_gate_table: None,
            input_weights: transposed(
                &get("encoder.gru.weight_ih_l0", Some(gates * dim))?,
                gates,
                dim,
            ),
            hidden_weights: transposed(
                &get("encoder.gru.weight_hh_l0", Some(gates * dim))?,
                gates,
                dim,
            ),
            input_bias: get("encoder.gru.bias_ih_l0", Some(gates))?,
            hidden_bias: get("encoder.gru.bias_hh_l0", Some(gates))?,
            projection_weights: transposed(
                &get("encoder.projection.weight", Some(dim * dim))?,
                dim,
                dim,
            ),
            projection_bias: get("encoder.projection.bias", Some(dim))?,
            use_avx2_fma: avx2_fma_available(),
            padded_states: Vec::new(),
            item_table,
        };
        let items = kernel.item_table.len() / dim;
        if items * gates * std::mem::size_of::<f32>() <= MAX_INPUT_GATE_TABLE_BYTES {
            // One matrix product for the whole catalogue (milliseconds, where a loop of
            // matrix-vector products over 100k items would add seconds to start-up).
            let float = |name: &str| variables[name].detach().to_kind(tch::Kind::Float);
            let table = tch::no_grad(|| {
                float("item_embedding.weight").matmul(&float("encoder.gru.weight_ih_l0").tr())
                    + float("encoder.gru.bias_ih_l0")
            });
            kernel.input_gate_table = Some(
                Vec::<f32>::try_from(table.contiguous().view([-1]))
                    .map_err(|error| format!("input gate table: {error}"))?,
            );
        }
        // A padding input is the zero vector: its input gates are the input bias alone.
        let padding_gates = kernel.input_bias.clone();
        let mut hidden_gates = vec![0.0f32; gates];
        let mut state = vec![0.0f32; dim];
        kernel.padded_states.push(state.clone());
        for _ in 0..max_len {
            let mut next = vec![0.0f32; dim];
            step::<false>(
                &kernel,
                &padding_gates,
                &state,
                &mut hidden_gates,
                &mut next,
            );
            state = next;
            kernel.padded_states.push(state.clone());
        }
        Ok(kernel)
    }

    /// The query of one sequence of model indices (most recent last; the last `max_len` count).
    pub fn encode(&self, item_indices: &[i64]) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if self.use_avx2_fma {
            return encode_avx2_fma(self, item_indices);
        }
        encode::<false>(self, item_indices)
    }
}

fn avx2_fma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return true;
    }
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
unsafe fn encode_avx2_fma_unchecked(kernel: &GruKernel, item_indices: &[i64]) -> Vec<f32> {
    encode::<true>(kernel, item_indices)
}

/// The same code compiled for AVX2 and FMA (most x86 servers since 2013): about three times the
/// portable build's speed.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn encode_avx2_fma(kernel: &GruKernel, item_indices: &[i64]) -> Vec<f32> {
    // SAFETY: called only when `use_avx2_fma`, which is set only after the CPU reported AVX2 and
    // FMA, the features the callee is compiled for; the callee itself is safe code.
    unsafe { encode_avx2_fma_unchecked(kernel, item_indices) }
}

#[inline(always)]
fn input_gates<const FUSED: bool>(kernel: &GruKernel, item: usize, out: &mut [f32]) {
    let embedding = &kernel.item_table[item * kernel.dim..(item + 1) * kernel.dim];
    affine::<FUSED>(&kernel.input_weights, embedding, &kernel.input_bias, out);
}

/// One step from the input gates (`W_ih x + b_ih`) and the state, into `next`.
#[inline(always)]
fn step<const FUSED: bool>(
    kernel: &GruKernel,
    input_gates: &[f32],
    state: &[f32],
    hidden_gates: &mut [f32],
    next: &mut [f32],
) {
    let dim = kernel.dim;
    affine::<FUSED>(
        &kernel.hidden_weights,
        state,
        &kernel.hidden_bias,
        hidden_gates,
    );
    let (input_reset, rest) = input_gates.split_at(dim);
    let (input_update, input_new) = rest.split_at(dim);
    let (hidden_reset, rest) = hidden_gates.split_at(dim);
    let (hidden_update, hidden_new) = rest.split_at(dim);
    for unit in 0..dim {
        let reset = sigmoid(input_reset[unit] + hidden_reset[unit]);
        let update = sigmoid(input_update[unit] + hidden_update[unit]);
        let new = tanh(input_new[unit] + reset * hidden_new[unit]);
        next[unit] = (1.0 - update) * new + update * state[unit];
    }
}

#[inline(always)]
fn encode<const FUSED: bool>(kernel: &GruKernel, item_indices: &[i64]) -> Vec<f32> {
    let dim = kernel.dim;
    let gates = 3 * dim;
    let recent = &item_indices[item_indices.len().saturating_sub(kernel.max_len)..];
    let mut state = kernel.padded_states[kernel.max_len - recent.len()].clone();
    let mut next = vec![0.0f32; dim];
    let mut computed_gates = vec![0.0f32; gates];
    let mut hidden_gates = vec![0.0f32; gates];
    for &index in recent {
        let item = index as usize;
        let item_gates = match &kernel.input_gate_table {
            Some(table) => &table[item * gates..(item + 1) * gates],
            None => {
                input_gates::<FUSED>(kernel, item, &mut computed_gates);
                &computed_gates
            }
        };
        step::<FUSED>(kernel, item_gates, &state, &mut hidden_gates, &mut next);
        std::mem::swap(&mut state, &mut next);
    }
    let mut query = vec![0.0f32; dim];
    affine::<FUSED>(
        &kernel.projection_weights,
        &state,
        &kernel.projection_bias,
        &mut query,
    );
    query
}

impl SingleSequenceEncoder for GruKernel {
    fn encode(&self, item_indices: &[i64]) -> Vec<f32> {
        GruKernel::encode(self, item_indices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::SequenceEncoder;
    use crate::model::{left_padded_batch, EncoderKind, ModelConfig, SequenceModel};

    fn model(num_items: i64) -> SequenceModel {
        tch::manual_seed(11);
        SequenceModel::new(ModelConfig {
            encoder: EncoderKind::Gru,
            num_items,
            embedding_dim: 24,
            max_len: 8,
            num_layers: 1,
            num_heads: 1,
            dropout: 0.0,
        })
    }

    fn assert_kernel_equals_libtorch(kernel: &GruKernel, model: &SequenceModel) {
        for sequence in [
            vec![5i64],
            vec![3, 9, 27],
            vec![1, 2, 3, 4, 5, 6, 7, 8],
            vec![30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20],
        ] {
            let expected: Vec<f32> = Vec::try_from(
                model
                    .encode(&left_padded_batch(&[&sequence], 8))
                    .unwrap()
                    .view([-1]),
            )
            .unwrap();
            let fast = kernel.encode(&sequence);
            assert_eq!(fast.len(), expected.len());
            for (fast, expected) in fast.iter().zip(&expected) {
                assert!(
                    (fast - expected).abs() < 1e-5,
                    "{sequence:?}: {fast} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn the_kernel_equals_libtorch_on_the_padded_sequence() {
        let model = model(30);
        let kernel = GruKernel::from_variables(&model.var_store().variables(), 24, 8).unwrap();
        assert!(kernel.input_gate_table.is_some());
        assert_kernel_equals_libtorch(&kernel, &model);

        // Without the input-gate table (large catalogues) and without AVX2: the same answers.
        let mut kernel = kernel;
        kernel.input_gate_table = None;
        assert_kernel_equals_libtorch(&kernel, &model);
        kernel.use_avx2_fma = false;
        assert_kernel_equals_libtorch(&kernel, &model);
    }

    #[test]
    fn the_polynomial_exp_is_accurate() {
        for step in -400..=400 {
            let x = step as f32 * 0.05;
            let relative = (exp(x) - x.exp()).abs() / x.exp();
            assert!(relative < 1e-6, "exp({x}): {} vs {}", exp(x), x.exp());
            assert!((tanh(x) - x.tanh()).abs() < 1e-6, "tanh({x})");
        }
        assert!(sigmoid(-1000.0) < 1e-30);
        assert_eq!(sigmoid(1000.0), 1.0);
    }

    #[test]
    fn a_padding_row_that_is_not_zero_is_refused() {
        let model = model(30);
        let mut variables = model.var_store().variables();
        let table = variables["item_embedding.weight"].detach().copy();
        let _ = tch::no_grad(|| table.get(0).fill_(0.5));
        variables.insert("item_embedding.weight".to_owned(), table);
        let error = GruKernel::from_variables(&variables, 24, 8).err().unwrap();
        assert!(error.contains("padding item"), "{error}");
    }

    #[test]
    fn missing_or_misshapen_weights_are_named() {
        let model = model(30);
        let mut variables = model.var_store().variables();
        variables.remove("encoder.gru.bias_hh_l0");
        let error = GruKernel::from_variables(&variables, 24, 8).err().unwrap();
        assert!(error.contains("encoder.gru.bias_hh_l0"), "{error}");
        let error = GruKernel::from_variables(&model.var_store().variables(), 12, 8)
            .err()
            .unwrap();
        assert!(error.contains("one-layer GRU of 12 dims"), "{error}");
    }
}
