//! fragility: measure how fragile the attribution maps of image classifiers are.
//!
//! Ghorbani, Abid and Zou ("Interpretation of neural networks is fragile", AAAI 2019) showed
//! that tiny perturbations that keep a classifier's label can move its saliency maps almost
//! anywhere. This crate loads a model and images, computes attribution maps, perturbs the
//! images with label-keeping attacks, recomputes the maps and scores how much they changed.
//! See the README and docs/ for the command-line tool and ../shared/DESIGN.md for the design notes.

pub mod alloc;
pub mod atomic;
pub mod data;
pub mod error;
pub mod metric;
pub mod report;

pub use error::{Error, Result};
pub mod attack;
pub mod attribution;
pub mod config;
pub mod device;
pub mod explain;
pub mod faithfulness;
pub mod fingerprint;
pub mod lock;
pub mod manifest;
pub mod model;
pub mod progress;
pub mod robustness;
pub mod run;
pub mod sanity;
pub mod seed;
pub mod selection;
pub mod train;
