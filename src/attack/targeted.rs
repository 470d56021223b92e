//! `targeted`: the targeted attack of Ghorbani, Abid and Zou (AAAI 2019).
//!
//! Maximises the attacked map's normalised mass inside a target region R,
//! M(x′) = Σ_{i ∈ R} s_i(x′); the loss is −M. The region is the same for every image: a
//! rectangle in pixels or a mask file (see [`Region`]). Iterates are ranked on the real model
//! by −M; the reported measure, `region_mass`, is M in [0, 1] before and after the attack
//! (higher: the map moved more into the region). Shapes: maps [n,H·W], region [H·W].

use super::objective::{Goal, Objective, PrepareContext};
use crate::error::{Error, Result};
use crate::metric::Direction;
use candle_core::Tensor;

/// The target region, as given in the config.
#[derive(Debug, Clone, PartialEq)]
pub enum Region {
    /// Columns `x0..x1` and rows `y0..y1` (end-exclusive), in pixels, (0, 0) top-left.
    Rect {
        /// First column.
        x0: usize,
        /// First row.
        y0: usize,
        /// One past the last column.
        x1: usize,
        /// One past the last row.
        y1: usize,
    },
    /// A mask from a file: pixels with a value > 0.5 are inside.
    Mask {
        /// Where it came from (for messages and metadata).
        path: std::path::PathBuf,
        /// Mask values, row-major.
        data: Vec<f32>,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
}

impl Region {
    /// The region as a 0/1 mask of an `h × w` image; an error if it does not fit or is empty.
    pub fn mask(&self, h: usize, w: usize) -> Result<Vec<f32>> {
        let m: Vec<f32> = match self {
            Region::Rect { x0, y0, x1, y1 } => {
                if x0 >= x1 || y0 >= y1 || *x1 > w || *y1 > h {
                    return Err(Error::Invalid(format!(
                        "attacks.targeted: region [{x0}, {y0}, {x1}, {y1}] (x0, y0, x1, y1, end-exclusive) \
                         is empty or does not fit a {h}×{w} image"
                    )));
                }
                (0..h * w)
                    .map(|i| {
                        let (r, c) = (i / w, i % w);
                        if (*y0..*y1).contains(&r) && (*x0..*x1).contains(&c) {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect()
            }
            Region::Mask { path, data, h: mh, w: mw } => {
                if (*mh, *mw) != (h, w) {
                    return Err(Error::data(
                        path,
                        format!("mask is {mh}×{mw}, the model's input is {h}×{w}"),
                    ));
                }
                let m: Vec<f32> = data.iter().map(|&v| if v > 0.5 { 1.0 } else { 0.0 }).collect();
                if m.iter().all(|&v| v == 0.0) {
                    return Err(Error::data(path, "mask has no pixel > 0.5: the region is empty"));
                }
                m
            }
        };
        Ok(m)
    }

    fn describe(&self) -> serde_json::Value {
        match self {
            Region::Rect { x0, y0, x1, y1 } => serde_json::json!({ "rect_x0_y0_x1_y1": [x0, y0, x1, y1] }),
            Region::Mask { path, .. } => serde_json::json!({ "mask": path }),
        }
    }
}

/// The targeted objective.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetedObjective {
    /// The target region.
    pub region: Region,
}

struct RegionGoal {
    inside: Vec<usize>,
    mask: Tensor, // [H·W,1]
}

impl RegionGoal {
    fn mass(&self, map: &[f32]) -> f64 {
        self.inside.iter().map(|&i| map[i] as f64).sum()
    }
}

impl Goal for RegionGoal {
    fn loss(&self, s: &Tensor, _rows: &Tensor) -> Result<Tensor> {
        Ok(s.matmul(&self.mask.to_dtype(s.dtype())?)?.sum_all()?.neg()?)
    }

    fn rank(&self, _r: usize, map: &[f32]) -> (f64, f64) {
        (-self.mass(map), 0.0)
    }

    fn measure(&self, _r: usize, map: &[f32]) -> f64 {
        self.mass(map)
    }
}

impl Objective for TargetedObjective {
    fn name(&self) -> &'static str {
        "targeted"
    }

    fn measure_name(&self) -> &'static str {
        "region_mass"
    }

    fn measure_direction(&self) -> Direction {
        Direction::LowerIsMoreSimilar
    }

    fn prepare(&self, cx: &PrepareContext) -> Result<Box<dyn Goal>> {
        let m = self.region.mask(cx.h, cx.w)?;
        let inside = (0..m.len()).filter(|&i| m[i] > 0.0).collect();
        Ok(Box::new(RegionGoal { inside, mask: Tensor::from_vec(m, (cx.h * cx.w, 1), cx.device)? }))
    }

    fn params(&self) -> serde_json::Value {
        self.region.describe()
    }
}
