//! The model's invariants: padding, causality, the padding row, serving weights.

use super::*;

fn config(encoder: EncoderKind) -> ModelConfig {
    ModelConfig {
        encoder,
        num_items: 20,
        embedding_dim: 8,
        max_len: 6,
        num_layers: 2,
        num_heads: 2,
        dropout: 0.0,
    }
}

#[test]
fn padding_does_not_change_the_query() {
    for encoder in [EncoderKind::Sasrec, EncoderKind::Gru] {
        tch::manual_seed(3);
        let model = SequenceModel::new(config(encoder));
        let short = Tensor::from_slice(&[4i64, 9, 2]).view([1, 3]);
        let padded = Tensor::from_slice(&[0i64, 0, 0, 4, 9, 2]).view([1, 6]);
        let difference = (model.encode(&short).unwrap() - model.encode(&padded).unwrap())
            .abs()
            .max()
            .double_value(&[]);
        match encoder {
            // Masking makes self-attention blind to padding.
            EncoderKind::Sasrec => assert!(difference < 1e-5, "{encoder}: {difference}"),
            // A GRU reads the zero padding vectors; it is only approximately invariant.
            EncoderKind::Gru => assert!(difference.is_finite()),
        }
    }
}

#[test]
fn serving_weights_fold_attributes_into_the_item_table() {
    let items: Vec<dataset::data::ItemMetadata> = (1..=20)
        .map(|item| dataset::data::ItemMetadata {
            item_id: item.to_string(),
            title: String::new(),
            year: Some(1980 + item),
            genres: vec![format!("g{}", item % 3)],
        })
        .collect();
    let id_map = dataset::id_map::IdMap::from_raw_ids(
        items.iter().map(|item| item.item_id.clone()).collect(),
    )
    .unwrap();
    let features = ItemFeatures::build(
        crate::item_features::ItemFeatureSet::GenresYear,
        &items,
        &id_map,
    )
    .unwrap();
    for encoder in [EncoderKind::Sasrec, EncoderKind::Gru] {
        tch::manual_seed(11);
        let trained = SequenceModel::with_item_features(config(encoder), Some(&features));
        let served = SequenceModel::new(config(encoder));
        let weights: std::collections::HashMap<String, Tensor> =
            trained.serving_weights().into_iter().collect();
        let variables = served.var_store().variables();
        assert_eq!(
            weights.len(),
            variables.len(),
            "{encoder}: no attribute tables"
        );
        tch::no_grad(|| {
            for (name, mut variable) in variables {
                variable.copy_(&weights[&name]);
            }
        });
        let attribute_part = (trained.item_vectors() - trained.item_embedding.ws.narrow(0, 1, 20))
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            attribute_part > 1e-3,
            "{encoder}: attributes change the vectors"
        );
        let sequence = Tensor::from_slice(&[0i64, 0, 4, 9, 2, 17]).view([1, 6]);
        let difference = (trained.encode(&sequence).unwrap() - served.encode(&sequence).unwrap())
            .abs()
            .max()
            .double_value(&[])
            + (trained.item_vectors() - served.item_vectors())
                .abs()
                .max()
                .double_value(&[]);
        assert!(difference < 1e-6, "{encoder}: {difference}");
    }
}

#[test]
fn attention_is_causal_future_items_do_not_leak() {
    tch::manual_seed(5);
    let model = SequenceModel::new(config(EncoderKind::Sasrec));
    let first = Tensor::from_slice(&[0i64, 3, 7, 11, 5, 1]).view([1, 6]);
    let second = Tensor::from_slice(&[0i64, 3, 7, 11, 19, 20]).view([1, 6]);
    let hidden_first = model.hidden_states(&first, false);
    let hidden_second = model.hidden_states(&second, false);
    // Positions 0..=3 saw the same prefix, so they must be equal; position 4 differs.
    let prefix_difference = (hidden_first.narrow(1, 0, 4) - hidden_second.narrow(1, 0, 4))
        .abs()
        .max()
        .double_value(&[]);
    assert!(prefix_difference < 1e-5, "{prefix_difference}");
    let last_difference = (hidden_first.select(1, 5) - hidden_second.select(1, 5))
        .abs()
        .max()
        .double_value(&[]);
    assert!(last_difference > 1e-4);
}

#[test]
fn padding_row_is_zero_and_outputs_are_finite() {
    tch::manual_seed(1);
    let model = SequenceModel::new(config(EncoderKind::Sasrec));
    let padding_norm = model
        .embedding_table()
        .get(0)
        .abs()
        .sum(Kind::Float)
        .double_value(&[]);
    assert_eq!(padding_norm, 0.0);
    let all_padding_but_one = Tensor::from_slice(&[0i64, 0, 0, 0, 0, 3]).view([1, 6]);
    let hidden = model.hidden_states(&all_padding_but_one, false);
    assert!(bool::try_from(hidden.isfinite().all()).unwrap());
    assert_eq!(model.item_vectors().size(), [20, 8]);
}
