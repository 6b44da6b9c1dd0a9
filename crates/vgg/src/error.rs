use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layer name that VGG19 does not have.
    #[error("unknown layer `{name}`: did you mean `{nearest}`? (valid layers: {valid})")]
    UnknownLayer {
        /// The name given.
        name: String,
        /// The valid name closest to it.
        nearest: String,
        /// Every valid name.
        valid: String,
    },
    /// A weights file that cannot be read as the format it claims.
    #[error("weights file {path}: {reason}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An image file that cannot be read or written.
    #[error("image {path}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's or encoder's error.
        #[source]
        source: image::ImageError,
    },
    /// An image file refused before or instead of decoding (truncated, too large, unknown).
    #[error("image {path}: {reason}")]
    BadImage {
        /// The file.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// An input or output file that cannot be opened, read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A name that is none of the valid ones (pooling, algorithm).
    #[error("`{name}` is not a valid {what}; did you mean `{nearest}`? (valid: {valid})")]
    UnknownName {
        /// What was being named.
        what: &'static str,
        /// The name given.
        name: String,
        /// The valid name closest to it.
        nearest: String,
        /// Every valid name.
        valid: String,
    },
    /// A tensor whose shape does not fit the operation.
    #[error("{0}")]
    Shape(String),
    /// An error of the tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
