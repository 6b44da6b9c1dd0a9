/// Everything that can go wrong while building or evaluating the objective.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration that cannot define an objective.
    #[error("{0}")]
    Config(String),
    /// A computation that cannot proceed (a non-finite matrix, an iteration that did not
    /// converge).
    #[error("{0}")]
    Numeric(String),
    /// An error of the network.
    #[error(transparent)]
    Vgg(#[from] vgg::Error),
    /// A network pass made elsewhere ([`crate::NetworkPass`]: a batch of runs) failed.
    #[error("the network pass failed")]
    Pass(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An error of the tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
