//! Mutations of seed inputs, as proptest strategies: bytes replaced, dictionary tokens inserted,
//! spans deleted or duplicated, the input cut. Positions are fractions of the length, so one
//! mutation applies to any seed.

use proptest::prelude::*;

/// One edit of a byte string.
#[derive(Clone, Debug)]
pub enum Edit {
    /// Replace the byte at the position.
    Byte { at: u32, value: u8 },
    /// Insert a dictionary token.
    Token { at: u32, token: usize },
    /// Delete up to `len` bytes.
    Delete { at: u32, len: u8 },
    /// Copy a span elsewhere (repeats structure: nested tables, repeated chunks).
    Duplicate { from: u32, len: u16, to: u32 },
    /// Cut the input there.
    Cut { at: u32 },
}

/// A seed and the edits applied to it, in order.
#[derive(Clone, Debug)]
pub struct Mutation {
    /// Which seed.
    pub seed: usize,
    /// The edits.
    pub edits: Vec<Edit>,
    /// Whether an edit cut the input.
    pub cut: bool,
    tokens: &'static [&'static [u8]],
}

fn pos(at: u32, len: usize) -> usize {
    (at as u64 * (len as u64 + 1) / (u32::MAX as u64 + 1)) as usize
}

impl Mutation {
    /// The seed with the edits applied.
    pub fn apply(&self, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for e in &self.edits {
            match *e {
                Edit::Byte { at, value } => {
                    if !v.is_empty() {
                        let i = pos(at, v.len() - 1);
                        v[i] = value;
                    }
                }
                Edit::Token { at, token } => {
                    let i = pos(at, v.len());
                    let t = self.tokens[token % self.tokens.len()];
                    v.splice(i..i, t.iter().copied());
                }
                Edit::Delete { at, len } => {
                    let i = pos(at, v.len());
                    let j = (i + len as usize).min(v.len());
                    v.drain(i..j);
                }
                Edit::Duplicate { from, len, to } => {
                    let i = pos(from, v.len());
                    let j = (i + len as usize).min(v.len());
                    let span = v[i..j].to_vec();
                    let k = pos(to, v.len());
                    v.splice(k..k, span);
                }
                Edit::Cut { at } => v.truncate(pos(at, v.len())),
            }
        }
        v
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<u32>(), any::<u8>()).prop_map(|(at, value)| Edit::Byte { at, value }),
        4 => (any::<u32>(), any::<usize>()).prop_map(|(at, token)| Edit::Token { at, token }),
        2 => (any::<u32>(), any::<u8>()).prop_map(|(at, len)| Edit::Delete { at, len }),
        1 => (any::<u32>(), any::<u16>(), any::<u32>()).prop_map(|(from, len, to)| Edit::Duplicate { from, len, to }),
        1 => any::<u32>().prop_map(|at| Edit::Cut { at }),
    ]
}

/// Mutations of one of `seeds` seeds with tokens from `tokens`.
pub fn mutations(seeds: usize, tokens: &'static [&'static [u8]]) -> impl Strategy<Value = Mutation> {
    (0..seeds, prop::collection::vec(edit(), 1..8)).prop_map(move |(seed, edits)| {
        let cut = edits.iter().any(|e| matches!(e, Edit::Cut { .. }));
        Mutation { seed, edits, cut, tokens }
    })
}

/// TOML syntax, the spec's keys and hostile values.
pub const SPEC_TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"{",
    b"}",
    b"=",
    b"\"",
    b"'",
    b",",
    b".",
    b"\n",
    b"#",
    b"[[run]]\nname = \"r\"\n",
    b"[sweep]\n",
    b"[defaults]\n",
    b"[run.sweep]\n",
    b"cumulative",
    b"size = ",
    b"width = ",
    b"height = ",
    b"iterations = ",
    b"style_layers = ",
    b"style_layer_weights = ",
    b"content_layers = ",
    b"style = ",
    b"content = ",
    b"init = ",
    b"optimizer = \"adam\"",
    b"history = ",
    b"style_loss = \"wasserstein\"",
    b"preserve_colors = ",
    b"style_scale = ",
    b"{ image = \"a\", mask = \"m.png\", scale = 0.5 }",
    b"4294967296",
    b"4294967328",
    b"-1",
    b"0",
    b"1e308",
    b"-1e308",
    b"nan",
    b"inf",
    b"9223372036854775807",
    b"[1, 2, 3]",
    b"[[1.0, 5.0]]",
    b"\"relu1_1\"",
    b"{ layer = \"relu1_1\" }",
    b"{ image = \"scream\", weight = 0 }",
    b"\"summary.csv\"",
    b"\"none\"",
    b"\"..\"",
    b"\\u0000",
    b"\xff\xfe",
    b"1979-05-27T07:32:00Z",
    b"true",
];

/// Pickle opcodes and large integers.
pub const PICKLE_TOKENS: &[&[u8]] = &[
    b"(",
    b")",
    b"t",
    b"R",
    b"}",
    b"]",
    b"e",
    b"u",
    b"s",
    b".",
    b"N",
    b"\x88",
    b"\x89",
    b"\x85",
    b"\x86",
    b"\x87",
    b"J\xff\xff\xff\x7f",
    b"J\xff\xff\xff\xff",
    b"K\x00",
    b"M\xff\xff",
    b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"\x8a\x05\x01\x00\x00\x00\x01",
    b"X\xff\xff\xff\x7f",
    b"X\x00\x00\x00\x00",
    b"q\x00",
    b"h\x00",
    b"r\xff\xff\xff\x7f",
    b"j\xff\xff\xff\x7f",
    b"Q",
    b"ctorch\nFloatStorage\n",
    b"ctorch._utils\n_rebuild_tensor_v2\n",
    b"\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x00\x00\x00\x00\x00\x00\x00\x00",
];

/// safetensors header JSON.
pub const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\"shape\":[4294967296,4294967296,1,1]",
    b"\"shape\":[]",
    b"\"data_offsets\":[0,18446744073709551615]",
    b"\"data_offsets\":[100,0]",
    b"\"dtype\":\"F64\"",
    b"\"dtype\":\"U8\"",
    b"\"dtype\":\"XX\"",
    b"\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"\x00\x00\x00\x00\x00\x00\x00\x00",
    b"\"__metadata__\":{}",
    b"1e400",
    b"-1",
];

/// PNG chunks and JPEG markers.
pub const IMAGE_TOKENS: &[&[u8]] = &[
    b"IHDR",
    b"IDAT",
    b"IEND",
    b"PLTE",
    b"tRNS",
    b"\x00\x00\x4e\x20",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\xff\xd8",
    b"\xff\xd9",
    b"\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03",
    b"\xff\xc4",
    b"\xff\xdb",
    b"\xff\xda",
    b"\xff\xdd\x00\x04\x00\x00",
    b"\x89PNG\r\n\x1a\n",
    b"\x10",
    b"\x01",
];
