//! The run's outputs: the per-sample table, its summary and the metric-vs-ε plots.
//!
//! A run produces one row per image × attribution method × attack × ε ([`SampleRow`], written
//! to `samples.parquet` by [`write_samples`]); [`summarize`] reduces those rows to one
//! [`SummaryRow`] per method × attack × ε × metric (written to `summary.parquet` by
//! [`write_summary`]), and [`plot_metric`] draws one PNG per metric from the summary.
//! Parquet keeps the raw rows analysable with any dataframe tool; the summary and the plots
//! are what a reader looks at first. Every file is written atomically (see [`crate::atomic`]).
//!
//! - [`table`]: the sample rows and their Parquet file.
//! - [`parquet`]: the one Parquet writer (plain string types, for every reader).
//! - [`summary`]: the per-group statistics and their Parquet file.
//! - [`plot`]: the PNG charts.
//! - [`index`]: `index.html`, and [`write_derived`], which writes summary, plots and page from
//!   the sample table (shared by `run` and `report`).
//! - [`distribution`]: per-image box plots of each metric.
//! - [`headline`]: the paper's table and a few sentences, for the page and the terminal.
//! - [`models`]: the headline of a study of several models, side by side, and [`models::StudyHeadline`]
//!   (of one model or several), what a study's report holds.
//! - [`model_plot`]: the comparison charts of a study of several models, one line per model.
//! - [`caveats`]: the headline's first lines: n, a shrunken sample and its likely cause, a
//!   model that predicts one class.
//! - [`page`]: the HTML of `index.html`.
//! - [`labels`]: the columns' names in words, with units, for axes and captions.
//! - [`pairing`]: the images two runs have in common, for `compare`.
//! - [`compare`]: `fragility compare`, regression tracking between two runs.
//! - [`figure`]: the paper's figure 1 for one example image and attack (`examples/`).
//! - [`images`]: each image's source and hash, and which study wrote a table.
//! - [`heatmap`]: `explain`'s grids of images with their maps overlaid.
//! - `png`: the in-memory PNG encoder both use.

pub mod caveats;
pub mod check_plots;
pub mod checks;
pub mod compare;
pub mod distribution;
pub mod figure;
pub mod headline;
pub mod heatmap;
pub mod images;
pub mod index;
pub mod labels;
pub mod model_plot;
pub mod models;
pub mod page;
pub mod pairing;
pub mod parquet;
pub mod plot;
pub(crate) mod png;
pub mod scorecard;
pub mod summary;
pub mod table;

pub use index::{regenerate, tidy_path, write_derived, Derived};
pub use plot::plot_metric;
pub use summary::{read_summary, summarize, write_summary, SummaryRow};
pub use table::{read_samples, write_samples, SampleRow, SampleTable};
