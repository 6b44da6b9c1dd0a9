//! [`KernelCache`]: Winograd-domain kernels kept on disk from one process to the next, and read
//! back by mapping the file.
//!
//! Why: a run's kernels (395 MiB for the layers up to conv5_1 with F(4×4, 3×3)) were
//! transformed afresh by every process, into freshly allocated memory. On the project's
//! virtual machines a first write to memory the host has taken back costs about 3 ms/MiB (the
//! kernel zeroes each page while the host backs it): a one-iteration run at 160×120 spent 46%
//! of its samples in `clear_page_erms`, 0.7–1.6 s of CPU from one process to the next. A mapped
//! file's pages are the page cache's, already backed: mapping 400 MiB and reading a byte of
//! each page took 5 ms where touching as much fresh memory took 0.05–1.5 s. Processes that map
//! the same file also share its pages (a sweep of several processes on one machine).
//!
//! A file is one kernel: a 64-byte header (magic and format version, the tile size, whether it
//! is the input gradient's kernel and its layout, the channel counts, the float count, a hash of
//! the layer's weights and a hash of the data) and the floats, little-endian. It is written under a
//! temporary name and renamed, never changed in place, so a mapping in use is never truncated
//! under its reader. A file whose header or data hash does not match is ignored and rewritten;
//! a file that cannot be written costs only the time the cache would have saved
//! ([`KernelCache::stats`] counts both).

use std::fs::File;
use std::io::Write;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::products::{KernelLayout, PANEL};

/// Magic and format version, the file's first 8 bytes.
const MAGIC: [u8; 8] = *b"GRSWINO\x01";
/// Bytes before the floats (a multiple of 64, so the floats start on a cache line).
const HEADER: usize = 64;

/// Which kernel a file holds: everything its floats follow from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KernelKey {
    /// Output tile size m of F(m×m, 3×3).
    pub tile: usize,
    /// The input gradient's kernel (transposed and flipped) rather than the forward one.
    pub input_grad: bool,
    /// How its floats lie (each instruction set's products read one).
    pub layout: KernelLayout,
    /// Output channels K of the kernel.
    pub k: usize,
    /// Input channels C of the kernel.
    pub c: usize,
    /// Floats of the transformed kernel.
    pub len: usize,
    /// [`hash`] of the layer's weights, `(C_out, C_in, 3, 3)`.
    pub weights: u64,
}

impl KernelKey {
    fn file_name(&self) -> String {
        let dir = if self.input_grad { "grad" } else { "fwd" };
        let layout = match self.layout {
            KernelLayout::Rows => String::new(),
            KernelLayout::Panels => format!("-p{PANEL}"),
        };
        format!("f{}-{dir}{layout}-{}x{}-{:016x}.f32", self.tile, self.k, self.c, self.weights)
    }

    /// The header's second field: whether it is the input gradient's kernel (bit 0) and the
    /// width of its panels from bit 8 (0: rows, as every file before panels, which stay valid).
    fn kind(&self) -> u64 {
        let panel = match self.layout {
            KernelLayout::Rows => 0,
            KernelLayout::Panels => PANEL as u64,
        };
        u64::from(self.input_grad) | panel << 8
    }

    fn header(&self, data_hash: u64) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(&MAGIC);
        let fields =
            [self.tile as u64, self.kind(), self.k as u64, self.c as u64, self.len as u64, self.weights, data_hash];
        for (i, f) in fields.iter().enumerate() {
            h[8 + 8 * i..16 + 8 * i].copy_from_slice(&f.to_le_bytes());
        }
        h
    }
}

/// How the cache has served this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Kernels read from files.
    pub loaded: usize,
    /// Kernels transformed and written.
    pub stored: usize,
    /// Files ignored (damaged, or written for other weights under the same name) or that could
    /// not be written.
    pub failed: usize,
}

/// A folder of transformed kernels ([`crate::Vgg19::with_kernel_cache`]).
#[derive(Debug)]
pub struct KernelCache {
    dir: PathBuf,
    loaded: AtomicUsize,
    stored: AtomicUsize,
    failed: AtomicUsize,
}

impl KernelCache {
    /// A cache in `dir` (created when the first kernel is written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), loaded: AtomicUsize::new(0), stored: AtomicUsize::new(0), failed: AtomicUsize::new(0) }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What it has done so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            loaded: self.loaded.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// The kernel of `key` from its file, or `build()`'s, which is then written for the next
    /// process.
    pub(crate) fn get_or_build<E>(
        &self,
        key: &KernelKey,
        build: impl FnOnce() -> Result<Vec<f32>, E>,
    ) -> Result<Floats, E> {
        let path = self.dir.join(key.file_name());
        match load(&path, key) {
            Some(Ok(f)) => {
                self.loaded.fetch_add(1, Ordering::Relaxed);
                return Ok(f);
            }
            Some(Err(())) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
        let u = build()?;
        debug_assert_eq!(u.len(), key.len);
        match store(&self.dir, &path, key, &u) {
            Ok(()) => self.stored.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
        Ok(Floats::Owned(u))
    }
}

/// A hash of `xs`' bits (four interleaved multiply–rotate lanes, then a 64-bit finaliser): not
/// cryptographic, for telling weights apart and catching damaged files.
pub(crate) fn hash(xs: &[f32]) -> u64 {
    let mut h = Hasher::new();
    h.update(xs);
    h.finish()
}

/// [`hash`] of values that come a part at a time: `update` with each part in order, every part
/// but the last a multiple of 8 floats long, then `finish`: the same as [`hash`] of them all.
pub(crate) struct Hasher {
    lanes: [u64; 4],
    len: u64,
    rest: Vec<f32>,
}

const P: [u64; 4] = [0x9E37_79B9_7F4A_7C15, 0xC2B2_AE3D_27D4_EB4F, 0x1656_67B1_9E37_79F9, 0x85EB_CA77_C2B2_AE63];

impl Hasher {
    pub(crate) fn new() -> Self {
        Self { lanes: P, len: 0, rest: Vec::new() }
    }

    /// The next part; one whose length is not a multiple of 8 must be the last.
    pub(crate) fn update(&mut self, xs: &[f32]) {
        debug_assert!(self.rest.is_empty(), "a part after one of a length not a multiple of 8");
        let mut chunks = xs.chunks_exact(8);
        for ch in &mut chunks {
            for (i, lane) in self.lanes.iter_mut().enumerate() {
                let word = u64::from(ch[2 * i].to_bits()) | u64::from(ch[2 * i + 1].to_bits()) << 32;
                *lane = (*lane ^ word).wrapping_mul(P[i]).rotate_left(29);
            }
        }
        self.rest.extend_from_slice(chunks.remainder());
        self.len += xs.len() as u64;
    }

    pub(crate) fn finish(&self) -> u64 {
        let mut h = self.len;
        for (i, lane) in self.lanes.iter().enumerate() {
            h = (h ^ lane).wrapping_mul(P[(i + 1) % 4]).rotate_left(31);
        }
        for x in &self.rest {
            h = (h ^ u64::from(x.to_bits())).wrapping_mul(P[0]).rotate_left(31);
        }
        // splitmix64's finaliser.
        h ^= h >> 30;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^ (h >> 31)
    }
}

/// The floats of `path` if it holds `key`'s kernel; `Some(Err)` if it exists but does not
/// (damaged, or other weights), `None` if it cannot be opened.
fn load(path: &Path, key: &KernelKey) -> Option<Result<Floats, ()>> {
    let file = File::open(path).ok()?;
    let size = file.metadata().ok().and_then(|m| usize::try_from(m.len()).ok());
    let expected = key.len.checked_mul(4).and_then(|b| b.checked_add(HEADER));
    let Some(len) = expected.filter(|&l| Some(l) == size) else { return Some(Err(())) };
    let Ok(bytes) = Bytes::read(file, len) else { return Some(Err(())) };
    let ok = bytes.all()[..HEADER] == key.header(hash(bytes.floats()));
    Some(if ok { Ok(Floats::Cached(bytes)) } else { Err(()) })
}

/// Writes `u` as `key`'s file at `path` (in `dir`) through a temporary file and a rename.
fn store(dir: &Path, path: &Path, key: &KernelKey, u: &[f32]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // Unique to this writer: other processes (pid) and other threads of this one (count).
    static WRITERS: AtomicUsize = AtomicUsize::new(0);
    let n = WRITERS.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.{}-{n}.tmp", key.file_name(), std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&key.header(hash(u)))?;
        // 1 MiB at a time: first runs at 160×120 (writing 396 MiB) 1.30–1.56 s, against
        // 1.52–2.37 s with a write per float through a buffer (three rounds alternating).
        let mut bytes = Vec::with_capacity(1 << 20);
        for chunk in u.chunks(1 << 18) {
            bytes.clear();
            bytes.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
            f.write_all(&bytes)?;
        }
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A kernel's floats: transformed in this process, or a cache file's.
pub(crate) enum Floats {
    Owned(Vec<f32>),
    Cached(Bytes),
}

impl Deref for Floats {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match self {
            Floats::Owned(v) => v,
            Floats::Cached(b) => b.floats(),
        }
    }
}

/// A cache file's bytes: mapped read-only where the platform allows (64-bit Linux and macOS),
/// else read into memory (aligned for floats).
pub(crate) struct Bytes {
    ptr: *const u8,
    len: usize,
    #[cfg(not(all(any(target_os = "linux", target_os = "macos"), target_pointer_width = "64")))]
    _owned: Vec<f32>,
}

// SAFETY: the bytes are never written after `read` returns (a private, read-only mapping of a
// file that is only ever replaced by rename, never changed in place; or memory this owns).
unsafe impl Send for Bytes {}
// SAFETY: as above.
unsafe impl Sync for Bytes {}

impl Bytes {
    fn all(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` bytes while `self` lives (`read`).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn floats(&self) -> &[f32] {
        let data = &self.all()[HEADER..];
        // SAFETY: the floats start HEADER (a multiple of 64) bytes into a page-aligned mapping
        // or a float-aligned buffer; any bits are a valid f32; little-endian only (`read`).
        unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<f32>(), data.len() / 4) }
    }
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
const MAP_FLAGS: i32 = 0x02; // MAP_PRIVATE
#[cfg(all(target_os = "macos", target_pointer_width = "64"))]
const MAP_FLAGS: i32 = 0x0002; // MAP_PRIVATE

#[cfg(all(any(target_os = "linux", target_os = "macos"), target_pointer_width = "64"))]
extern "C" {
    fn mmap(
        addr: *mut std::ffi::c_void,
        len: usize,
        prot: i32,
        flags: i32,
        fd: i32,
        offset: i64,
    ) -> *mut std::ffi::c_void;
    fn munmap(addr: *mut std::ffi::c_void, len: usize) -> i32;
}

#[cfg(all(any(target_os = "linux", target_os = "macos"), target_pointer_width = "64"))]
impl Bytes {
    /// Maps the first `len` bytes of `file` (which has at least that many) read-only.
    fn read(file: File, len: usize) -> Result<Self, ()> {
        use std::os::fd::AsRawFd;
        const PROT_READ: i32 = 1;
        if !cfg!(target_endian = "little") || len == 0 {
            return Err(());
        }
        // SAFETY: a new private read-only mapping of an open file; the result is checked; the
        // file descriptor may be closed afterwards (the mapping keeps the file).
        let p = unsafe { mmap(std::ptr::null_mut(), len, PROT_READ, MAP_FLAGS, file.as_raw_fd(), 0) };
        if p as isize == -1 {
            return Err(());
        }
        Ok(Self { ptr: p.cast(), len })
    }
}

#[cfg(all(any(target_os = "linux", target_os = "macos"), target_pointer_width = "64"))]
impl Drop for Bytes {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `read`, unmapped once; nothing borrows it past `self`.
        unsafe { munmap(self.ptr.cast_mut().cast(), self.len) };
    }
}

#[cfg(not(all(any(target_os = "linux", target_os = "macos"), target_pointer_width = "64")))]
impl Bytes {
    /// Reads the first `len` bytes of `file` into memory aligned for floats.
    fn read(mut file: File, len: usize) -> Result<Self, ()> {
        use std::io::Read;
        if !cfg!(target_endian = "little") || len % 4 != 0 {
            return Err(());
        }
        let mut owned = vec![0f32; len / 4];
        // SAFETY: the Vec's floats viewed as the bytes they are.
        let bytes = unsafe { std::slice::from_raw_parts_mut(owned.as_mut_ptr().cast::<u8>(), len) };
        file.read_exact(bytes).map_err(|_| ())?;
        Ok(Self { ptr: owned.as_ptr().cast(), len, _owned: owned })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(len: usize, weights: u64) -> KernelKey {
        KernelKey { tile: 4, input_grad: true, layout: KernelLayout::Rows, k: 3, c: 5, len, weights }
    }

    /// [`KernelCache::get_or_build`] with a transform that cannot fail.
    fn get(cache: &KernelCache, key: &KernelKey, build: impl FnOnce() -> Vec<f32>) -> Floats {
        cache.get_or_build::<()>(key, || Ok(build())).unwrap()
    }

    fn floats(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32).map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 1000) as f32 * 0.37 - 150.0).collect()
    }

    #[test]
    fn a_kernel_written_by_one_cache_is_read_back_bit_for_bit_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let u = floats(36 * 15 + 3, 1);
        let k = key(u.len(), 42);
        let first = KernelCache::new(dir.path());
        let built = get(&first, &k, || u.clone());
        assert!(matches!(built, Floats::Owned(_)));
        assert_eq!(first.stats(), CacheStats { loaded: 0, stored: 1, failed: 0 });
        let next = KernelCache::new(dir.path());
        let read = get(&next, &k, || panic!("transformed again although its file was written"));
        assert!(matches!(read, Floats::Cached(_)));
        assert_eq!(
            read.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            u.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(next.stats(), CacheStats { loaded: 1, stored: 0, failed: 0 });
        // Only the kernel's file is left (no temporary file).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_damaged_or_foreign_file_is_rebuilt_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let u = floats(100, 2);
        let k = key(u.len(), 7);
        get(&KernelCache::new(dir.path()), &k, || u.clone());
        let path = dir.path().join(k.file_name());
        let good = std::fs::read(&path).unwrap();
        let mut damaged: Vec<(&str, Vec<u8>)> = vec![("truncated", good[..good.len() - 4].to_vec())];
        let mut flipped = good.clone();
        flipped[HEADER + 40] ^= 0x10;
        damaged.push(("one bit of the data", flipped));
        let mut other = good.clone();
        other[8] = 2; // another tile size under this name
        damaged.push(("another header", other));
        let mut panels = good.clone();
        panels[17] = PANEL as u8; // the panels' layout under the rows' name
        damaged.push(("another layout", panels));
        for (what, bytes) in damaged {
            std::fs::write(&path, &bytes).unwrap();
            let cache = KernelCache::new(dir.path());
            let mut rebuilt = false;
            let f = get(&cache, &k, || {
                rebuilt = true;
                u.clone()
            });
            assert!(rebuilt, "{what}: the file was used");
            assert_eq!(&f[..], &u[..], "{what}");
            assert_eq!(cache.stats(), CacheStats { loaded: 0, stored: 1, failed: 1 }, "{what}");
            assert_eq!(std::fs::read(&path).unwrap(), good, "{what}: not rewritten");
        }
    }

    #[test]
    fn each_layout_has_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (rows, panels) = (floats(40, 5), floats(40, 6));
        let k = key(rows.len(), 9);
        let kp = KernelKey { layout: KernelLayout::Panels, ..k };
        let cache = KernelCache::new(dir.path());
        get(&cache, &k, || rows.clone());
        get(&cache, &kp, || panels.clone());
        assert_eq!(cache.stats(), CacheStats { loaded: 0, stored: 2, failed: 0 });
        let next = KernelCache::new(dir.path());
        assert_eq!(&get(&next, &k, || panic!("rows transformed again"))[..], &rows[..]);
        assert_eq!(&get(&next, &kp, || panic!("panels transformed again"))[..], &panels[..]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn an_unwritable_folder_costs_only_the_transform() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"not a folder").unwrap();
        let cache = KernelCache::new(blocker.join("kernels"));
        let u = floats(10, 3);
        let f = get(&cache, &key(u.len(), 1), || u.clone());
        assert_eq!(&f[..], &u[..]);
        assert_eq!(cache.stats(), CacheStats { loaded: 0, stored: 0, failed: 1 });
    }

    #[test]
    fn the_hash_tells_apart_what_differs_in_one_bit_or_in_length() {
        let u = floats(1001, 4);
        let h = hash(&u);
        for i in [0, 1, 7, 8, 500, 999, 1000] {
            let mut v = u.clone();
            v[i] = f32::from_bits(v[i].to_bits() ^ 1);
            assert_ne!(hash(&v), h, "bit flipped at {i}");
        }
        assert_ne!(hash(&u[..1000]), h);
        assert_ne!(hash(&[0.0; 8]), hash(&[0.0; 9]));
    }

    #[test]
    fn the_hash_of_parts_is_the_hash_of_the_whole() {
        let u = floats(1001, 5);
        for cuts in [vec![], vec![8], vec![8, 16], vec![0, 992], vec![1000]] {
            let mut h = Hasher::new();
            let mut from = 0;
            for &to in cuts.iter().chain([&u.len()]) {
                h.update(&u[from..to]);
                from = to;
            }
            assert_eq!(h.finish(), hash(&u), "parts cut at {cuts:?}");
        }
    }
}
