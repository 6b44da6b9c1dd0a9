//! Enumerations of named values (optimizer, loss form, pooling, line search, device): each names
//! its values once, and parsing, printing, docs and schema follow from those names.

use std::fmt;
use std::str::FromStr;

use serde_json::json;
use toml::Value;

use super::types::{did_you_mean, ParamType, Problem};

/// An enum whose values have names (their spelling in specs and flags).
pub trait Choice: Copy + PartialEq + fmt::Debug + 'static {
    /// Every value, in documentation order.
    const ALL: &'static [Self];
    /// The value's name.
    fn name(self) -> &'static str;
    /// The value named `s`.
    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == s)
    }
}

impl Choice for losses::LossForm {
    const ALL: &'static [Self] = &losses::LossForm::ALL;
    fn name(self) -> &'static str {
        losses::LossForm::name(self)
    }
}

impl Choice for losses::StyleLoss {
    const ALL: &'static [Self] = &losses::StyleLoss::ALL;
    fn name(self) -> &'static str {
        losses::StyleLoss::name(self)
    }
}

impl Choice for vgg::Pooling {
    const ALL: &'static [Self] = &vgg::Pooling::ALL;
    fn name(self) -> &'static str {
        vgg::Pooling::name(self)
    }
}

impl Choice for optim::LineSearch {
    const ALL: &'static [Self] = &optim::LineSearch::ALL;
    fn name(self) -> &'static str {
        optim::LineSearch::name(self)
    }
}

/// The optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// L-BFGS, the paper's.
    Lbfgs,
    /// Adam, neural-style's alternative.
    Adam,
}

impl Choice for OptimizerKind {
    const ALL: &'static [Self] = &[OptimizerKind::Lbfgs, OptimizerKind::Adam];
    fn name(self) -> &'static str {
        match self {
            OptimizerKind::Lbfgs => "lbfgs",
            OptimizerKind::Adam => "adam",
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Colour control (Gatys et al. 2017, §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorControl {
    /// The style's colours, as in the 2016 paper.
    None,
    /// Transfer in luminance only, the output's colour (chrominance) from the photograph.
    Luminance,
    /// Match the style image's colour mean and covariance to the photograph's first.
    Histogram,
}

impl Choice for ColorControl {
    const ALL: &'static [Self] = &[ColorControl::None, ColorControl::Luminance, ColorControl::Histogram];
    fn name(self) -> &'static str {
        match self {
            ColorControl::None => "none",
            ColorControl::Luminance => "luminance",
            ColorControl::Histogram => "histogram",
        }
    }
}

/// Where tensors live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceChoice {
    /// A CUDA GPU when the binary has the `cuda` feature and one is present, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA GPU number N.
    Cuda(usize),
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(0) => f.write_str("cuda"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = Problem;
    fn from_str(s: &str) -> Result<Self, Problem> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(DeviceChoice::Cuda).ok_or_else(|| {
                Problem::new(format!(
                    "`{s}` is not a device; {}",
                    did_you_mean(s, ["auto", "cpu", "cuda", "cuda:N"].into_iter())
                ))
            }),
        }
    }
}

impl ParamType for DeviceChoice {
    fn parse(v: &Value) -> Result<Self, Problem> {
        match v.as_str() {
            Some(s) => s.parse(),
            None => Err(Problem::new("expected auto, cpu, cuda or cuda:N".to_string())),
        }
    }
    fn to_value(&self) -> Option<Value> {
        Some(Value::String(self.to_string()))
    }
    fn describe() -> String {
        "`auto`, `cpu`, `cuda`, `cuda:N`".into()
    }
    fn schema() -> serde_json::Value {
        json!({ "type": "string", "pattern": "^(auto|cpu|cuda|cuda:[0-9]+)$" })
    }
}
