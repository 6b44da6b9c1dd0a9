//! The experiment runner: TOML specs of style-transfer runs (defaults, sweeps, explicit runs)
//! checked into a plan, executed on CPU or GPU, and written out as images, loss curves, CSVs and
//! contact sheets. The binary `runner` is a thin layer over this library.
//!
//! - [`spec`]: parsing and checking specs; [`params`]: the run parameters and their defaults.
//! - [`assets`]: weights and images fetched by name and hash.
//! - [`run`]: executing one run; [`report`]: run records and experiment outputs.
//! - [`bench`]: timing one evaluation of the objective.
#![deny(missing_docs)]

pub mod assets;
pub mod bench;
mod error;
pub mod output;
pub mod params;
pub mod report;
pub mod run;
pub mod spec;

pub use error::{Error, Result};
