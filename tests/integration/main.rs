//! The one integration-test binary (ripgrep style): each module guards one part of the tool.

mod common;
mod gradients;
