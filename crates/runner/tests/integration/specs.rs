//! The spec format: expansion of sweeps, cumulative lists, explicit runs, precedence, and every
//! refusal, each with its file, position, key and valid values.

use runner::params::{Init, RunParams, PARAMS};
use runner::spec::{parse, parse_text, Experiment, Limits, Overrides};

fn plan(text: &str) -> Experiment {
    parse_text(text, "exp.toml").unwrap_or_else(|e| panic!("the spec should be accepted: {e}"))
}

fn err(text: &str) -> String {
    parse_text(text, "exp.toml").map(|_| ()).expect_err("the spec should be refused").to_string()
}

fn err_with(text: &str, overrides: &Overrides) -> String {
    parse(text, "exp.toml", overrides, &Limits::default()).map(|_| ()).expect_err("should be refused").to_string()
}

#[test]
fn sweeps_are_cartesian_products_and_runs_are_named_by_their_values() {
    let e = plan(
        r#"
        name = "grid"
        [defaults]
        size = 128
        [sweep]
        style_weight = [1e2, 1e4]
        seed = [0, 1, 2]
        "#,
    );
    assert_eq!(e.runs.len(), 6);
    assert_eq!(e.runs[0].name, "seed=0_style_weight=100");
    assert_eq!(e.runs[5].params.start.seed.0, 2);
    assert_eq!(e.runs[5].params.objective.style_weight.0, 1e4);
    assert_eq!(e.runs[5].params.geometry.size.map(|s| s.0), Some(128));
    assert_eq!(e.varying_keys, ["seed", "style_weight"]);
}

#[test]
fn cumulative_lists_expand_to_growing_prefixes() {
    let e = plan(
        r#"
        name = "style_recon"
        [defaults]
        content_layers = []
        init = "noise"
        [sweep]
        style_layers = { cumulative = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"] }
        "#,
    );
    let lens: Vec<usize> = e.runs.iter().map(|r| r.params.objective.style_layers.0.len()).collect();
    assert_eq!(lens, [1, 2, 3, 4, 5]);
    assert_eq!(e.runs[2].swept[0].label, "relu1_1+relu2_1+relu3_1");
    assert!(e
        .runs
        .iter()
        .all(|r| r.params.objective.content_layers.0.is_empty() && r.params.start.init == Init::Noise));
}

#[test]
fn explicit_runs_with_their_own_sweeps() {
    let e = plan(
        r#"
        name = "init"
        [[run]]
        name = "from_content"
        init = "content"
        [[run]]
        name = "from_noise"
        init = "noise"
        [run.sweep]
        seed = [0, 1]
        [[run]]
        name = "blend"
        style = [{ image = "starry_night", weight = 3 }, "scream"]
        style_layers = [{ layer = "relu1_1", weight = 0.5 }, { layer = "relu2_1" }]
        "#,
    );
    let names: Vec<&str> = e.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["from_content", "from_noise_seed=0", "from_noise_seed=1", "blend"]);
    let blend = &e.runs[3].params;
    assert_eq!(blend.inputs.style.0.len(), 2);
    assert_eq!((blend.inputs.style.0[0].weight, blend.inputs.style.0[1].weight), (3.0, 1.0));
    assert_eq!(blend.style_layer_weights(), Some(vec![0.5, 1.0]));
    assert!(e.varying_keys.contains(&"init".to_string()) && e.varying_keys.contains(&"seed".to_string()));
}

/// Issue 11: `[sweep] style_layers` with `style_layer_weights` kept the layers and dropped the
/// weights (axes were applied alphabetically and `style_layers` reset them). Each key now sets
/// its own parameter only: both orders of the file give the same plan, weights kept.
#[test]
fn sweep_keys_never_reset_each_other_whatever_their_order() {
    let a = plan(
        "name = \"x\"\n[sweep]\nstyle_layers = [[\"relu1_1\", \"relu2_1\"]]\nstyle_layer_weights = [[1.0, 5.0]]\n",
    );
    let b = plan(
        "name = \"x\"\n[sweep]\nstyle_layer_weights = [[1.0, 5.0]]\nstyle_layers = [[\"relu1_1\", \"relu2_1\"]]\n",
    );
    assert_eq!(a.runs[0].params.style_layer_weights(), Some(vec![1.0, 5.0]));
    assert_eq!(a.runs[0].name, "style_layer_weights=1+5_style_layers=relu1_1+relu2_1");
    assert_eq!(a.runs, b.runs);
}

#[test]
fn resolved_parameters_round_trip_through_run_toml_for_every_key() {
    // Every key set to a value other than its default, learning_rate included.
    let text = r#"
        name = "all"
        [defaults]
        content = "photos/me.jpg"
        style = [
            { image = "scream", weight = 2.0, scale = 0.5, mask = "masks/left.png", style_mask = "masks/sky.png" },
            "shipwreck",
        ]
        weights = "my/vgg.safetensors"
        width = 320
        height = 200
        scales = { start = 100, factor = 1.5 }
        init = "photos/start.png"
        seed = 7
        noise_std = 12.5
        content_layers = []
        style_layers = [{ layer = "relu1_1", weight = 0.5 }, { layer = "relu3_1", weight = 2.0 }]
        content_weight = 3.0
        style_weight = 1e5
        tv_weight = 1e-3
        loss_form = "paper"
        style_loss = "wasserstein"
        pooling = "avg"
        preserve_colors = "histogram"
        style_scale = 1.5
        optimizer = "lbfgs"
        iterations = { first = 42, rest = 10 }
        max_evals = 50
        learning_rate = 0.5
        history = 7
        line_search = "strong_wolfe"
        guard = false
        average = 0.99
        save_every = 3
        checkpoint_interval = 30
        device = "cpu"
    "#;
    let p = plan(text).runs[0].params.clone();
    let t = p.to_table();
    let set: Vec<&str> = t.keys().map(String::as_str).collect();
    for param in PARAMS {
        // Only style_layer_weights is unset here (the weights are inline); size gives way to
        // width/height; the optimizer stays L-BFGS so that its keys apply (Adam's below).
        if !["style_layer_weights", "size", "optimizer", "carry_moments"].contains(&param.key) {
            assert!(set.contains(&param.key), "{} is missing from the record", param.key);
            assert_ne!((param.get)(&p), (param.default)(), "{} should differ from its default in this test", param.key);
        }
    }
    let back = RunParams::from_table(&t).unwrap();
    assert_eq!(back, p);
    let s = &back.inputs.style.0[0];
    assert_eq!((s.scale.0, s.mask.as_ref().map(|m| m.0.as_str())), (0.5, Some("masks/left.png")));
    assert_eq!(s.style_mask.as_ref().map(|m| m.0.as_str()), Some("masks/sky.png"));
    // A style without the new keys is recorded as before they existed (identities unchanged).
    let plain = plan("name = \"x\"\n").runs[0].params.to_table();
    assert_eq!(plain["style"].to_string(), r#"[{ image = "starry_night", weight = 1.0 }]"#);
    // style_layer_weights as its own key, and Adam's learning rate.
    let q = plan("name = \"x\"\n[defaults]\noptimizer = \"adam\"\nstyle_layer_weights = [1, 2, 3, 4, 5]\n").runs[0]
        .params
        .clone();
    assert_eq!(q.optimizer.learning_rate.map(|r| r.0), Some(10.0), "Adam's default step is resolved");
    assert_eq!(RunParams::from_table(&q.to_table()).unwrap(), q);
    assert!(!q.to_table().contains_key("history"), "L-BFGS keys are left out of an Adam run's record");
    assert!(!q.to_table().contains_key("carry_moments"), "carry_moments needs scales");
    let a = plan("name = \"x\"\n[defaults]\noptimizer = \"adam\"\nsize = 256\nscales = [64, 128]\niterations = [9, 8, 7]\ncarry_moments = true\n")
        .runs[0]
        .params
        .clone();
    assert_eq!(a.to_table()["carry_moments"], toml::Value::Boolean(true));
    assert_eq!(RunParams::from_table(&a.to_table()).unwrap(), a);
    let stages: Vec<(u32, usize)> = a.stages((256, 192)).unwrap().iter().map(|s| (s.side, s.iterations)).collect();
    assert_eq!(stages, [(64, 9), (128, 8), (256, 7)]);
}

#[test]
fn dry_run_output_parses_back_to_the_same_plan() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut specs: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    specs.retain(|p| p.extension().is_some_and(|x| x == "toml"));
    assert!(specs.len() >= 11, "every shipped experiment: {specs:?}");
    for path in specs {
        let spec = path.display().to_string();
        let mut o = Overrides::default();
        // Small, to be quick; coarse-to-fine specs keep their sizes (their stages and
        // per-stage iterations are made for them).
        if !std::fs::read_to_string(&path).unwrap().contains("\nscales") {
            o.set("size", "64");
        }
        let e = runner::spec::load(&path, &o, &Limits::default()).unwrap();
        let again =
            parse_text(&e.to_spec(), "dry-run.toml").unwrap_or_else(|err| panic!("{spec}: {err}\n{}", e.to_spec()));
        assert_eq!(again.runs.len(), e.runs.len(), "{spec}");
        for (a, b) in e.runs.iter().zip(&again.runs) {
            assert_eq!((&a.name, &a.params), (&b.name, &b.params), "{spec}");
        }
    }
}

#[test]
fn unknown_keys_are_refused_with_the_nearest_valid_one_and_their_position() {
    let m = err("name = \"x\"\n[defaults]\nstyle_wieght = 3\n");
    assert!(m.contains("exp.toml:3:1: defaults.style_wieght") && m.contains("did you mean `style_weight`"), "{m}");
    let m = err("name = \"x\"\n[sweeps]\nseed = [1]\n");
    assert!(m.contains("unknown key `sweeps`") && m.contains("did you mean `sweep`"), "{m}");
    let m = err("name = \"x\"\n[[run]]\nname = \"a\"\nitertions = 3\n");
    assert!(m.contains("run[0].itertions") && m.contains("iterations"), "{m}");
    let m = err("name = \"x\"\n[[run]]\nname = \"a\"\nstyle = [{ image = \"scream\", wieght = 1 }]\n");
    assert!(m.contains("run[0].style[0].wieght") && m.contains("did you mean `weight`"), "{m}");
    let m = err("name = \"x\"\nsize = 64\n");
    assert!(m.contains("run parameters go under [defaults]"), "{m}");
}

#[test]
fn unknown_layers_are_refused_with_the_nearest_layer() {
    let m = err("name = \"x\"\n[defaults]\ncontent_layers = [\"relu4_5\"]\n");
    assert!(m.contains("defaults.content_layers[0]") && m.contains("relu4_5") && m.contains("valid layers"), "{m}");
    let m = err("name = \"x\"\n[sweep]\nstyle_layers = { cumulative = [\"relu1_1\", \"conv9_1\"] }\n");
    assert!(m.contains("conv9_1") && m.contains("sweep.style_layers"), "{m}");
}

#[test]
fn bad_values_are_refused_with_the_valid_ones() {
    for (text, key, hint) in [
        ("[defaults]\noptimizer = \"sgd\"", "defaults.optimizer", "valid: lbfgs, adam"),
        ("[defaults]\nline_search = \"wolfe\"", "defaults.line_search", "strong_wolfe"),
        ("[defaults]\nloss_form = \"gatys\"", "defaults.loss_form", "seed, paper, jcjohnson"),
        ("[defaults]\npooling = \"mean\"", "defaults.pooling", "max, avg"),
        ("[defaults]\ndevice = \"gpu\"", "defaults.device", "cuda:N"),
        ("[defaults]\niterations = 0", "defaults.iterations", "1 … 100000000"),
        ("[defaults]\nstyle_weight = -1", "defaults.style_weight", "≥ 0"),
        ("[defaults]\nsize = \"big\"", "defaults.size", "16 … 16384"),
        ("[defaults]\nwidth = 300", "defaults.width", "both"),
        ("[defaults]\nstyle_layer_weights = [1, 2]", "style_layer_weights", "2 weights for 5"),
        ("[sweep]\nseed = []", "sweep.seed", "non-empty"),
        ("[sweep]\nseed = [0, -1]", "sweep.seed[1]", "out of range"),
        ("[defaults]\ncontent_layers = []\nstyle_layers = []", "run `run`", "nothing to optimise"),
    ] {
        let m = err(&format!("name = \"x\"\n{text}\n"));
        assert!(m.contains(key) && m.contains(hint), "{text}: {m}");
    }
    assert!(err("description = \"no name\"").contains("missing"));
    let m = err("name = \"x\"\n[[run]]\nname = \"a\"\n[[run]]\nname = \"a\"\n");
    assert!(m.contains("two runs are named `a`"), "{m}");
}

/// Issue 11: sizes wrapped around u32 (`4294967328` became 32); now every number is checked
/// before it is narrowed, and command-line values pass the same checks as the spec's.
#[test]
fn numbers_are_checked_before_narrowing_on_every_surface() {
    for v in ["4294967328", "4294967296", "0", "1", "15", "16385", "-3", "1.5"] {
        let m = err(&format!("name = \"x\"\n[defaults]\nsize = {v}\n"));
        assert!(m.contains("defaults.size") && m.contains("16 … 16384"), "size = {v}: {m}");
        let mut o = Overrides::default();
        o.set("size", v);
        let m = err_with("name = \"x\"\n", &o);
        assert!(m.contains("command line: --size") && m.contains("16 … 16384"), "--size {v}: {m}");
    }
    let mut o = Overrides::default();
    o.set("iterations", "0");
    let m = err_with("name = \"x\"\n", &o);
    assert!(m.contains("--iterations") && m.contains("out of range"), "{m}");
    assert_eq!(plan("name = \"x\"\n[defaults]\nsize = 16384\n").runs[0].params.geometry.size.map(|s| s.0), Some(16384));
}

/// Issue 11: a key given in two places where one would silently replace the other is refused,
/// naming both places; the size rule cannot be ignored.
#[test]
fn a_key_in_two_places_is_refused_naming_both() {
    let m = err("name = \"x\"\n[defaults]\nwidth = 300\nheight = 200\n[sweep]\nsize = [128, 256]\n");
    assert!(m.contains("size (from [sweep]) and width/height (from [defaults])"), "{m}");
    let m = err("name = \"x\"\n[sweep]\nseed = [1, 2]\n[[run]]\nname = \"a\"\nseed = 5\n");
    assert!(
        m.contains("exp.toml:6:8: run[0].seed") && m.contains("also swept in the top-level [sweep] (exp.toml:3)"),
        "{m}"
    );
    let m = err("name = \"x\"\n[sweep]\nseed = [1, 2]\n[[run]]\nname = \"a\"\n[run.sweep]\nseed = [3]\n");
    assert!(m.contains("run[0].sweep.seed") && m.contains("sweep it in one place"), "{m}");
    let m = err("name = \"x\"\n[[run]]\nname = \"a\"\nseed = 1\n[run.sweep]\nseed = [3]\n");
    assert!(m.contains("also set in this [[run]] (exp.toml:4)"), "{m}");
    // The documented precedence that stays: [[run]] over [defaults], command line over all.
    let e = plan("name = \"x\"\n[defaults]\nseed = 1\n[[run]]\nname = \"a\"\nseed = 5\n");
    assert_eq!(e.runs[0].params.start.seed.0, 5);
    let mut o = Overrides::default();
    o.set("size", "96");
    let e = parse("name = \"x\"\n[defaults]\nwidth = 300\nheight = 200\n", "exp.toml", &o, &Limits::default()).unwrap();
    let g = &e.runs[0].params.geometry;
    assert_eq!((g.size.map(|s| s.0), g.width, g.height), (Some(96), None, None), "--size replaces width and height");
}

#[test]
fn meaningless_combinations_are_refused_with_the_reason() {
    let m = err("name = \"x\"\n[defaults]\nstyle_layers = [{layer=\"relu1_1\"},{layer=\"relu1_1\"}]\n");
    assert!(m.contains("defaults.style_layers[1]") && m.contains("listed twice"), "{m}");
    let m = err("name = \"x\"\n[defaults]\ncontent_weight = 0\nstyle_weight = 0\n");
    assert!(m.contains("nothing to optimise"), "{m}");
    for key in ["history = 5", "line_search = \"strong_wolfe\"", "guard = false"] {
        let m = err(&format!("name = \"x\"\n[defaults]\noptimizer = \"adam\"\n{key}\n"));
        assert!(m.contains("applies to L-BFGS only") && m.contains("adam") && m.contains("[defaults]"), "{key}: {m}");
    }
    let m =
        err("name = \"x\"\n[defaults]\nstyle_layers = [{layer=\"relu1_1\", weight=2}]\nstyle_layer_weights = [1]\n");
    assert!(m.contains("given twice"), "{m}");
    // Coarse-to-fine schedules: per-stage counts must match the stages, the stages must end at
    // the output, and Adam's moments are Adam's.
    let m = err("name = \"x\"\n[defaults]\nsize = 512\nscales = [128, 256]\niterations = [100, 50]\n");
    assert!(m.contains("2 iteration counts for 3 stages (128, 256, 512 px)") && m.contains("iterations"), "{m}");
    let m = err("name = \"x\"\n[defaults]\nsize = 512\nscales = [128, 1024]\n");
    assert!(m.contains("scales") && m.contains("above the output's long side 512"), "{m}");
    let m = err("name = \"x\"\n[defaults]\nsize = 512\nscales = [256, 128]\n");
    assert!(m.contains("scales") && m.contains("must increase"), "{m}");
    let m = err("name = \"x\"\n[defaults]\nscales = [128]\ncarry_moments = true\n");
    assert!(m.contains("applies to Adam with `scales` only"), "{m}");
    let m = err("name = \"x\"\n[defaults]\nscales = { start = 64 }\n");
    assert!(m.contains("defaults.scales") && m.contains("missing `factor`"), "{m}");
}

#[test]
fn names_that_cannot_be_folders_are_refused_while_planning() {
    for name in ["summary.csv", "grid.png", "curves.png", "index.html"] {
        let m = err(&format!("name = \"x\"\n[[run]]\nname = \"{name}\"\n"));
        assert!(m.contains("reserved"), "{name}: {m}");
    }
    let long = "a".repeat(256);
    let m = err(&format!("name = \"x\"\n[[run]]\nname = \"{long}\"\n"));
    assert!(m.contains("256 bytes is too long: at most 200"), "{m}");
    let m = err(&format!("name = \"{long}\"\n"));
    assert!(m.contains("too long"), "{m}");
    let m = err("name = \"../up\"\n");
    assert!(m.contains("is not a name"), "{m}");
}

/// Issue 11: a 200 × 200 × 200 sweep made `--dry-run` abort allocating 3 GiB; the count is now
/// checked before anything is expanded.
#[test]
fn huge_sweeps_are_refused_before_they_are_expanded() {
    let values = (0..200).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let text = format!(
        "name = \"x\"\n[sweep]\nseed = [{values}]\niterations = [{}]\nhistory = [{}]\n",
        (1..=200).map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
        (1..=200).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
    );
    let t = std::time::Instant::now();
    let m = err(&text);
    assert!(m.contains("8000000 runs, more than the limit of 10000") && m.contains("--max-runs"), "{m}");
    assert!(t.elapsed().as_secs() < 5, "refused without expanding");
    let ok =
        parse(&text.replace("history = [", "# ["), "exp.toml", &Overrides::default(), &Limits { max_runs: 40_000 });
    assert_eq!(ok.unwrap().runs.len(), 40_000);
}

#[test]
fn syntax_errors_show_line_column_and_text() {
    let m = err("name = \"x\"\n[defaults]\nsize = \"abc\n");
    assert!(m.contains("exp.toml:3:") && m.contains("3 | size = \"abc") && m.contains('^'), "{m}");
    let m = err("name = \"x\"\n[defaults\n");
    assert!(m.contains("exp.toml:2:"), "{m}");
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let m =
        err("name = \"x\"\n[defaults]\noptimizer = \"sgd\"\ninit = \"nosie\"\nsize = 4294967328\nstyle_wieght = 3\n");
    assert!(m.starts_with("4 problems:"), "{m}");
    let pos: Vec<usize> = ["optimizer", "init", "size", "style_wieght"]
        .iter()
        .map(|k| m.find(&format!("defaults.{k}")).unwrap())
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "in file order: {m}");
    assert!(m.contains("did you mean `noise`") && m.contains("content, style, noise"), "{m}");
}

#[test]
fn the_docs_table_and_the_schema_are_generated_and_current() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let md = std::fs::read_to_string(docs.join("experiments.md")).unwrap();
    let fresh = runner::params::docs::splice(&md).expect("the markers of the generated tables");
    assert!(fresh == md, "docs/experiments.md is stale: run `cargo run -p runner -- schema --update docs`");
    let schema = serde_json::to_string_pretty(&runner::params::docs::schema()).unwrap() + "\n";
    let committed = std::fs::read_to_string(docs.join("spec.schema.json")).unwrap_or_default();
    assert!(schema == committed, "docs/spec.schema.json is stale: run `cargo run -p runner -- schema --update docs`");
    for p in PARAMS {
        assert!(md.contains(&format!("| `{}` |", p.key)), "{} is not documented", p.key);
    }
    // Every shipped spec points editors at the schema.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue; // experiments/masks/
        }
        let first = std::fs::read_to_string(&p).unwrap().lines().next().unwrap_or("").to_string();
        assert_eq!(first, "#:schema ../docs/spec.schema.json", "{}", p.display());
    }
}

/// The JSON Schema is what editors check specs with: it must accept every shipped spec and
/// refuse what the parser refuses by key, type or range.
#[test]
fn the_json_schema_accepts_the_shipped_specs_and_refuses_bad_ones() {
    let schema = runner::params::docs::schema();
    let validator = jsonschema::draft7::new(&schema).expect("a valid draft-07 schema");
    let json = |text: &str| serde_json::to_value(text.parse::<toml::Table>().unwrap()).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue; // experiments/masks/
        }
        let v = json(&std::fs::read_to_string(&p).unwrap());
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", p.display());
    }
    let good = "name = \"x\"\n[defaults]\nstyle = [{ image = \"scream\", weight = 2 }, \"shipwreck\"]\nstyle_layers = [{ layer = \"relu1_1\", weight = 0.5 }, \"relu2_1\"]\n[[run]]\nname = \"a\"\n[run.sweep]\nseed = [1, 2]\n";
    assert!(validator.is_valid(&json(good)));
    for bad in [
        "name = \"x\"\n[defaults]\nstyle_wieght = 3\n",
        "name = \"x\"\n[defaults]\nsize = 4294967328\n",
        "name = \"x\"\n[defaults]\noptimizer = \"sgd\"\n",
        "name = \"x\"\n[defaults]\ncontent_layers = [\"relu4_5\"]\n",
        "name = \"x\"\n[sweep]\nseed = []\n",
        "name = \"x\"\n[[run]]\nseed = 1\n",
        "description = \"no name\"\n",
    ] {
        assert!(!validator.is_valid(&json(bad)), "the schema accepts {bad:?}");
    }
}
