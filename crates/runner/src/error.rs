use std::path::PathBuf;

/// Everything that can go wrong in the runner library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec that cannot be run: the file, the key and what would be valid.
    #[error("{file}: {key}: {message}")]
    Spec {
        /// The spec file (or `--option` for command-line overrides).
        file: String,
        /// The offending key, dotted (`run[2].style_layers`).
        key: String,
        /// What is wrong and what would be valid.
        message: String,
    },
    /// An input (weights or image) that cannot be fetched or verified.
    #[error("{name}: {message}")]
    Asset {
        /// The asset's name or path.
        name: String,
        /// What failed and how to fix it.
        message: String,
    },
    /// A file that cannot be read or written.
    #[error("{path}: {source}")]
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

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
