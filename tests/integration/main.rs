//! The one integration-test binary (ripgrep style): each module guards one part of the tool.

mod architectures;
mod attacks;
mod attention;
mod attributions;
mod beta_smooth;
mod checks;
mod cli;
mod common;
mod compare;
mod faithfulness;
mod families;
mod fuzz;
mod gradients;
mod lrp;
mod models;
mod onnx;
mod parquet;
mod reference;
mod reliability;
mod sanity;
mod sanity_similarity;
mod synthetic;
mod topk_scale;
mod torchvision;
mod training;
