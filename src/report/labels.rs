//! Words for the columns of a study: what each metric or measure is called in a caption or on
//! an axis, its unit, and one sentence saying what it measures.
//!
//! Column names (`top100_intersection`, `center_shift_px`, `region_mass_after`) are exact but
//! not what a reader of a figure should have to decode. Every report (page, plots, terminal)
//! names a column through [`describe`], so one column reads the same everywhere. An unknown
//! column (a future metric) falls back to its own name, so nothing fails for want of words.

/// A column described in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// Short name for an axis or a table header, e.g. "top-100 intersection".
    pub name: String,
    /// The unit, e.g. "px", "fraction of the 100 pixels"; empty for a pure number.
    pub unit: String,
    /// One sentence: what the value is.
    pub meaning: String,
}

impl Described {
    /// The axis label: the name, with the unit in brackets when there is one.
    pub fn axis(&self) -> String {
        if self.unit.is_empty() {
            self.name.clone()
        } else {
            format!("{} ({})", self.name, self.unit)
        }
    }
}

/// An L∞ budget as a reader writes it: `0.05` stays `0.05`, but 8/255 (the ImageNet papers'
/// budget, 0.03137254901960784 as a float) reads `8/255`. A budget with at most four
/// significant decimals is shown as a decimal; otherwise a whole number of 255ths as that
/// fraction; otherwise four significant digits.
pub fn epsilon(e: f64) -> String {
    let short = e.to_string();
    let significant = short.trim_start_matches(['-', '0', '.']).chars().filter(char::is_ascii_digit).count();
    if significant <= 4 || !e.is_finite() {
        return short;
    }
    let k = (e * 255.0).round();
    if k >= 1.0 && (k / 255.0 - e).abs() <= 1e-12 * e.abs().max(1e-300) {
        return format!("{k:.0}/255");
    }
    format!("{e:.3e}").parse::<f64>().map_or(short, |v| v.to_string())
}

/// A share as a percentage: whole percents, one decimal below 10% (`0.912` → `91%`,
/// `0.042` → `4.2%`).
pub fn percent(share: f64) -> String {
    let p = 100.0 * share;
    if p >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// The k of a `top{k}_intersection` column.
pub fn top_k_of(column: &str) -> Option<usize> {
    column.strip_prefix("top")?.strip_suffix("_intersection")?.parse().ok()
}

/// Describes `column` (a metric, a `<measure>_before` / `<measure>_after` column or a
/// robustness estimate of `samples.parquet`).
pub fn describe(column: &str) -> Described {
    let d = |name: &str, unit: &str, meaning: &str| Described {
        name: name.to_string(),
        unit: unit.to_string(),
        meaning: meaning.to_string(),
    };
    if let Some(k) = top_k_of(column) {
        return Described {
            name: format!("top-{k} intersection"),
            unit: "fraction".into(),
            meaning: format!(
                "the fraction of the clean map's {k} most salient pixels that are still among the \
                 perturbed map's {k} most salient"
            ),
        };
    }
    let (stem, when) = match column.rsplit_once('_') {
        Some((stem, w @ ("before" | "after"))) => (stem, Some(w)),
        _ => (column, None),
    };
    let mut out = match stem {
        "spearman" => d("Spearman rank correlation", "", "the rank correlation of the clean and perturbed maps' pixels"),
        "kendall" => d("Kendall τ-b", "", "Kendall's rank correlation (τ-b) of the clean and perturbed maps' pixels"),
        "pearson" => d("Pearson correlation", "", "the linear correlation of the clean and perturbed maps' pixels"),
        "cosine" => d("cosine similarity", "", "the cosine of the angle between the clean and perturbed maps"),
        "ssim" => d("SSIM", "", "the structural similarity index of the clean and perturbed maps"),
        "center_shift_px" => d(
            "center-of-mass shift",
            "px",
            "the distance between the clean and perturbed maps' centers of mass, in pixels",
        ),
        "mse_normalized" => d(
            "MSE of normalised maps",
            "",
            "the mean squared difference of the two maps, each normalised to sum 1",
        ),
        "topk_mass" => d(
            "mass on the clean top-k pixels",
            "fraction",
            "the share of the (normalised) map on the clean map's top-k pixels (the top_k attack's objective)",
        ),
        "center_distance_px" => d(
            "distance of the center of mass",
            "px",
            "how far the map's center of mass lies from the clean map's (the mass_center attack's objective)",
        ),
        "region_mass" => d(
            "mass in the target region",
            "fraction",
            "the share of the (normalised) map inside the targeted region (the targeted attack's objective)",
        ),
        "target_mse" => d(
            "MSE to the target map",
            "",
            "the mean squared difference of the map to the manipulate attack's target map",
        ),
        "max_sensitivity" => d("max-sensitivity", "", "the largest change of the map under small uniform noise"),
        "avg_sensitivity" => d("avg-sensitivity", "", "the mean change of the map under small uniform noise"),
        "local_lipschitz" => d("local Lipschitz estimate", "", "the largest ratio of map change to input change"),
        "relative_input_stability" => {
            d("relative input stability", "", "the largest relative map change per relative input change")
        }
        other => d(other, "", other),
    };
    // The `_after` value is the measure itself; `_before` is its value on the clean map.
    if when == Some("before") {
        out.name = format!("{} (clean)", out.name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_read_as_decimals_or_255ths() {
        assert_eq!(epsilon(0.05), "0.05");
        assert_eq!(epsilon(0.1), "0.1");
        assert_eq!(epsilon(0.2), "0.2");
        assert_eq!(epsilon(8.0 / 255.0), "8/255");
        assert_eq!(epsilon(1.0 / 255.0), "1/255");
        assert_eq!(epsilon(0.0), "0");
        // 1/3 is 85/255; a budget that is no whole number of 255ths gets four digits.
        assert_eq!(epsilon(1.0 / 3.0), "85/255");
        assert_eq!(epsilon(0.123456), "0.1235");
    }

    #[test]
    fn columns_read_in_words_with_units() {
        assert_eq!(describe("top100_intersection").axis(), "top-100 intersection (fraction)");
        assert_eq!(describe("center_shift_px").axis(), "center-of-mass shift (px)");
        assert_eq!(describe("spearman").axis(), "Spearman rank correlation");
        assert_eq!(describe("region_mass_after").axis(), "mass in the target region (fraction)");
        assert_eq!(describe("topk_mass_before").name, "mass on the clean top-k pixels (clean)");
        assert!(describe("top7_intersection").meaning.contains("7 most salient"));
        // Unknown columns keep their own name.
        assert_eq!(describe("new_metric").axis(), "new_metric");
    }

    #[test]
    fn k_is_read_from_the_column() {
        assert_eq!(top_k_of("top522_intersection"), Some(522));
        assert_eq!(top_k_of("topk_mass_after"), None);
        assert_eq!(top_k_of("spearman"), None);
    }
}
