//! `fragility train`'s loop on the shipped subset.

use crate::common::*;
use candle_core::Device;
use fragility::train::{fit, TrainConfig};

#[test]
fn a_few_adam_steps_on_the_shipped_images_lower_the_loss() {
    // 40 steps of 25 images (one pass over the shipped 1,000): the mean loss of the last 10
    // steps must be well below that of the first 10 (≈ ln 10 = 2.30 at initialisation).
    let set = shipped_images();
    let cfg = TrainConfig {
        seed: 3,
        data_dir: root(),
        epochs: 1,
        batch_size: 25,
        learning_rate: 2e-3,
        out: root().join("unused.safetensors"),
        device: "cpu".into(),
    };
    let (_, losses) = fit(&cfg, &set, &Device::Cpu, Some(40), false).unwrap();
    assert_eq!(losses.len(), 40);
    let first = losses[..10].iter().sum::<f32>() / 10.0;
    let last = losses[30..].iter().sum::<f32>() / 10.0;
    assert!((first - 2.30).abs() < 0.3, "initial loss {first}");
    assert!(last < 0.75 * first, "loss did not fall: {first} → {last}");
    // Same seed, same losses.
    let (_, again) = fit(&cfg, &set, &Device::Cpu, Some(5), false).unwrap();
    assert_eq!(&again[..], &losses[..5]);
}
