//! Coarse-to-fine runs: the parameter types `scales` and `iterations`, and the schedule they
//! make: one [`Stage`] per scale, smallest first, the last at the output's size.
//!
//! A run with `scales = [256, 512]` and `size = 1024` optimises at a long side of 256, then
//! 512, then 1024; each stage starts from the previous stage's output, upsampled, and
//! recomputes its targets at its own size (crowsonkb/style-transfer-pytorch's schedule, and
//! neural-style's `multires.sh`). Without `scales` a run has one stage, the output's.

use serde_json::json;
use toml::Value;

use super::types::{expected, list, number_in, Count, ParamType, Pixels, Problem};

/// Most stages a run may have: a schedule of more is a typo (a factor of 1.01).
pub const MAX_STAGES: usize = 32;

/// The long sides of the stages before the output's own.
#[derive(Clone, Debug, PartialEq)]
pub enum Scales {
    /// Listed long sides, increasing; the output's size is appended unless the list ends with
    /// it.
    List(Vec<Pixels>),
    /// `start`, `start · factor`, `start · factor²`, … (rounded) while below the output's long
    /// side, then the output's.
    Geometric {
        /// The first long side.
        start: Pixels,
        /// Ratio between consecutive long sides, > 1.
        factor: f64,
    },
}

/// The valid range of a geometric schedule's factor (√2 is crowsonkb's, 2 neural-style's).
const FACTOR: std::ops::RangeInclusive<f64> = 1.05..=8.0;

impl Scales {
    /// The long side of every stage for an output whose long side is `last`, smallest first;
    /// the last is `last`. Refuses schedules that are not increasing or end above `last`.
    pub fn sides(&self, last: u32) -> Result<Vec<u32>, Problem> {
        let mut sides: Vec<u32> = match self {
            Scales::List(l) => l.iter().map(|s| s.0 as u32).collect(),
            Scales::Geometric { start, factor } => {
                let mut v = Vec::new();
                let mut s = start.0 as f64;
                while s.round() < f64::from(last) && v.len() <= MAX_STAGES {
                    // Small sides with a small factor round to the same pixel count: kept once.
                    if v.last() != Some(&(s.round() as u32)) {
                        v.push(s.round() as u32);
                    }
                    s *= factor;
                }
                v
            }
        };
        if let Some(i) = sides.windows(2).position(|w| w[1] <= w[0]) {
            return Err(Problem {
                at: format!("[{}]", i + 1),
                message: format!("scales must increase: {} follows {}", sides[i + 1], sides[i]),
            });
        }
        if let Some(&above) = sides.iter().find(|&&s| s > last) {
            return Err(Problem::new(format!(
                "scale {above} is above the output's long side {last}: the last stage is the output's size \
                 (set by `size`, or `width` and `height`)"
            )));
        }
        if sides.last() != Some(&last) {
            sides.push(last);
        }
        if sides.len() > MAX_STAGES {
            return Err(Problem::new(format!(
                "{} stages up to {last} px: at most {MAX_STAGES} (use a larger factor or a later start)",
                sides.len()
            )));
        }
        Ok(sides)
    }
}

impl ParamType for Scales {
    fn parse(v: &Value) -> Result<Self, Problem> {
        match v {
            Value::Array(a) if !a.is_empty() => list::<Pixels>(a).map(Scales::List),
            Value::Table(t) => {
                super::types::table_keys(t, &["start", "factor"])?;
                let start =
                    super::types::field::<Pixels>(t, "start")?.ok_or_else(|| Problem::new("missing `start`"))?;
                let factor = match t.get("factor") {
                    Some(f) => number_in(f, |x| FACTOR.contains(&x), &factor_describe())
                        .map_err(|p| Problem { at: ".factor".into(), ..p })?,
                    None => return Err(Problem::new("missing `factor`")),
                };
                Ok(Scales::Geometric { start, factor })
            }
            _ => Err(expected(&Self::describe(), v)),
        }
    }
    fn to_value(&self) -> Option<Value> {
        Some(match self {
            Scales::List(l) => Value::Array(l.iter().map(|s| Value::Integer(s.0 as i64)).collect()),
            Scales::Geometric { start, factor } => {
                let mut t = toml::Table::new();
                t.insert("start".into(), Value::Integer(start.0 as i64));
                t.insert("factor".into(), Value::Float(*factor));
                Value::Table(t)
            }
        })
    }
    fn describe() -> String {
        format!(
            "a list of long sides in pixels ({}), or {{ start, factor }} with {}",
            Pixels::describe(),
            factor_describe()
        )
    }
    fn schema() -> serde_json::Value {
        let table = json!({ "type": "object", "required": ["start", "factor"], "additionalProperties": false,
            "properties": { "start": Pixels::schema(),
                "factor": { "type": "number", "minimum": FACTOR.start(), "maximum": FACTOR.end() } } });
        json!({ "anyOf": [ { "type": "array", "minItems": 1, "items": Pixels::schema() }, table ] })
    }
}

fn factor_describe() -> String {
    format!("factor {} … {}", FACTOR.start(), FACTOR.end())
}

/// Optimizer steps per stage.
#[derive(Clone, Debug, PartialEq)]
pub enum Iterations {
    /// The same at every stage (a single-scale run's steps).
    Each(Count),
    /// One per stage, smallest scale first.
    List(Vec<Count>),
    /// `first` at the first stage, `rest` at every later one.
    FirstRest {
        /// Steps at the first (coarsest) stage.
        first: Count,
        /// Steps at each later stage.
        rest: Count,
    },
}

impl Iterations {
    /// Steps at stage `k` (0: the first). A list shorter than the schedule is refused when the
    /// run is planned ([`super::rules::check`]); here its last entry repeats.
    pub fn at(&self, k: usize) -> usize {
        match self {
            Iterations::Each(n) => n.get(),
            Iterations::List(l) => l.get(k).or(l.last()).map_or(0, |n| n.get()),
            Iterations::FirstRest { first, rest } => {
                if k == 0 {
                    first.get()
                } else {
                    rest.get()
                }
            }
        }
    }

    /// How many stages a list gives steps for (`None`: any number).
    pub fn stages(&self) -> Option<usize> {
        match self {
            Iterations::List(l) => Some(l.len()),
            _ => None,
        }
    }
}

impl ParamType for Iterations {
    fn parse(v: &Value) -> Result<Self, Problem> {
        match v {
            Value::Array(a) if !a.is_empty() => list::<Count>(a).map(Iterations::List),
            Value::Table(t) => {
                super::types::table_keys(t, &["first", "rest"])?;
                let get =
                    |k: &str| super::types::field::<Count>(t, k)?.ok_or_else(|| Problem::new(format!("missing `{k}`")));
                Ok(Iterations::FirstRest { first: get("first")?, rest: get("rest")? })
            }
            Value::Array(_) => Err(expected(&Self::describe(), v)),
            _ => Count::parse(v).map(Iterations::Each),
        }
    }
    fn to_value(&self) -> Option<Value> {
        let int = |n: &Count| Value::Integer(n.0 as i64);
        Some(match self {
            // An integer, as before stages existed: the records of single-scale runs keep their
            // identities.
            Iterations::Each(n) => int(n),
            Iterations::List(l) => Value::Array(l.iter().map(int).collect()),
            Iterations::FirstRest { first, rest } => {
                let mut t = toml::Table::new();
                t.insert("first".into(), int(first));
                t.insert("rest".into(), int(rest));
                Value::Table(t)
            }
        })
    }
    fn describe() -> String {
        format!("{c}, a list of them (one per scale), or {{ first, rest }}", c = Count::describe())
    }
    fn schema() -> serde_json::Value {
        let table = json!({ "type": "object", "required": ["first", "rest"], "additionalProperties": false,
            "properties": { "first": Count::schema(), "rest": Count::schema() } });
        json!({ "anyOf": [ Count::schema(), { "type": "array", "minItems": 1, "items": Count::schema() }, table ] })
    }
}

/// One stage of a run: a scale and its steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Its position, 0 first.
    pub index: usize,
    /// Its long side in pixels.
    pub side: u32,
    /// Its width in pixels.
    pub width: u32,
    /// Its height in pixels.
    pub height: u32,
    /// Optimizer steps at it.
    pub iterations: usize,
}

/// The size of a stage of long side `side` for an output of `(width, height)`: the output's
/// aspect ratio, rounded, at least 1 pixel.
pub fn stage_size(side: u32, (width, height): (u32, u32)) -> (u32, u32) {
    let long = f64::from(width.max(height));
    let s = |x: u32| ((f64::from(x) * f64::from(side) / long).round() as u32).max(1);
    if side >= width.max(height) {
        (width, height)
    } else {
        (s(width), s(height))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::types::Int;

    fn parse<T: ParamType>(s: &str) -> Result<T, Problem> {
        let t: toml::Table = format!("x = {s}").parse().unwrap();
        T::parse(&t["x"])
    }

    #[test]
    fn schedules_expand_to_increasing_sides_that_end_at_the_output() {
        let sides = |s: &str, last| parse::<Scales>(s).unwrap().sides(last);
        assert_eq!(sides("[256, 512]", 1024).unwrap(), [256, 512, 1024]);
        assert_eq!(sides("[256, 512, 1024]", 1024).unwrap(), [256, 512, 1024]);
        // crowsonkb's: 128 · √2ᵏ, rounded.
        assert_eq!(sides("{ start = 128, factor = 1.41421356 }", 512).unwrap(), [128, 181, 256, 362, 512]);
        // A factor that lands close under the end still keeps the end as its own stage.
        assert_eq!(sides("{ start = 300, factor = 2 }", 1000).unwrap(), [300, 600, 1000]);
        let e = sides("[512, 256]", 1024).unwrap_err();
        assert_eq!(e.at, "[1]");
        assert!(e.message.contains("must increase"), "{e:?}");
        assert!(sides("[256, 2048]", 1024).unwrap_err().message.contains("above the output's long side 1024"));
        assert!(sides("{ start = 16, factor = 1.05 }", 16384).unwrap_err().message.contains("at most 32"));
        for bad in [
            "[]",
            "[8]",
            "{ start = 128 }",
            "{ start = 128, factor = 1 }",
            "{ start = 128, factor = 2, end = 3 }",
            "\"x\"",
        ] {
            assert!(parse::<Scales>(bad).is_err(), "{bad}");
        }
        let v = parse::<Scales>("{ start = 128, factor = 2.0 }").unwrap();
        assert_eq!(Scales::parse(&v.to_value().unwrap()).unwrap(), v);
    }

    #[test]
    fn iterations_are_per_stage_and_an_integer_writes_back_as_one() {
        let it = |s: &str| parse::<Iterations>(s).unwrap();
        assert_eq!((it("300").at(0), it("300").at(5)), (300, 300));
        assert_eq!(it("300").to_value(), Some(Value::Integer(300)));
        let l = it("[1000, 500, 200]");
        assert_eq!((l.at(0), l.at(1), l.at(2), l.stages()), (1000, 500, 200, Some(3)));
        let fr = it("{ first = 500, rest = 100 }");
        assert_eq!((fr.at(0), fr.at(1), fr.at(7)), (500, 100, 100));
        assert_eq!(fr, Iterations::FirstRest { first: Int(500), rest: Int(100) });
        for bad in ["0", "[]", "[10, 0]", "{ first = 5 }", "{ first = 5, rest = 5, more = 1 }", "-3"] {
            assert!(parse::<Iterations>(bad).is_err(), "{bad}");
        }
        assert_eq!(parse::<Iterations>("[10, 0]").unwrap_err().at, "[1]");
    }

    #[test]
    fn stage_sizes_keep_the_output_aspect_ratio() {
        assert_eq!(stage_size(256, (1024, 768)), (256, 192));
        assert_eq!(stage_size(181, (512, 341)), (181, 121));
        assert_eq!(stage_size(100, (90, 1800)), (5, 100));
        assert_eq!(stage_size(1800, (90, 1800)), (90, 1800));
    }
}
