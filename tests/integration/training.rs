//! `fragility train`'s loop on the shipped subset.

use crate::common::*;
use candle_core::Device;
use fragility::train::{fit, training_labels, TrainConfig, TrainLabels};

/// Training settings for a few steps on the shipped images (nothing is written).
fn short_training(labels: TrainLabels) -> TrainConfig {
    TrainConfig {
        seed: 3,
        data_dir: root(),
        epochs: 1,
        batch_size: 25,
        learning_rate: 2e-3,
        out: root().join("unused.safetensors"),
        device: "cpu".into(),
        labels,
    }
}

#[test]
fn a_few_adam_steps_on_the_shipped_images_lower_the_loss() {
    // 40 steps of 25 images (one pass over the shipped 1,000): the mean loss of the last 10
    // steps must be well below that of the first 10 (≈ ln 10 = 2.30 at initialisation).
    let set = shipped_images();
    let cfg = short_training(TrainLabels::Original);
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

/// `labels = "permuted"` (Adebayo et al.'s data randomisation): the same labels over other
/// images, seeded, and the loop trains on them.
#[test]
fn permuted_labels_keep_the_counts_lose_the_images_and_are_trained_on() {
    let set = shipped_images();
    let labels = set.labels.clone().unwrap();
    let permuted = training_labels(&labels, TrainLabels::Permuted, 3);
    let (mut a, mut b) = (labels.clone(), permuted.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same label counts");
    let kept = labels.iter().zip(&permuted).filter(|(x, y)| x == y).count();
    assert!(kept < 200, "{kept} of 1000 images keep their label (about 100 expected)");
    assert_eq!(training_labels(&labels, TrainLabels::Permuted, 3), permuted, "seeded");
    assert_ne!(training_labels(&labels, TrainLabels::Permuted, 4), permuted);
    assert_eq!(training_labels(&labels, TrainLabels::Original, 3), labels);
    let (_, original) =
        fit(&short_training(TrainLabels::Original), &set, &Device::Cpu, Some(3), false).unwrap();
    let (_, shuffled) =
        fit(&short_training(TrainLabels::Permuted), &set, &Device::Cpu, Some(3), false).unwrap();
    assert_ne!(original, shuffled);
    let shipped = TrainConfig::load(&root().join("configs/train_fmnist_permuted.toml")).unwrap();
    assert_eq!(shipped.labels, TrainLabels::Permuted);
    let text = "out = \"w.safetensors\"\nlabels = \"permuted\"\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.toml"), text).unwrap();
    assert_eq!(TrainConfig::load(&dir.path().join("t.toml")).unwrap().labels, TrainLabels::Permuted);
    std::fs::write(dir.path().join("t.toml"), text.replace("permuted", "shuffled")).unwrap();
    let err = TrainConfig::load(&dir.path().join("t.toml")).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("shuffled"), "{err}");
}
