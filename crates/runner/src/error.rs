use std::path::PathBuf;

use crate::diag::Diagnostics;

/// Everything that can go wrong in the runner library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec (or command line) that cannot be run: every problem, each with its file, position,
    /// key and what would be valid.
    #[error("{0}")]
    Spec(Box<Diagnostics>),
    /// An input (weights or image) that cannot be fetched or verified.
    #[error("{name}: {message}")]
    Asset {
        /// The asset's name or path.
        name: String,
        /// What failed and how to fix it.
        message: String,
    },
    /// A file that cannot be read or written (the operating system's reason is the source).
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A run that failed while optimising.
    #[error("{0}")]
    Run(String),
    /// The run was interrupted (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
    /// An error of the network.
    #[error(transparent)]
    Vgg(#[from] vgg::Error),
    /// An error of the objective.
    #[error(transparent)]
    Losses(#[from] losses::Error),
    /// An error of the optimizer.
    #[error(transparent)]
    Optim(#[from] optim::Error),
    /// An error of the tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// An error and its causes on one line, each said once: `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.ends_with(&s) {
            out += ": ";
            out += &s;
        }
        cur = c.source();
    }
    out
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message of a panic's payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
