//! Bounded fuzzing of every reader: idx, npy (raw and gzipped), PNG maps, safetensors,
//! Parquet sample tables and TOML configs, on seeded mutations of valid files (truncations,
//! flipped bytes, inserted bytes, random header fields) and on random bytes.
//!
//! The property: a reader never panics and never runs away; it returns the data or an error
//! that counts as bad input (exit code 2). The number of cases is fixed and the generator
//! seeded, so a failure reproduces; `FRAGILITY_FUZZ_CASES` raises the count for a longer
//! campaign (see `reports/reliability/README.md`).

use crate::cli::small_config;
use crate::common::*;
use rand::Rng;
use std::io::Write;
use std::path::Path;

/// Cases per reader and seed file (default 150).
fn cases() -> usize {
    std::env::var("FRAGILITY_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(150)
}

/// One seeded mutation of `valid`.
fn mutate(valid: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let mut b = valid.to_vec();
    match rng.random_range(0..6) {
        0 => b.truncate(rng.random_range(0..=b.len())),
        1 => {
            for _ in 0..rng.random_range(1..=8) {
                if !b.is_empty() {
                    let i = rng.random_range(0..b.len());
                    b[i] = rng.random();
                }
            }
        }
        2 => {
            let at = rng.random_range(0..=b.len());
            let extra: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
            b.splice(at..at, extra);
        }
        3 => {
            // The header is where lengths live: scribble on the first 64 bytes.
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..b.len().clamp(1, 64));
                if i < b.len() {
                    b[i] = [0x00, 0xff, 0x7f, 0x80, rng.random()][rng.random_range(0..5)];
                }
            }
        }
        4 => {
            let mut r = vec![0u8; rng.random_range(0..512)];
            rng.fill_bytes(&mut r);
            b = r;
        }
        _ => {
            // Duplicate a random slice (repeated headers, members, chunks).
            if !b.is_empty() {
                let i = rng.random_range(0..b.len());
                let j = rng.random_range(i..=b.len());
                let piece = b[i..j].to_vec();
                b.extend(piece);
            }
        }
    }
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Writes every mutation of every seed to a file and hands it to `read`, which must not
/// panic; an error must be bad input (exit 2).
fn fuzz<T>(name: &str, seeds: &[Vec<u8>], read: impl Fn(&Path) -> fragility::Result<T>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    let mut rng = fragility::seed::rng(fragility::seed::hash_str(name));
    for (s, seed) in seeds.iter().enumerate() {
        for case in 0..cases() {
            let bytes = mutate(seed, &mut rng);
            std::fs::write(&p, &bytes).unwrap();
            if let Err(e) = read(&p) {
                assert_eq!(e.exit_code(), 2, "{name}, seed {s}, case {case}: {e} is not bad input");
            }
        }
    }
}

/// Small valid files of each data format: idx images and labels, npy f32, u8 and int64.
fn data_seeds() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let mut idx_images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3];
    idx_images.extend((0..18u8).map(|i| i * 13));
    let idx_labels = vec![0, 0, 8, 1, 0, 0, 0, 2, 4, 7];
    let f32_npy = dir.path().join("f.npy");
    fragility::data::write_npy_f32(&f32_npy, &[0.25; 18], &[2, 1, 3, 3]).unwrap();
    let i64_npy = dir.path().join("l.npy");
    fragility::data::write_npy_i64(&i64_npy, &[3, 1], &[2]).unwrap();
    let f32_npy = std::fs::read(f32_npy).unwrap();
    let i64_npy = std::fs::read(i64_npy).unwrap();
    vec![gzip(&idx_images), gzip(&f32_npy), idx_images, idx_labels, f32_npy, i64_npy]
}

#[test]
fn data_readers_never_panic_on_mangled_files() {
    let seeds = data_seeds();
    fuzz("images", &seeds, fragility::data::load_images);
    fuzz("labels", &seeds, fragility::data::load_labels);
    fuzz("map", &seeds, fragility::data::load_map);
}

/// A 3×3 grey PNG and a 4×4 RGB JPEG.
fn image_seeds() -> Vec<Vec<u8>> {
    let mut png = Vec::new();
    image::GrayImage::from_fn(3, 3, |x, y| image::Luma([(x * 40 + y * 7) as u8]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageOutputFormat::Png)
        .unwrap();
    let mut jpeg = Vec::new();
    image::RgbImage::from_fn(4, 4, |x, y| image::Rgb([(x * 60) as u8, (y * 60) as u8, 128]))
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageOutputFormat::Jpeg(90))
        .unwrap();
    vec![png, jpeg]
}

#[test]
fn image_readers_never_panic_on_mangled_pictures() {
    let seeds = image_seeds();
    fuzz("map.png", &seeds, fragility::data::load_map);
    // A folder of one picture: the folder reader decodes it.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("images");
    std::fs::create_dir(&folder).unwrap();
    let mut rng = fragility::seed::rng(fragility::seed::hash_str("folder"));
    for (s, seed) in seeds.iter().enumerate() {
        for case in 0..cases() {
            std::fs::write(folder.join("a.png"), mutate(seed, &mut rng)).unwrap();
            if let Err(e) = fragility::data::load_images(&folder) {
                assert_eq!(e.exit_code(), 2, "folder, seed {s}, case {case}: {e} is not bad input");
            }
        }
    }
}

#[test]
fn safetensors_reader_never_panics_on_mangled_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    let dev = candle_core::Device::Cpu;
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = [
        ("a.weight".to_string(), candle_core::Tensor::ones((2, 3), candle_core::DType::F32, &dev).unwrap()),
        ("a.bias".to_string(), candle_core::Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap()),
    ]
    .into();
    candle_core::safetensors::save(&tensors, &p).unwrap();
    let seeds = vec![std::fs::read(&p).unwrap()];
    fuzz("w.safetensors", &seeds, |p| fragility::model::weights::Weights::load(p, &dev));
}

#[test]
fn sample_table_reader_never_panics_on_mangled_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.parquet");
    let row = |i: u32| fragility::report::SampleRow {
        model: String::new(),
        image_id: i,
        label: 1,
        predicted: 1,
        method: "gradient".into(),
        attack: "top_k".into(),
        target_method: Some("gradient".into()),
        epsilon: 0.1,
        label_kept: true,
        iterations: 3,
        linf: 0.1,
        confidence_before: 0.9,
        confidence_after: 0.8,
        metrics: vec![Some(0.5), None],
    };
    let table = fragility::report::SampleTable {
        model_metrics: Vec::new(),
        metric_columns: vec!["spearman".into(), "center_shift_px".into()],
        directions: vec![
            fragility::metric::Direction::HigherIsMoreSimilar,
            fragility::metric::Direction::LowerIsMoreSimilar,
        ],
        rows: (0..5).map(row).collect(),
        seed: 7,
        images: Default::default(),
        study: None,
    };
    fragility::report::write_samples(&p, &table).unwrap();
    let seeds = vec![std::fs::read(&p).unwrap()];
    fuzz("samples.parquet", &seeds, fragility::report::read_samples);
}

#[test]
fn config_parser_never_panics_on_mangled_text() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let seeds = vec![std::fs::read(&p).unwrap()];
    fuzz("exp.toml", &seeds, fragility::config::Plan::load);
}

/// One seeded semantic mutation of a decoded ONNX model: an attribute or a constant set to a
/// hostile value (NaN, ∞, a subnormal, 0, negative, huge, emptied), or a value name reused.
fn mutate_onnx(m: &mut fragility::model::onnx::proto::Model, rng: &mut impl Rng) {
    const INTS: [i64; 9] = [0, -1, 1, 2, 3, 1 << 20, 1 << 40, i64::MAX, i64::MIN];
    const FLOATS: [f32; 7] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-45, 0.0, -1.0, 3.4e38];
    let g = &mut m.graph;
    match rng.random_range(0..5) {
        0 if !g.nodes.is_empty() => {
            // An integer attribute (pads, strides, dilations, kernel_shape, axis, group...).
            let n = rng.random_range(0..g.nodes.len());
            let names = ["pads", "strides", "dilations", "kernel_shape", "axis", "group", "ceil_mode"];
            let name = names[rng.random_range(0..names.len())];
            let len = [1, 2, 4][rng.random_range(0..3)];
            let ints: Vec<i64> = (0..len).map(|_| INTS[rng.random_range(0..INTS.len())]).collect();
            let node = &mut g.nodes[n];
            node.attributes.retain(|a| a.name != name);
            let i = (len == 1).then(|| ints[0]);
            node.attributes.push(fragility::model::onnx::proto::Attribute {
                name: name.into(),
                i,
                ints: if len == 1 { vec![] } else { ints },
                ..Default::default()
            });
        }
        1 if !g.nodes.is_empty() => {
            // A float attribute (alpha, epsilon, min, max).
            let n = rng.random_range(0..g.nodes.len());
            let name = ["alpha", "epsilon", "beta"][rng.random_range(0..3)];
            let node = &mut g.nodes[n];
            node.attributes.retain(|a| a.name != name);
            let f = Some(FLOATS[rng.random_range(0..FLOATS.len())]);
            node.attributes.push(fragility::model::onnx::proto::Attribute {
                name: name.into(),
                f,
                ..Default::default()
            });
        }
        2 if !g.initializers.is_empty() => {
            // A constant: one value made hostile, or emptied, or made a scalar.
            let t = rng.random_range(0..g.initializers.len());
            let t = &mut g.initializers[t];
            match rng.random_range(0..3) {
                0 if t.raw.len() >= 4 && t.data_type == 1 => {
                    let i = rng.random_range(0..t.raw.len() / 4) * 4;
                    t.raw[i..i + 4].copy_from_slice(&FLOATS[rng.random_range(0..FLOATS.len())].to_le_bytes());
                }
                1 => {
                    t.dims = vec![0];
                    t.raw.clear();
                }
                _ => {
                    t.dims.clear();
                    t.raw.truncate(if t.data_type == 7 { 8 } else { 4 });
                }
            }
        }
        3 if g.nodes.len() >= 2 => {
            // A value name defined twice (or the input's redefined).
            let (a, b) = (rng.random_range(0..g.nodes.len()), rng.random_range(0..g.nodes.len()));
            let name =
                if rng.random_bool(0.3) { g.inputs[0].name.clone() } else { g.nodes[a].outputs[0].clone() };
            g.nodes[b].outputs[0] = name;
        }
        _ => {
            // The input's declared size: 1×1, or huge.
            let d = [1, 1 << 16, i64::MAX][rng.random_range(0..3)];
            let dims = &mut g.inputs[0].dims;
            if dims.len() == 4 {
                dims[2] = Some(d);
                dims[3] = Some(d);
            }
        }
    }
}

/// The importer on semantically mutated models (the decoder's byte-level fuzzing is in
/// onnx.rs): it never panics, and what it accepts has finite parameters and shapes within the
/// bound every pass allocates for.
#[test]
fn onnx_importer_never_panics_or_accepts_nonsense_on_mutated_graphs() {
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let mut rng = fragility::seed::rng(fragility::seed::hash_str("onnx semantic"));
    let (mut accepted, mut refused) = (0, 0);
    for file in ["ops_opset13.onnx", "ops_opset9.onnx", "pad_conv.onnx", "view_flatten.onnx"] {
        let bytes = std::fs::read(fixtures.join(file)).unwrap();
        let valid = fragility::model::onnx::proto::decode_model(&bytes).unwrap();
        for case in 0..cases() {
            let mut m = valid.clone();
            for _ in 0..rng.random_range(1..=3) {
                mutate_onnx(&mut m, &mut rng);
            }
            match fragility::model::onnx::import(&m, None) {
                Err(_) => refused += 1,
                Ok(imported) => {
                    accepted += 1;
                    imported.graph.check_finite().unwrap_or_else(|e| panic!("{file}, case {case}: {e}"));
                    let shapes = imported.graph.shapes(imported.hw).unwrap();
                    assert!(
                        shapes.iter().all(|s| s
                            .checked_len()
                            .is_some_and(|n| n <= fragility::model::graph::MAX_NODE_VALUES)),
                        "{file}, case {case}: {shapes:?}"
                    );
                }
            }
        }
    }
    eprintln!("ONNX semantic mutations: {accepted} accepted, {refused} refused");
    assert!(refused > 0 && accepted > 0, "{accepted} accepted, {refused} refused");
}

#[test]
fn image_headers_declaring_random_sizes_are_refused_before_decoding() {
    // PNG and JPEG headers with random declared sizes and no pixel data: every case is bad
    // input, and one declaring more than the per-image limit says so, before any decoding.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("images");
    std::fs::create_dir(&folder).unwrap();
    let mut rng = fragility::seed::rng(fragility::seed::hash_str("image headers"));
    for case in 0..cases() {
        let (w, h) =
            (rng.random::<u32>() >> rng.random_range(0..28), rng.random::<u32>() >> rng.random_range(0..28));
        // libjpeg refuses sides over 65500 itself, before the header is complete.
        let (jw, jh) = (((w >> 16) as u16 | 1).min(65_500), ((h >> 16) as u16 | 1).min(65_500));
        for (file, bytes, values) in [
            ("a.png", crate::reliability::png_bomb(w, h), u64::from(w) * u64::from(h) * 3),
            ("a.jpg", crate::reliability::jpeg_bomb(jw, jh), u64::from(jw) * u64::from(jh) * 3),
        ] {
            std::fs::write(folder.join(file), bytes).unwrap();
            let err = fragility::data::load_images(&folder).unwrap_err();
            assert_eq!(err.exit_code(), 2, "case {case}, {file} {w}×{h}: {err} is not bad input");
            if values > fragility::data::MAX_IMAGE_VALUES {
                assert!(err.to_string().contains("header declares"), "case {case}, {file}: {err}");
            }
            std::fs::remove_file(folder.join(file)).unwrap();
        }
    }
}
