//! `runner report`: docs/ablations.md and its figures, from the ablation experiments' results.

use std::path::Path;

use crate::Result;

/// Builds the report (filled in by the ablations issue).
pub fn build(_results: &Path, _docs: &Path) -> Result<()> {
    Err(crate::Error::Run("not implemented yet".into()))
}
