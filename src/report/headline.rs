//! The headline of a study: the paper's table and a few sentences that say what it shows.
//!
//! The summary has a row per method × attack × ε × metric (320 for the default study): right
//! for analysis, useless at a glance. Ghorbani et al. report three similarity measures (top-k
//! intersection, Spearman rank correlation, center-of-mass shift) per method and attack at
//! each budget, the steered attack against random noise of the same size. [`Headline::build`]
//! extracts exactly that from the summary, once, and both the terminal ([`Headline::text`])
//! and the page ([`Headline::html`]) render the same data, so they cannot disagree.
//!
//! Rows: per method, its random baselines then its steered attacks; a steered attack on its
//! own target method (the map the attack steers) is marked ★, every other row is transfer.
//! A study with many methods and targets (14 × 7 in `ghorbani2019`) would make a headline of
//! a hundred rows; beyond [`MAX_ROWS`] only the attacked methods are kept (their random
//! baselines and the attacks on them), and the page says how many rows were left to the
//! summary table. Cells are means over the label-kept images with their 95% bootstrap interval.

use super::index::escape;
use super::labels::{describe, epsilon, top_k_of};
use super::summary::{SummaryRow, SAMPLING};
use crate::metric::Direction;
use std::fmt::Write as _;

/// Most rows of a headline before it keeps only the attacked methods.
pub const MAX_ROWS: usize = 24;

/// Most steered attacks compared with random noise one sentence each; more share one sentence.
pub const MAX_COMPARISONS: usize = 3;

/// Marks the row of a steered attack on its own target method.
pub const ATTACKED_MARK: &str = "★";

/// The clause a comparison ends with when the two intervals are disjoint.
pub(crate) const NO_OVERLAP: &str = "; the intervals do not overlap";

/// The clause a comparison ends with when the two intervals overlap.
pub(crate) const OVERLAP: &str = "; the intervals overlap";

/// Appended to a steered attack on another method's map (a transfer).
pub const TRANSFER_MARK: &str = "(transfer)";

/// A mean with its 95% bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Mean over the label-kept images.
    pub mean: f64,
    /// Lower end of the interval.
    pub low: Option<f64>,
    /// Upper end of the interval.
    pub high: Option<f64>,
}

impl Estimate {
    /// `0.734 [0.701, 0.765]`.
    pub fn show(&self) -> String {
        match (self.low, self.high) {
            (Some(l), Some(h)) => format!("{} [{}, {}]", num(self.mean), num(l), num(h)),
            _ => num(self.mean),
        }
    }
}

/// A number at headline precision: three decimals below 10, scientific below 10⁻³.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if a < 1e-3 {
        format!("{v:.2e}")
    } else if a < 10.0 {
        format!("{v:.3}")
    } else if a < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// One method under one attack.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadlineRow {
    /// The attribution method.
    pub method: String,
    /// The attack as tables name it (`top_k → gradient`).
    pub attack: String,
    /// The attack steers a map (it is not a random baseline).
    pub steered: bool,
    /// The attack steers this very method's map.
    pub attacked: bool,
    /// `values[m][e]`: metric m at ε e, `None` where the summary has no mean.
    pub values: Vec<Vec<Option<Estimate>>>,
}

impl HeadlineRow {
    /// What the attack cell adds to the attack's name: ★ on the attacked map, `(transfer)`
    /// where the attack steered another method's map.
    pub(crate) fn mark(&self) -> String {
        if self.attacked {
            format!(" {ATTACKED_MARK}")
        } else if self.steered {
            format!(" {TRANSFER_MARK}")
        } else {
            String::new()
        }
    }
}

/// Names the methods that no attack steered (measured only under transfer), which the
/// ranking sentence leaves out; `None` when every measured method was attacked directly.
fn transfer_sentence(all: &[HeadlineRow]) -> Option<String> {
    let mut only: Vec<&str> = Vec::new();
    for r in all.iter().filter(|r| r.steered && !r.attacked) {
        if !all.iter().any(|a| a.attacked && a.method == r.method) && !only.contains(&r.method.as_str()) {
            only.push(&r.method);
        }
    }
    let list = match only.as_slice() {
        [] => return None,
        [one] => format!("{one} was"),
        [init @ .., last] => format!("{} and {last} were", init.join(", ")),
    };
    Some(format!(
        "{list} measured only by transfer (under attacks that steer another method's map, marked \
         {TRANSFER_MARK}), so not ranked against the attacked methods: a transfer is a weaker \
         attack, and a method no attack targets looks more robust than it is."
    ))
}

/// Whether `caveats` say that the bootstrap intervals are unreliable.
pub(crate) fn unreliable(caveats: &[String]) -> bool {
    caveats.iter().any(|c| c.contains(super::caveats::UNRELIABLE))
}

/// Removes the claims about overlapping intervals from `sentences` (when the intervals are
/// unreliable).
pub(crate) fn withdraw_interval_claims(sentences: &mut [String]) {
    for s in sentences {
        *s = s.replace(NO_OVERLAP, "").replace(OVERLAP, "");
    }
}

/// The clause on whether the intervals of `a` and `b` overlap; empty where either has none.
pub(crate) fn overlap_clause(a: &Estimate, b: &Estimate) -> &'static str {
    match (a.low, a.high, b.low, b.high) {
        (Some(al), Some(ah), Some(bl), Some(bh)) if ah < bl || bh < al => NO_OVERLAP,
        (Some(_), Some(_), Some(_), Some(_)) => OVERLAP,
        _ => "",
    }
}

/// The headline table and sentences of a study.
#[derive(Debug, Clone, PartialEq)]
pub struct Headline {
    /// The metric columns shown, with their directions.
    pub metrics: Vec<(String, Direction)>,
    /// The budgets, ascending.
    pub epsilons: Vec<f64>,
    /// The rows shown.
    pub rows: Vec<HeadlineRow>,
    /// Method × attack rows left out (transfer to methods no attack steers).
    pub omitted: usize,
    /// What the numbers say, in plain sentences.
    pub sentences: Vec<String>,
    /// What to know before reading the numbers (n, a shrunken sample, a one-class model:
    /// [`super::caveats`]); shown first.
    pub caveats: Vec<String>,
    /// Fragility, faithfulness and sanity side by side, where the study ran checks.
    pub scorecard: Option<super::scorecard::Scorecard>,
}

/// The headline metrics among `columns`: the paper's top-k intersection (the first k),
/// Spearman and center-of-mass shift; failing those, the first three plain metrics.
pub(crate) fn main_metrics(columns: &[(String, Direction)]) -> Vec<(String, Direction)> {
    let plain = |c: &str| {
        !c.ends_with("_before")
            && !c.ends_with("_after")
            && !crate::robustness::ROBUSTNESS_COLUMNS.contains(&c)
    };
    let find = |p: &dyn Fn(&str) -> bool| columns.iter().find(|(c, _)| p(c)).cloned();
    let picked: Vec<_> =
        [find(&|c| top_k_of(c).is_some()), find(&|c| c == "spearman"), find(&|c| c == "center_shift_px")]
            .into_iter()
            .flatten()
            .collect();
    if picked.is_empty() {
        columns.iter().filter(|(c, _)| plain(c)).take(3).cloned().collect()
    } else {
        picked
    }
}

/// Whether `a` means more similar maps than `b` under `direction`.
pub(crate) fn more_similar(direction: Direction, a: f64, b: f64) -> bool {
    match direction {
        Direction::HigherIsMoreSimilar => a > b,
        Direction::LowerIsMoreSimilar => a < b,
    }
}

impl Headline {
    /// Builds the headline of `summary`; `columns` are the study's metric columns with their
    /// directions (as in `samples.parquet`).
    pub fn build(summary: &[SummaryRow], columns: &[(String, Direction)]) -> Headline {
        let rows: Vec<&SummaryRow> = summary.iter().filter(|r| r.attack != SAMPLING).collect();
        let metrics = main_metrics(columns);
        let mut epsilons: Vec<f64> = Vec::new();
        for r in &rows {
            if !epsilons.contains(&r.epsilon) {
                epsilons.push(r.epsilon);
            }
        }
        epsilons.sort_by(f64::total_cmp);
        // (method, attack label, target) in order of first appearance; random baselines first
        // within a method (a stable sort keeps the summary's order otherwise).
        let mut keys: Vec<(String, String, Option<String>)> = Vec::new();
        for r in &rows {
            let key = (r.method.clone(), r.attack_label(), r.target_method.clone());
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let methods: Vec<String> = keys.iter().fold(Vec::new(), |mut v, k| {
            if !v.contains(&k.0) {
                v.push(k.0.clone());
            }
            v
        });
        keys.sort_by_key(|k| (methods.iter().position(|m| *m == k.0), k.2.is_some()));
        let all: Vec<HeadlineRow> = keys
            .iter()
            .map(|(method, attack, target)| HeadlineRow {
                method: method.clone(),
                attack: attack.clone(),
                steered: target.is_some(),
                attacked: target.as_deref() == Some(method.as_str()),
                values: metrics
                    .iter()
                    .map(|(metric, _)| {
                        epsilons
                            .iter()
                            .map(|e| {
                                let r = rows.iter().find(|r| {
                                    r.method == *method
                                        && r.attack_label() == *attack
                                        && r.metric == *metric
                                        && r.epsilon == *e
                                })?;
                                Some(Estimate { mean: r.mean?, low: r.ci_low, high: r.ci_high })
                            })
                            .collect()
                    })
                    .collect(),
            })
            .collect();
        let targets: Vec<&str> = keys.iter().filter_map(|k| k.2.as_deref()).collect();
        let shown: Vec<HeadlineRow> = if all.len() > MAX_ROWS && !targets.is_empty() {
            all.iter()
                .filter(|r| targets.contains(&r.method.as_str()) && (!r.steered || r.attacked))
                .cloned()
                .collect()
        } else {
            all.clone()
        };
        let mut h = Headline {
            metrics,
            epsilons,
            omitted: all.len() - shown.len(),
            rows: shown,
            sentences: vec![],
            caveats: vec![],
            scorecard: None,
        };
        h.sentences = h.sentences_for(&all, &rows);
        h
    }

    /// The headline with `caveats` shown before everything else. A caveat that the intervals
    /// are unreliable also withdraws the sentences' claims about overlapping intervals.
    pub fn with_caveats(mut self, caveats: Vec<String>) -> Headline {
        if unreliable(&caveats) {
            withdraw_interval_claims(&mut self.sentences);
        }
        self.caveats = caveats;
        self
    }

    /// The headline with `card` below its tables; the card's verdict on the least fragile
    /// method follows the sentence that ranks it, so no method is called least fragile without
    /// its sanity result beside it.
    pub fn with_scorecard(mut self, card: super::scorecard::Scorecard) -> Headline {
        let at = usize::from(!self.ranking().0.is_empty()).min(self.sentences.len());
        for (i, s) in card.sentences.iter().enumerate() {
            self.sentences.insert(at + i, s.clone());
        }
        self.scorecard = Some(card);
        self
    }

    /// Each method's least similar value at the largest budget by the first metric, over the
    /// attacks on its own map (a transfer is a weaker attack: ranking it beside direct attacks
    /// would flatter the methods nobody attacked); failing those over the steered attacks, or
    /// over every attack when none is steered. Most fragile first.
    fn ranking_of<'r>(&self, all: &'r [HeadlineRow]) -> Vec<(&'r HeadlineRow, Estimate)> {
        let (Some((_, direction)), false) = (self.metrics.first(), self.epsilons.is_empty()) else {
            return Vec::new();
        };
        let e = self.epsilons.len() - 1;
        let any_steered = all.iter().any(|r| r.steered);
        let any_attacked = all.iter().any(|r| r.attacked);
        let ranked = |r: &&HeadlineRow| if any_attacked { r.attacked } else { r.steered == any_steered };
        let mut worst: Vec<(&HeadlineRow, Estimate)> = Vec::new();
        for r in all.iter().filter(ranked) {
            let Some(v) = r.values[0][e] else { continue };
            match worst.iter_mut().find(|(w, _)| w.method == r.method) {
                Some(slot) if more_similar(*direction, slot.1.mean, v.mean) => *slot = (r, v),
                Some(_) => {}
                None => worst.push((r, v)),
            }
        }
        worst.sort_by(|a, b| {
            let (x, y) = (a.1.mean, b.1.mean);
            if more_similar(*direction, y, x) {
                std::cmp::Ordering::Less
            } else if more_similar(*direction, x, y) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        worst
    }

    /// The headline's ranking for the scorecard: (method, attack, value), most fragile first,
    /// with the metric's words and the largest ε; empty without attack rows.
    pub fn ranking(&self) -> (super::scorecard::Ranking, Option<(String, f64)>) {
        let ranking = self
            .ranking_of(&self.rows)
            .into_iter()
            .map(|(r, v)| (r.method.clone(), r.attack.clone(), v))
            .collect::<Vec<_>>();
        let by = self.metrics.first().zip(self.epsilons.last()).map(|((m, _), e)| (describe(m).name, *e));
        if ranking.is_empty() {
            (ranking, None)
        } else {
            (ranking, by.map(|(w, e)| (w.to_string(), e)))
        }
    }

    /// The sentences: the most and least fragile method, each steered attack against its
    /// random baseline on its own target, and how often the label was kept.
    fn sentences_for(&self, all: &[HeadlineRow], summary: &[&SummaryRow]) -> Vec<String> {
        let mut out = Vec::new();
        let (Some((metric, direction)), Some(&last)) = (self.metrics.first(), self.epsilons.last()) else {
            return out;
        };
        let eps = epsilon(last);
        let words = describe(metric).name;
        let any_attacked = all.iter().any(|r| r.attacked);
        let worst = self.ranking_of(all);
        match worst.as_slice() {
            [] => {}
            [(r, v)] => out.push(format!(
                "At ε = {eps}, under {}, the {words} of the {} map is {}.",
                r.attack,
                r.method,
                v.show()
            )),
            [(r, v), .., (s, u)] => out.push(format!(
                "The most fragile method is {}: at ε = {eps}, under {}, its {words} is {}; the \
                 least fragile is {}, with {} under {}.",
                r.method,
                r.attack,
                v.show(),
                s.method,
                u.show(),
                s.attack
            )),
        }
        if any_attacked {
            if let Some(s) = transfer_sentence(all) {
                out.push(s);
            }
        }
        let pairs: Vec<(&HeadlineRow, &HeadlineRow)> = all
            .iter()
            .filter(|r| r.attacked)
            .filter_map(|s| Some((s, all.iter().find(|r| !r.steered && r.method == s.method)?)))
            .collect();
        if pairs.len() <= MAX_COMPARISONS {
            for (steered, random) in &pairs {
                out.push(compare_sentence(steered, random, &self.epsilons, &words, *direction));
            }
        } else {
            out.push(comparisons_sentence(&pairs, &self.epsilons, &words, *direction));
        }
        let lowest = summary
            .iter()
            .filter(|r| self.metrics.iter().any(|(m, _)| *m == r.metric))
            .min_by(|a, b| a.label_kept_rate.total_cmp(&b.label_kept_rate));
        match lowest {
            Some(r) if r.label_kept_rate >= 1.0 => {
                out.push("Every perturbed image kept its predicted label.".into())
            }
            Some(r) => out.push(format!(
                "Only label-kept images enter the means; the lowest label-kept rate is {:.0}% ({}, \
                 {}, ε = {}).",
                100.0 * r.label_kept_rate,
                r.method,
                r.attack_label(),
                epsilon(r.epsilon)
            )),
            None => {}
        }
        out
    }

    /// The headline as fixed-width text for the terminal.
    pub fn text(&self) -> String {
        let mut t = String::new();
        for c in &self.caveats {
            let _ = writeln!(t, "{c}");
        }
        if !self.caveats.is_empty() {
            t.push('\n');
        }
        if self.rows.is_empty() {
            // A study of sanity checks or faithfulness alone: no fragility tables to show.
            for s in &self.sentences {
                let _ = writeln!(t, "{s}");
            }
            if let Some(card) = &self.scorecard {
                let _ = write!(t, "\n{}", card.table_text());
            }
            return t.lines().map(str::trim_end).collect::<Vec<_>>().join("\n") + "\n";
        }
        let _ = writeln!(
            t,
            "Headline: mean over label-kept images [95% bootstrap interval]; {ATTACKED_MARK} = the attack steers this map, \
             {TRANSFER_MARK} = it steers another method's map"
        );
        let width = self.rows.iter().map(|r| r.method.len()).max().unwrap_or(6).max(6);
        let awidth = self
            .rows
            .iter()
            .map(|r| r.attack.chars().count() + r.mark().chars().count())
            .max()
            .unwrap_or(6)
            .max(6);
        for (m, (metric, direction)) in self.metrics.iter().enumerate() {
            let _ =
                writeln!(t, "\n{} ({})", describe(metric).axis(), super::plot::direction_text(*direction));
            let _ = write!(t, "{:<width$}  {:<awidth$}", "method", "attack");
            for e in &self.epsilons {
                let _ = write!(t, "  {:<26}", format!("ε = {}", epsilon(*e)));
            }
            t.push('\n');
            for r in &self.rows {
                let attack = format!("{}{}", r.attack, r.mark());
                let pad = awidth.saturating_sub(attack.chars().count());
                let _ = write!(t, "{:<width$}  {attack}{}", r.method, " ".repeat(pad));
                for v in &r.values[m] {
                    let _ = write!(t, "  {:<26}", v.map_or("-".into(), |v| v.show()));
                }
                t.push('\n');
            }
        }
        if self.omitted > 0 {
            let _ = writeln!(
                t,
                "\n({} method × attack rows of transfer to other methods are in the summary table.)",
                self.omitted
            );
        }
        t.push('\n');
        for s in &self.sentences {
            let _ = writeln!(t, "{s}");
        }
        if let Some(card) = &self.scorecard {
            let _ = write!(t, "\n{}", card.table_text());
        }
        t.lines().map(str::trim_end).collect::<Vec<_>>().join("\n") + "\n"
    }

    /// The headline as HTML: the sentences, then one table per metric.
    pub fn html(&self) -> String {
        let mut h = caveats_and_sentences_html(&self.caveats, "", &self.sentences);
        let metrics = if self.rows.is_empty() { &[][..] } else { &self.metrics[..] };
        for (m, (metric, direction)) in metrics.iter().enumerate() {
            let d = describe(metric);
            let _ = writeln!(
                h,
                "<table class=\"headline\">\n<caption>{} ({}): {}. Mean over the label-kept images \
                 [95% bootstrap interval]; {ATTACKED_MARK} marks the attack on the map it steers, \
                 {TRANSFER_MARK} an attack that steers another method's map.</caption>",
                escape(&d.axis()),
                super::plot::direction_text(*direction),
                escape(&d.meaning)
            );
            h.push_str("<tr><th>method</th><th>attack</th>");
            for e in &self.epsilons {
                let _ = write!(h, "<th>ε = {}</th>", epsilon(*e));
            }
            h.push_str("</tr>\n");
            for r in &self.rows {
                let class = if r.attacked {
                    "attacked"
                } else if r.steered {
                    "steered"
                } else {
                    "random"
                };
                let _ = write!(
                    h,
                    "<tr class=\"{class}\"><td class=\"t\">{}</td><td class=\"t\">{}{}</td>",
                    escape(&r.method),
                    escape(&r.attack),
                    escape(&r.mark())
                );
                for v in &r.values[m] {
                    let _ = write!(h, "<td>{}</td>", v.map_or("–".into(), |v| escape(&v.show())));
                }
                h.push_str("</tr>\n");
            }
            h.push_str("</table>\n");
        }
        if self.omitted > 0 {
            let _ = writeln!(
                h,
                "<p>{} method × attack rows of transfer to methods no attack steers are left to the \
                 <a href=\"#summary\">summary table</a>.</p>",
                self.omitted
            );
        }
        if let Some(card) = &self.scorecard {
            h.push_str(&card.table_html());
        }
        h
    }
}

/// The primary metric of a steered row and of its random baseline at every ε where both are
/// defined, and the budgets at which the steered attack moved the map more.
fn versus(
    steered: &HeadlineRow,
    random: &HeadlineRow,
    epsilons: &[f64],
    direction: Direction,
) -> (Vec<(f64, Estimate, Estimate)>, Vec<f64>) {
    let pairs: Vec<(f64, Estimate, Estimate)> = epsilons
        .iter()
        .enumerate()
        .filter_map(|(e, &eps)| Some((eps, steered.values[0][e]?, random.values[0][e]?)))
        .collect();
    let wins =
        pairs.iter().filter(|(_, s, r)| more_similar(direction, r.mean, s.mean)).map(|p| p.0).collect();
    (pairs, wins)
}

/// One sentence for many steered attacks: how many beat random noise at every ε, and the
/// range of their margins at the largest budget.
fn comparisons_sentence(
    pairs: &[(&HeadlineRow, &HeadlineRow)],
    epsilons: &[f64],
    words: &str,
    direction: Direction,
) -> String {
    let mut always = 0;
    // (margin towards "moved more", attack) at the largest common budget.
    let mut margins: Vec<(f64, &str)> = Vec::new();
    for (steered, random) in pairs {
        let (both, wins) = versus(steered, random, epsilons, direction);
        if !both.is_empty() && wins.len() == both.len() {
            always += 1;
        }
        if let Some(&(_, s, r)) = both.last() {
            let m = match direction {
                Direction::HigherIsMoreSimilar => r.mean - s.mean,
                Direction::LowerIsMoreSimilar => s.mean - r.mean,
            };
            margins.push((m, &steered.attack));
        }
    }
    margins.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut randoms: Vec<&str> = pairs.iter().map(|p| p.1.attack.as_str()).collect();
    randoms.dedup();
    let random = if randoms.len() == 1 { randoms[0] } else { "random noise" };
    let mut text = format!(
        "{always} of {} steered attacks move the map they steer more than {random} (random noise \
         of the same size) at every ε",
        pairs.len()
    );
    if let (Some(lo), Some(hi)) = (margins.first(), margins.last()) {
        text.push_str(&format!(
            "; by the {words}, the steered map is {} to {} less similar than under {random} at \
             the largest ε ({}; {})",
            num(lo.0),
            num(hi.0),
            lo.1,
            hi.1,
        ));
    }
    text.push('.');
    text
}

/// "top_k → gradient moves the gradient map more than random_sign at every ε ...".
fn compare_sentence(
    steered: &HeadlineRow,
    random: &HeadlineRow,
    epsilons: &[f64],
    words: &str,
    direction: Direction,
) -> String {
    let (pairs, wins) = versus(steered, random, epsilons, direction);
    let Some(&(last, s, r)) = pairs.last() else {
        return format!("{} and {} share no budget with a defined mean.", steered.attack, random.attack);
    };
    let eps = epsilon(last);
    let scope = if wins.len() == pairs.len() {
        "at every ε".to_string()
    } else if wins.is_empty() {
        return format!(
            "{} does not move the {} map more than {} at any ε (by the {words}): at ε = {eps}, {} \
             against {}.",
            steered.attack,
            steered.method,
            random.attack,
            s.show(),
            r.show()
        );
    } else {
        let list: Vec<String> = wins.iter().map(|e| epsilon(*e)).collect();
        format!("at {} of {} budgets (ε = {})", wins.len(), pairs.len(), list.join(", "))
    };
    let separated = overlap_clause(&s, &r);
    format!(
        "{} moves the {} map more than {} (random noise of the same size) {scope}: at ε = {eps} its \
         {words} is {} against {}, a difference of {}{separated}.",
        steered.attack,
        steered.method,
        random.attack,
        s.show(),
        r.show(),
        num((r.mean - s.mean).abs())
    )
}

/// A headline's first HTML: its caveats (if any), then `heading` (raw HTML, may be empty),
/// then its sentences. Shared by the one-model and the several-model headline.
pub(super) fn caveats_and_sentences_html(caveats: &[String], heading: &str, sentences: &[String]) -> String {
    let mut h = String::new();
    if !caveats.is_empty() {
        h.push_str("<div class=\"caveats\">\n");
        for c in caveats {
            let _ = writeln!(h, "<p>{}</p>", escape(c));
        }
        h.push_str("</div>\n");
    }
    h.push_str(heading);
    h.push_str("<div class=\"sentences\">\n");
    for s in sentences {
        let _ = writeln!(h, "<p>{}</p>", escape(s));
    }
    h.push_str("</div>\n");
    h
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A summary row of one model with the given mean, an interval of ±0.02 and n = 20.
    pub(crate) fn row(
        method: &str,
        attack: &str,
        target: Option<&str>,
        eps: f64,
        metric: &str,
        mean: f64,
    ) -> SummaryRow {
        SummaryRow {
            model: String::new(),
            method: method.into(),
            attack: attack.into(),
            target_method: target.map(str::to_string),
            epsilon: eps,
            metric: metric.into(),
            n: 20,
            nulls: 0,
            mean: Some(mean),
            std: Some(0.1),
            median: Some(mean),
            ci_low: Some(mean - 0.02),
            ci_high: Some(mean + 0.02),
            label_kept_rate: 1.0,
        }
    }

    fn columns() -> Vec<(String, Direction)> {
        vec![
            ("spearman".into(), Direction::HigherIsMoreSimilar),
            ("pearson".into(), Direction::HigherIsMoreSimilar),
            ("top100_intersection".into(), Direction::HigherIsMoreSimilar),
            ("center_shift_px".into(), Direction::LowerIsMoreSimilar),
            ("topk_mass_after".into(), Direction::HigherIsMoreSimilar),
        ]
    }

    /// Two methods (gradient attacked by top_k, smoothgrad by transfer), random_sign, two ε.
    fn hand_summary() -> Vec<SummaryRow> {
        let mut s = Vec::new();
        // (method, attack, target, top-100 at ε 0.01 / 0.1)
        let cases = [
            ("gradient", "random_sign", None, [0.80, 0.50]),
            ("gradient", "top_k", Some("gradient"), [0.60, 0.20]),
            ("smoothgrad", "random_sign", None, [0.90, 0.85]),
            ("smoothgrad", "top_k", Some("gradient"), [0.88, 0.70]),
        ];
        for (method, attack, target, top) in cases {
            for (e, eps) in [0.01, 0.1].into_iter().enumerate() {
                s.push(row(method, attack, target, eps, "spearman", top[e] - 0.1));
                s.push(row(method, attack, target, eps, "pearson", 0.5));
                s.push(row(method, attack, target, eps, "top100_intersection", top[e]));
                s.push(row(method, attack, target, eps, "center_shift_px", 1.0 - top[e]));
            }
        }
        s.push(SummaryRow {
            attack: SAMPLING.into(),
            ..row("gradient", "x", None, 0.02, "max_sensitivity", 0.1)
        });
        s
    }

    #[test]
    fn headline_takes_the_papers_metrics_and_orders_rows_random_first() {
        let h = Headline::build(&hand_summary(), &columns());
        let metrics: Vec<&str> = h.metrics.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(metrics, ["top100_intersection", "spearman", "center_shift_px"]);
        assert_eq!(h.epsilons, [0.01, 0.1]);
        let rows: Vec<(&str, &str, bool)> =
            h.rows.iter().map(|r| (r.method.as_str(), r.attack.as_str(), r.attacked)).collect();
        assert_eq!(
            rows,
            [
                ("gradient", "random_sign", false),
                ("gradient", "top_k → gradient", true),
                ("smoothgrad", "random_sign", false),
                ("smoothgrad", "top_k → gradient", false),
            ]
        );
        assert_eq!(h.omitted, 0);
        // gradient under top_k, top-100 at ε = 0.1: 0.20 with its interval ±0.02.
        let v = h.rows[1].values[0][1].unwrap();
        assert_eq!(v.show(), "0.200 [0.180, 0.220]");
        // center shift of the same row at ε = 0.01: 1 − 0.6 = 0.4.
        assert_eq!(h.rows[1].values[2][0].unwrap().show(), "0.400 [0.380, 0.420]");
    }

    #[test]
    fn headline_sentences_state_the_most_fragile_method_and_the_margin() {
        let h = Headline::build(&hand_summary(), &columns());
        // smoothgrad is measured only by transfer: it is not ranked beside gradient, whose map
        // the attack steers, but named as such.
        assert_eq!(
            h.sentences[0],
            "At ε = 0.1, under top_k → gradient, the top-100 intersection of the gradient map is \
             0.200 [0.180, 0.220]."
        );
        assert_eq!(
            h.sentences[1],
            "smoothgrad was measured only by transfer (under attacks that steer another method's \
             map, marked (transfer)), so not ranked against the attacked methods: a transfer is a \
             weaker attack, and a method no attack targets looks more robust than it is."
        );
        // 0.50 (random) − 0.20 (steered) = 0.30; [0.18, 0.22] and [0.48, 0.52] are apart.
        assert_eq!(
            h.sentences[2],
            "top_k → gradient moves the gradient map more than random_sign (random noise of the same \
             size) at every ε: at ε = 0.1 its top-100 intersection is 0.200 [0.180, 0.220] against \
             0.500 [0.480, 0.520], a difference of 0.300; the intervals do not overlap."
        );
        assert_eq!(h.sentences[3], "Every perturbed image kept its predicted label.");
        assert_eq!(h.sentences.len(), 4);
        // The table marks the transfer row too.
        assert!(h.text().contains("top_k → gradient (transfer)"), "{}", h.text());
    }

    #[test]
    fn two_attacked_methods_are_ranked_against_each_other() {
        let mut s = hand_summary();
        for r in s.iter_mut().filter(|r| r.method == "smoothgrad" && r.attack == "top_k") {
            r.target_method = Some("smoothgrad".into());
        }
        let h = Headline::build(&s, &columns());
        assert!(h.sentences[0].starts_with("The most fragile method is gradient"), "{}", h.sentences[0]);
        assert!(h.sentences[0].contains("the least fragile is smoothgrad, with 0.700"), "{}", h.sentences[0]);
        assert!(!h.sentences.iter().any(|s| s.contains("only by transfer")));
    }

    #[test]
    fn caveats_come_first_and_a_tiny_sample_withdraws_the_interval_claims() {
        let run =
            serde_json::json!({ "images": { "studied": 2, "requested": 20, "eligible": 2, "in_file": 20 } });
        let h = Headline::build(&hand_summary(), &columns())
            .with_caveats(super::super::caveats::caveats(Some(&run)));
        let text = h.text();
        assert!(text.starts_with("Only 2 of the 20 requested images were studied"), "{text}");
        assert!(!text.contains("intervals do not overlap"), "{text}");
        assert!(h.html().find("Only 2 of the 20").unwrap() < h.html().find("<table").unwrap());
    }

    #[test]
    fn a_steered_attack_that_loses_to_random_is_said_so_and_label_loss_is_reported() {
        let mut s = hand_summary();
        for r in s.iter_mut().filter(|r| r.method == "gradient" && r.attack == "top_k") {
            if r.metric == "top100_intersection" {
                r.mean = Some(0.9);
                r.ci_low = Some(0.85);
                r.ci_high = Some(0.95);
            }
            r.label_kept_rate = 0.75;
        }
        let h = Headline::build(&s, &columns());
        assert!(
            h.sentences[2].starts_with(
                "top_k → gradient does not move the gradient map more than random_sign at any ε"
            ),
            "{}",
            h.sentences[2]
        );
        assert!(
            h.sentences[3].contains("lowest label-kept rate is 75% (gradient, top_k → gradient, ε = 0.01)")
        );
    }

    #[test]
    fn many_rows_keep_only_the_attacked_methods() {
        let mut s = hand_summary();
        for k in 0..12 {
            for attack in ["random_sign", "top_k"] {
                let target = (attack == "top_k").then_some("gradient");
                s.push(row(&format!("m{k}"), attack, target, 0.1, "top100_intersection", 0.5));
            }
        }
        let h = Headline::build(&s, &columns());
        // 4 + 24 rows > MAX_ROWS: gradient's random and attacked rows remain.
        let rows: Vec<&str> = h.rows.iter().map(|r| r.attack.as_str()).collect();
        assert_eq!(rows, ["random_sign", "top_k → gradient"]);
        assert_eq!(h.omitted, 26);
        assert!(h.text().contains("26 method × attack rows"));
    }

    #[test]
    fn many_steered_attacks_share_one_sentence() {
        // Four attacked methods a..d under top_k; each steered row is 0.1·(k+1) below random.
        let mut s = Vec::new();
        for (k, m) in ["a", "b", "c", "d"].into_iter().enumerate() {
            s.push(row(m, "random_walk", None, 0.1, "top100_intersection", 0.8));
            let target = Some(m);
            s.push(row(m, "top_k", target, 0.1, "top100_intersection", 0.8 - 0.1 * (k + 1) as f64));
        }
        let h = Headline::build(&s, &columns());
        assert_eq!(
            h.sentences[1],
            "4 of 4 steered attacks move the map they steer more than random_walk (random noise of \
             the same size) at every ε; by the top-100 intersection, the steered map is 0.100 to \
             0.400 less similar than under random_walk at the largest ε (top_k → a; top_k → d)."
        );
        assert_eq!(h.sentences.len(), 3);
    }

    #[test]
    fn text_and_html_show_the_same_cells() {
        let h = Headline::build(&hand_summary(), &columns());
        let text = h.text();
        assert!(text.contains("top-100 intersection (fraction) (higher = more similar)"), "{text}");
        assert!(text.contains("top_k → gradient ★"));
        assert!(text.contains("0.200 [0.180, 0.220]"));
        let html = h.html();
        assert!(html.contains("<td>0.200 [0.180, 0.220]</td>"));
        assert!(html.contains(
            "<tr class=\"attacked\"><td class=\"t\">gradient</td><td class=\"t\">top_k → gradient ★</td>"
        ));
        assert_eq!(html.matches("<table class=\"headline\">").count(), 3);
    }

    #[test]
    fn numbers_keep_three_decimals_or_go_scientific() {
        assert_eq!(num(0.7349), "0.735");
        assert_eq!(num(2.5e-6), "2.50e-6");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(0.0), "0");
    }
}
