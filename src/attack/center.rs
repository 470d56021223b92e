//! `mass_center`: the center attack of Ghorbani, Abid and Zou (AAAI 2019).
//!
//! Maximises the distance between the attacked map's center of mass and the clean map's,
//! ‖C(s(x′)) − C₀‖₂, C(s) = Σᵢ sᵢ·(rowᵢ, colᵢ) for the normalised map s (pixel units, (0, 0)
//! the top-left pixel's center). The loss is its negative, with the norm smoothed as
//! √(d² + 10⁻¹²) so that its gradient exists where the centers coincide. Iterates are ranked
//! on the real model by the distance; the reported measure, `center_distance_px`, is that
//! distance in pixels (0 before the attack; higher: the map moved more). Shapes: maps [n,H·W],
//! centers [n,2].

use super::objective::{Goal, Objective, PrepareContext};
use crate::error::Result;
use crate::metric::{center_of_mass, Direction};
use candle_core::Tensor;

/// The center-of-mass objective.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MassCenterObjective;

struct CenterGoal {
    h: usize,
    w: usize,
    clean: Vec<Option<(f64, f64)>>,
    coords: Tensor,  // [H·W,2]: (row, col) of each pixel
    centers: Tensor, // [R,2]
}

impl CenterGoal {
    fn distance(&self, r: usize, map: &[f32]) -> f64 {
        match (self.clean[r], center_of_mass(map, self.h, self.w)) {
            (Some((r0, c0)), Some((r1, c1))) => ((r1 - r0).powi(2) + (c1 - c0).powi(2)).sqrt(),
            _ => f64::NAN,
        }
    }
}

impl Goal for CenterGoal {
    fn loss(&self, s: &Tensor, rows: &Tensor) -> Result<Tensor> {
        let c = s.matmul(&self.coords.to_dtype(s.dtype())?)?;
        let c0 = self.centers.index_select(rows, 0)?.to_dtype(s.dtype())?;
        let d2 = c.sub(&c0)?.sqr()?.sum(1)?;
        Ok(d2.affine(1.0, 1e-12)?.sqrt()?.sum_all()?.neg()?)
    }

    fn rank(&self, r: usize, map: &[f32]) -> (f64, f64) {
        let d = self.distance(r, map);
        (if d.is_finite() { -d } else { 0.0 }, 0.0)
    }

    fn measure(&self, r: usize, map: &[f32]) -> f64 {
        self.distance(r, map)
    }
}

impl Objective for MassCenterObjective {
    fn name(&self) -> &'static str {
        "mass_center"
    }

    fn measure_name(&self) -> &'static str {
        "center_distance_px"
    }

    fn measure_direction(&self) -> Direction {
        Direction::LowerIsMoreSimilar
    }

    fn prepare(&self, cx: &PrepareContext) -> Result<Box<dyn Goal>> {
        let (h, w) = (cx.h, cx.w);
        let coords: Vec<f32> = (0..h * w).flat_map(|i| [(i / w) as f32, (i % w) as f32]).collect();
        let clean: Vec<Option<(f64, f64)>> = cx.clean.iter().map(|m| center_of_mass(m, h, w)).collect();
        // A row without a clean center (an all-zero map) gets the image center: its distance
        // is reported as undefined anyway.
        let centers: Vec<f32> = clean
            .iter()
            .flat_map(|c| {
                let (r, c) = c.unwrap_or(((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0));
                [r as f32, c as f32]
            })
            .collect();
        Ok(Box::new(CenterGoal {
            h,
            w,
            coords: Tensor::from_vec(coords, (h * w, 2), cx.device)?,
            centers: Tensor::from_vec(centers, (clean.len(), 2), cx.device)?,
            clean,
        }))
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}
