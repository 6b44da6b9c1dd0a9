//! The layers of VGG19 under the names of Gatys et al.: `conv1_1` … `conv5_4`, `relu1_1` …
//! `relu5_4`, `pool1` … `pool5`.
//!
//! The network is a fixed sequence of *stages*; every stage has one name. A [`Layer`] is parsed
//! from that name, knows its place in the sequence and which convolution it belongs to, so no
//! code anywhere needs a magic index.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Number of 3×3 convolutions in each of VGG19's five blocks.
pub const CONVS_PER_BLOCK: [usize; 5] = [2, 2, 4, 4, 4];

/// Output channels of the convolutions of each block.
pub const CHANNELS_PER_BLOCK: [usize; 5] = [64, 128, 256, 512, 512];

/// Number of convolutions in VGG19's feature part.
pub const NUM_CONVS: usize = 16;

/// One 3×3 convolution of VGG19, `conv{block}_{index}` in the paper's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConvId {
    block: u8,
    index: u8,
}

impl ConvId {
    /// The convolution `conv{block}_{index}`, if VGG19 has it (block 1–5, index from 1).
    pub fn new(block: usize, index: usize) -> Option<Self> {
        let n = *CONVS_PER_BLOCK.get(block.checked_sub(1)?)?;
        (1..=n).contains(&index).then_some(Self { block: block as u8, index: index as u8 })
    }

    /// Every convolution, in network order.
    pub fn all() -> impl Iterator<Item = ConvId> {
        CONVS_PER_BLOCK
            .iter()
            .enumerate()
            .flat_map(|(b, &n)| (1..=n).map(move |i| ConvId { block: b as u8 + 1, index: i as u8 }))
    }

    /// The block, 1 to 5.
    pub fn block(self) -> usize {
        self.block as usize
    }

    /// The position inside the block, from 1.
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// Position among the 16 convolutions, from 0.
    pub fn ordinal(self) -> usize {
        CONVS_PER_BLOCK[..self.block() - 1].iter().sum::<usize>() + self.index() - 1
    }

    /// Input channels of this convolution (3 for `conv1_1`).
    pub fn in_channels(self) -> usize {
        match (self.block(), self.index()) {
            (1, 1) => 3,
            (b, 1) => CHANNELS_PER_BLOCK[b - 2],
            (b, _) => CHANNELS_PER_BLOCK[b - 1],
        }
    }

    /// Output channels of this convolution.
    pub fn out_channels(self) -> usize {
        CHANNELS_PER_BLOCK[self.block() - 1]
    }

    /// Whether this is the last convolution of its block (a pooling layer follows it).
    pub fn ends_block(self) -> bool {
        self.index() == CONVS_PER_BLOCK[self.block() - 1]
    }
}

/// A named layer of VGG19: a convolution's output, its ReLU, or a block's pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Output of a convolution, before its ReLU (`conv4_2`).
    Conv(ConvId),
    /// Output of the ReLU after a convolution (`relu4_2`). Gatys et al.'s "conv4_2" responses
    /// are these rectified ones, as in their own code.
    Relu(ConvId),
    /// Output of the 2×2 pooling that ends a block, 1 to 5 (`pool4`).
    Pool(u8),
}

impl Layer {
    /// Every layer, in network order: `conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, …`.
    pub fn all() -> Vec<Layer> {
        let mut out = Vec::with_capacity(NUM_CONVS * 2 + 5);
        for c in ConvId::all() {
            out.push(Layer::Conv(c));
            out.push(Layer::Relu(c));
            if c.ends_block() {
                out.push(Layer::Pool(c.block));
            }
        }
        out
    }

    /// Position in network order (see [`Layer::all`]), from 0. Deeper layers have larger positions.
    pub fn position(self) -> usize {
        match self {
            Layer::Conv(c) => 2 * c.ordinal() + c.block() - 1,
            Layer::Relu(c) => 2 * c.ordinal() + c.block(),
            Layer::Pool(b) => {
                let convs: usize = CONVS_PER_BLOCK[..b as usize].iter().sum();
                2 * convs + b as usize - 1
            }
        }
    }

    /// The convolution whose output feeds this layer (for a pooling layer, the last of its block).
    pub fn conv(self) -> ConvId {
        match self {
            Layer::Conv(c) | Layer::Relu(c) => c,
            Layer::Pool(b) => ConvId { block: b, index: CONVS_PER_BLOCK[b as usize - 1] as u8 },
        }
    }

    /// How many 2×2 poolings (stride 2, rounding down) lie between the input and this layer:
    /// its grid is the input's halved this many times.
    pub fn poolings_before(self) -> usize {
        match self {
            Layer::Conv(c) | Layer::Relu(c) => c.block() - 1,
            Layer::Pool(b) => b as usize,
        }
    }

    /// Number of channels of this layer's output.
    pub fn channels(self) -> usize {
        self.conv().out_channels()
    }

    /// The paper's name of this layer.
    pub fn name(self) -> String {
        self.to_string()
    }
}

impl PartialOrd for Layer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Layer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.position().cmp(&other.position())
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Conv(c) => write!(f, "conv{}_{}", c.block, c.index),
            Layer::Relu(c) => write!(f, "relu{}_{}", c.block, c.index),
            Layer::Pool(b) => write!(f, "pool{b}"),
        }
    }
}

impl fmt::Display for ConvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conv{}_{}", self.block, self.index)
    }
}

impl FromStr for Layer {
    type Err = Error;

    /// Parses a paper name; an unknown name is refused with the nearest valid one.
    fn from_str(s: &str) -> Result<Self, Error> {
        let wanted = s.trim();
        let all = Layer::all();
        if let Some(l) = all.iter().find(|l| l.to_string() == wanted) {
            return Ok(*l);
        }
        let names: Vec<String> = all.iter().map(|l| l.to_string()).collect();
        let nearest = names
            .iter()
            .min_by_key(|n| strsim::levenshtein(n, &wanted.to_ascii_lowercase()))
            .cloned()
            .unwrap_or_default();
        Err(Error::UnknownLayer { name: s.to_string(), nearest, valid: names.join(", ") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_positions_are_network_order() {
        let all = Layer::all();
        assert_eq!(all.len(), 37);
        for (i, l) in all.iter().enumerate() {
            assert_eq!(l.position(), i, "{l}");
            assert_eq!(l.to_string().parse::<Layer>().unwrap(), *l);
        }
        assert_eq!(all[0].to_string(), "conv1_1");
        assert_eq!(all[4].to_string(), "pool1");
        assert_eq!(all[36].to_string(), "pool5");
        assert!("relu4_2".parse::<Layer>().unwrap() < "relu5_1".parse::<Layer>().unwrap());
    }

    #[test]
    fn unknown_names_are_refused_with_nearest_match() {
        let e = "relu4_5".parse::<Layer>().unwrap_err().to_string();
        assert!(e.contains("relu4_5") && e.contains("relu4_"), "{e}");
        let e = "conv6_1".parse::<Layer>().unwrap_err().to_string();
        assert!(e.contains("valid layers"), "{e}");
        let e = "Relu1_1".parse::<Layer>().unwrap_err().to_string();
        assert!(e.contains("did you mean `relu1_1`"), "{e}");
    }

    #[test]
    fn channels_follow_the_architecture() {
        let c = ConvId::new(3, 1).unwrap();
        assert_eq!((c.in_channels(), c.out_channels()), (128, 256));
        assert_eq!(ConvId::new(1, 1).unwrap().in_channels(), 3);
        assert!(ConvId::new(1, 3).is_none() && ConvId::new(6, 1).is_none());
        assert_eq!(ConvId::all().count(), NUM_CONVS);
        assert_eq!(Layer::Pool(4).conv().to_string(), "conv4_4");
        let before = |s: &str| s.parse::<Layer>().unwrap().poolings_before();
        assert_eq!(
            [before("relu1_1"), before("pool1"), before("conv2_1"), before("relu5_4"), before("pool5")],
            [0, 1, 1, 4, 5]
        );
    }
}
