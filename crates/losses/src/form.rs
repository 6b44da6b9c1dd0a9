use std::fmt;
use std::str::FromStr;

/// The normalisation of the losses. The reference implementations differ only by constant
/// factors per layer, which change the effective content/style balance and the scale L-BFGS sees.
///
/// For one layer (`N` channels, `M` positions):
///
/// | form        | content                      | style, per layer `l`                          | default layer weight |
/// |-------------|------------------------------|-----------------------------------------------|----------------------|
/// | `seed`      | `mean((F − P)²)`             | `mean(((G − A) / M)²) / N²` = `Σ(G − A)² / (N⁴M²)` | 1               |
/// | `paper`     | `½ Σ(F − P)²` (eq. 1)        | `Σ(G − A)² / (4N²M²)` (eq. 4)                  | `1/|L|` (eq. 5)      |
/// | `jcjohnson` | `mean((F − P)²)`             | `mean(((G − A) / (NM))²)` = `Σ(G − A)² / (N⁴M²)` | 1                  |
///
/// `seed` is the seed project's and Gatys' own PyTorch code; `jcjohnson` is neural-style's (its
/// formula equals `seed`'s, written differently: the two differ only in the default weights).
/// The total is `content_weight · Σ_l content_l + style_weight · Σ_l w_l · style_l`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LossForm {
    /// The seed project's / Gatys' code (the default).
    #[default]
    Seed,
    /// Equations 1, 4 and 5 of the paper.
    Paper,
    /// Justin Johnson's neural-style.
    JcJohnson,
}

impl LossForm {
    /// Every form, for listing valid values.
    pub const ALL: [LossForm; 3] = [LossForm::Seed, LossForm::Paper, LossForm::JcJohnson];

    /// The name used in specs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LossForm::Seed => "seed",
            LossForm::Paper => "paper",
            LossForm::JcJohnson => "jcjohnson",
        }
    }

    /// `c` in `content = c · Σ(F − P)²` for a layer of `numel` activations.
    pub(crate) fn content_factor(self, numel: usize) -> f64 {
        match self {
            LossForm::Paper => 0.5,
            LossForm::Seed | LossForm::JcJohnson => 1.0 / numel as f64,
        }
    }

    /// `c` in `style = c · Σ(G − A)²` for a layer of `n` channels and `m` positions.
    pub(crate) fn style_factor(self, n: usize, m: usize) -> f64 {
        self.style_factor_f64(n, m as f64)
    }

    /// [`LossForm::style_factor`] for a (guided) mass of `m` positions.
    pub(crate) fn style_factor_f64(self, n: usize, m: f64) -> f64 {
        let n = n as f64;
        match self {
            LossForm::Paper => 1.0 / (4.0 * n * n * m * m),
            LossForm::Seed | LossForm::JcJohnson => 1.0 / (n * n * n * n * m * m),
        }
    }

    /// The weight `w_l` of each of `count` style layers when the user gives none.
    pub fn default_layer_weight(self, count: usize) -> f64 {
        match self {
            LossForm::Paper => 1.0 / count.max(1) as f64,
            LossForm::Seed | LossForm::JcJohnson => 1.0,
        }
    }
}

impl fmt::Display for LossForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LossForm {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LossForm::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| crate::Error::Config(format!("unknown loss form `{s}` (valid: seed, paper, jcjohnson)")))
    }
}
