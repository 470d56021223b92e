//! The run's progress line: per stage, images per second and the time left.
//!
//! A study's stages cost very different amounts per image (the clean maps, a random draw, a
//! hundred second-order attack steps), so one overall rate would mislead: every stage keeps
//! its own clock ([`StageClock`]), fed by the chunks it has finished, and the run's time left
//! is the sum of each stage's images left over its own rate. Within a chunk, an attack reports
//! its steps, so the line moves (and the first chunk already gives an estimate) long before
//! the chunk ends:
//!
//! ```text
//! 00:01:12 [=====>        ]  38% top_k → gradient · images 50–99 · step 37/100 · 2.9 img/s · stage 0:41 left · run 1:55 left
//! ```
//!
//! Chunks continued from an interrupted run count as done but not as timed work. [`Progress`]
//! draws the line on stderr (hidden when stderr is not a terminal, or with `--quiet`).

use std::sync::Mutex;
use std::time::Instant;

/// One stage's totals.
#[derive(Debug, Clone)]
struct Stage {
    name: String,
    /// Images the stage processes in the whole run.
    total: usize,
    /// Images done (computed or resumed).
    done: usize,
    /// Images computed, and the seconds they took.
    timed: usize,
    seconds: f64,
}

/// The work in progress inside the current stage: how far it is (0..1 of `images`) and the
/// seconds it has taken so far.
#[derive(Debug, Clone, Copy)]
pub struct Partial {
    /// The chunk's images.
    pub images: usize,
    /// The fraction of them done.
    pub fraction: f64,
    /// Seconds since the stage began on this chunk.
    pub seconds: f64,
}

/// Per-stage rates and time left, from hand-fed work and seconds (no clock inside: testable).
#[derive(Debug, Clone)]
pub struct StageClock {
    stages: Vec<Stage>,
}

impl StageClock {
    /// Stages by name, each with the number of images it will process in the run.
    pub fn new(stages: &[(String, usize)]) -> Self {
        let stages = stages
            .iter()
            .map(|(name, total)| Stage { name: name.clone(), total: *total, done: 0, timed: 0, seconds: 0.0 })
            .collect();
        Self { stages }
    }

    /// `images` of `stage` were done in `seconds`.
    pub fn record(&mut self, stage: usize, images: usize, seconds: f64) {
        let s = &mut self.stages[stage];
        s.done += images;
        s.timed += images;
        s.seconds += seconds;
    }

    /// `images` of every stage came from an interrupted run: done, but not timed.
    pub fn resume(&mut self, images: usize) {
        for s in &mut self.stages {
            s.done += images;
        }
    }

    /// Images done over all stages, and the total (the bar's position and length).
    pub fn units(&self) -> (u64, u64) {
        let sum = |f: fn(&Stage) -> usize| self.stages.iter().map(|s| f(s) as u64).sum();
        (sum(|s| s.done), sum(|s| s.total))
    }

    /// The stage's images per second: from its finished chunks, else from the work in progress.
    pub fn rate(&self, stage: usize, partial: Option<Partial>) -> Option<f64> {
        let s = &self.stages[stage];
        if s.timed > 0 && s.seconds > 0.0 {
            return Some(s.timed as f64 / s.seconds);
        }
        let p = partial?;
        (p.fraction > 0.0 && p.seconds > 0.0).then(|| p.fraction * p.images as f64 / p.seconds)
    }

    /// Seconds the stage still needs (the work in progress counted as done in part).
    pub fn left(&self, stage: usize, partial: Option<Partial>) -> Option<f64> {
        let s = &self.stages[stage];
        let in_progress = partial.map_or(0.0, |p| p.fraction * p.images as f64);
        let images = s.total.saturating_sub(s.done) as f64 - in_progress;
        if images <= 0.0 {
            return Some(0.0);
        }
        self.rate(stage, partial).map(|r| images / r)
    }

    /// Seconds the run still needs: every stage's time left, once every stage with work left
    /// has a rate.
    pub fn run_left(&self, current: usize, partial: Option<Partial>) -> Option<f64> {
        (0..self.stages.len()).map(|i| self.left(i, if i == current { partial } else { None })).sum()
    }

    /// The progress message while `stage` works on `detail` (e.g. "images 50–99 · step 3/10").
    pub fn message(&self, stage: usize, detail: &str, partial: Option<Partial>) -> String {
        let mut parts = vec![self.stages[stage].name.clone(), detail.to_string()];
        if let Some(r) = self.rate(stage, partial) {
            parts.push(format!("{} img/s", rate_text(r)));
        }
        if let Some(t) = self.left(stage, partial) {
            parts.push(format!("stage {} left", duration(t)));
        }
        if let Some(t) = self.run_left(stage, partial) {
            parts.push(format!("run {} left", duration(t)));
        }
        parts.retain(|p| !p.is_empty());
        parts.join(" · ")
    }
}

/// A rate with two significant digits or more ("0.41", "3.2", "27", "1400").
fn rate_text(r: f64) -> String {
    match r {
        r if r < 1.0 => format!("{r:.2}"),
        r if r < 10.0 => format!("{r:.1}"),
        r => format!("{r:.0}"),
    }
}

/// Seconds as "m:ss" or "h:mm:ss".
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, m, s) => format!("{m}:{s:02}"),
        (h, m, s) => format!("{h}:{m:02}:{s:02}"),
    }
}

/// What the stage in progress is doing.
struct Current {
    stage: usize,
    images: usize,
    detail: String,
    started: Instant,
    /// Steps done and total on this chunk, once the stage reports them.
    steps: Option<(usize, usize)>,
}

impl Current {
    fn partial(&self) -> Partial {
        let fraction = self.steps.map_or(0.0, |(d, t)| d as f64 / t.max(1) as f64);
        Partial { images: self.images, fraction, seconds: self.started.elapsed().as_secs_f64() }
    }
}

/// The bar's resolution: its position runs from 0 to this.
const BAR_LEN: u64 = 1000;

/// The shared state behind the bar.
struct State {
    clock: StageClock,
    current: Option<Current>,
    /// The bar's last position (it never moves back).
    shown: u64,
}

/// The run's progress bar: a [`StageClock`] drawn on an indicatif bar. The bar fills with
/// time, not with work units (stages cost very different amounts per image): elapsed / (elapsed
/// + the run's time left) once every stage has a rate, the share of image-stages done before.
pub struct Progress {
    bar: indicatif::ProgressBar,
    started: Instant,
    state: Mutex<State>,
}

impl Progress {
    /// A bar over `stages` (name, images in the run), hidden when `show` is false.
    pub fn new(show: bool, stages: &[(String, usize)]) -> Self {
        let clock = StageClock::new(stages);
        let bar = if show { indicatif::ProgressBar::new(BAR_LEN) } else { indicatif::ProgressBar::hidden() };
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:25}] {percent:>3}% {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        if show {
            bar.enable_steady_tick(std::time::Duration::from_millis(500));
        }
        Self { bar, started: Instant::now(), state: Mutex::new(State { clock, current: None, shown: 0 }) }
    }

    /// Applies `f` to the state, then redraws the message and the position.
    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut guard = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let state = &mut *guard;
        f(state);
        if self.bar.is_hidden() {
            return;
        }
        let partial = state.current.as_ref().map(Current::partial);
        let (done, total) = state.clock.units();
        let stage = state.current.as_ref().map_or(0, |c| c.stage);
        let fraction = match state.clock.run_left(stage, partial) {
            Some(left) => {
                let elapsed = self.started.elapsed().as_secs_f64();
                elapsed / (elapsed + left).max(f64::MIN_POSITIVE)
            }
            None => done as f64 / total.max(1) as f64,
        };
        state.shown = state.shown.max((fraction.clamp(0.0, 1.0) * BAR_LEN as f64) as u64);
        self.bar.set_position(state.shown);
        if let Some(c) = &state.current {
            let detail = match c.steps {
                Some((d, t)) => format!("{} · step {d}/{t}", c.detail),
                None => c.detail.clone(),
            };
            self.bar.set_message(state.clock.message(c.stage, &detail, partial));
        }
    }

    /// `stage` begins on a chunk of `images` images, described by `detail`.
    pub fn begin(&self, stage: usize, images: usize, detail: String) {
        self.update(|s| {
            s.current = Some(Current { stage, images, detail, started: Instant::now(), steps: None });
        });
    }

    /// The stage in progress has done `done` of its `total` steps on the chunk.
    pub fn step(&self, done: usize, total: usize) {
        self.update(|s| {
            if let Some(c) = &mut s.current {
                c.steps = Some((done, total));
            }
        });
    }

    /// The stage in progress has finished its chunk.
    pub fn end(&self) {
        self.update(|s| {
            if let Some(c) = s.current.take() {
                s.clock.record(c.stage, c.images, c.started.elapsed().as_secs_f64());
            }
        });
    }

    /// A chunk of `images` images was continued from an interrupted run.
    pub fn resume(&self, images: usize) {
        self.update(|s| s.clock.resume(images));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> StageClock {
        StageClock::new(&[("clean maps".into(), 100), ("top_k → gradient".into(), 100)])
    }

    #[test]
    fn each_stage_has_its_own_rate_and_the_run_sums_their_time_left() {
        let mut c = clock();
        // Nothing measured: no rate, no time left.
        assert_eq!(c.rate(0, None), None);
        assert_eq!(c.run_left(0, None), None);
        // 50 clean maps in 5 s (10 img/s), 50 attacked images in 50 s (1 img/s).
        c.record(0, 50, 5.0);
        assert_eq!(c.rate(0, None), Some(10.0));
        // The attack stage has no rate yet: the run's time left is unknown.
        assert_eq!(c.run_left(0, None), None);
        c.record(1, 50, 50.0);
        assert_eq!(c.left(0, None), Some(5.0));
        assert_eq!(c.left(1, None), Some(50.0));
        assert_eq!(c.run_left(0, None), Some(55.0));
        assert_eq!(c.units(), (100, 200));
        assert_eq!(
            c.message(1, "images 50–99", None),
            "top_k → gradient · images 50–99 · 1.0 img/s · stage 0:50 left · run 0:55 left"
        );
    }

    #[test]
    fn work_in_progress_gives_a_first_estimate_and_counts_as_partly_done() {
        let mut c = clock();
        c.record(0, 50, 5.0);
        // Half of a 50-image chunk of the attack in 10 s: 2.5 img/s, 75 images left → 30 s.
        let p = Partial { images: 50, fraction: 0.5, seconds: 10.0 };
        assert_eq!(c.rate(1, Some(p)), Some(2.5));
        assert_eq!(c.left(1, Some(p)), Some(30.0));
        assert_eq!(c.run_left(1, Some(p)), Some(35.0));
        // Once a chunk is finished its measured rate wins over the partial one.
        c.record(1, 50, 100.0);
        let p = Partial { images: 50, fraction: 0.2, seconds: 1.0 };
        assert_eq!(c.rate(1, Some(p)), Some(0.5));
        assert_eq!(c.left(1, Some(p)), Some(80.0));
    }

    #[test]
    fn resumed_chunks_are_done_but_not_timed() {
        let mut c = clock();
        c.resume(50);
        assert_eq!(c.units(), (100, 200));
        assert_eq!(c.rate(0, None), None);
        c.record(0, 25, 50.0);
        // 25 images left at 0.5 img/s.
        assert_eq!(c.left(0, None), Some(50.0));
        // A finished stage needs nothing more, rate or not.
        c.record(0, 25, 50.0);
        assert_eq!(c.left(0, None), Some(0.0));
    }

    #[test]
    fn durations_and_rates_read_at_a_glance() {
        assert_eq!(duration(0.4), "0:00");
        assert_eq!(duration(59.6), "1:00");
        assert_eq!(duration(754.0), "12:34");
        assert_eq!(duration(3723.0), "1:02:03");
        assert_eq!(rate_text(0.4123), "0.41");
        assert_eq!(rate_text(3.24), "3.2");
        assert_eq!(rate_text(1412.3), "1412");
    }
}
