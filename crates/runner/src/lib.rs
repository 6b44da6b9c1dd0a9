//! The experiment runner: TOML specs of style-transfer runs (defaults, sweeps, explicit runs)
//! checked into a plan, executed on CPU or GPU, and written out as images, loss curves, CSVs and
//! contact sheets. The binary `runner` is a thin layer over this library. Data flows
//! spec → plan → run → record → outputs:
//!
//! - [`params`]: the one declaration of a run's parameters (types, ranges, defaults, docs).
//! - [`spec`]: spec files (and command-line overrides) into a checked [`spec::Experiment`].
//! - [`run`]: executing one run; [`record`]: its `run.toml` and summary.
//! - [`cluster`]: shards, claims on a shared folder, outputs collected from run folders.
//! - [`report`]: experiment outputs (summary, contact sheet, curves) and the ablation report;
//!   [`output`]: images, CSVs and plots.
//! - [`serve`]: the live view of a sweep in a browser.
//! - [`assets`]: weights and images fetched by name and hash; [`fsutil`]: atomic writes and
//!   hashing; [`device`]: devices and process memory; [`bench`]: timing one evaluation.
#![deny(missing_docs)]

pub mod assets;
pub mod bench;
pub mod cluster;
pub mod device;
pub mod diag;
mod error;
pub mod fsutil;
pub mod output;
pub mod params;
pub mod record;
pub mod report;
pub mod run;
pub mod serve;
pub mod spec;

pub use error::{chain, Error, Result};
