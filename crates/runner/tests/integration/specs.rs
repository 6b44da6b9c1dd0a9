//! The spec format: expansion of sweeps, cumulative lists, explicit runs, and every refusal.

use runner::params::{Init, RunParams};
use runner::spec::{from_table, parse, to_table};

fn err(text: &str) -> String {
    parse(text, "exp.toml").map(|_| ()).expect_err("the spec should be refused").to_string()
}

#[test]
fn sweeps_are_cartesian_products_and_runs_are_named_by_their_values() {
    let e = parse(
        r#"
        name = "grid"
        [defaults]
        size = 128
        [sweep]
        style_weight = [1e2, 1e4]
        seed = [0, 1, 2]
        "#,
        "exp.toml",
    )
    .unwrap();
    assert_eq!(e.runs.len(), 6);
    assert_eq!(e.runs[0].name, "seed=0_style_weight=100");
    assert_eq!(e.runs[5].params.seed, 2);
    assert_eq!(e.runs[5].params.style_weight, 1e4);
    assert_eq!(e.runs[5].params.size, Some(128));
    assert_eq!(e.varying_keys, ["seed", "style_weight"]);
}

#[test]
fn cumulative_lists_expand_to_growing_prefixes() {
    let e = parse(
        r#"
        name = "style_recon"
        [defaults]
        content_layers = []
        init = "noise"
        [sweep]
        style_layers = { cumulative = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"] }
        "#,
        "exp.toml",
    )
    .unwrap();
    let lens: Vec<usize> = e.runs.iter().map(|r| r.params.style_layers.len()).collect();
    assert_eq!(lens, [1, 2, 3, 4, 5]);
    assert_eq!(e.runs[2].swept[0].1, "relu1_1+relu2_1+relu3_1");
    assert!(e.runs.iter().all(|r| r.params.content_layers.is_empty() && r.params.init == Init::Noise));
}

#[test]
fn explicit_runs_with_their_own_sweeps() {
    let e = parse(
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
        "exp.toml",
    )
    .unwrap();
    let names: Vec<&str> = e.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["from_content", "from_noise_seed=0", "from_noise_seed=1", "blend"]);
    let blend = &e.runs[3].params;
    assert_eq!(blend.style.len(), 2);
    assert_eq!((blend.style[0].weight, blend.style[1].weight), (3.0, 1.0));
    assert_eq!(blend.style_layer_weights, Some(vec![0.5, 1.0]));
    assert!(e.varying_keys.contains(&"init".to_string()) && e.varying_keys.contains(&"seed".to_string()));
}

#[test]
fn resolved_parameters_round_trip_through_run_toml() {
    let mut p = RunParams {
        style_layer_weights: Some(vec![1.0, 2.0, 3.0, 4.0, 5.0]),
        init: Init::Image("x.png".into()),
        max_evals: Some(7),
        ..Default::default()
    };
    let t = to_table(&p);
    let mut back = from_table(&t, "run.toml").unwrap();
    back.learning_rate = None;
    p.learning_rate = None;
    assert_eq!(back, p);
}

#[test]
fn unknown_keys_are_refused_with_the_nearest_valid_one() {
    let m = err("name = \"x\"\n[defaults]\nstyle_wieght = 3\n");
    assert!(
        m.contains("exp.toml") && m.contains("defaults.style_wieght") && m.contains("did you mean `style_weight`"),
        "{m}"
    );
    let m = err("name = \"x\"\n[sweeps]\nseed = [1]\n");
    assert!(m.contains("unknown key `sweeps`") && m.contains("did you mean `sweep`"), "{m}");
    let m = err("name = \"x\"\n[[run]]\nname = \"a\"\nitertions = 3\n");
    assert!(m.contains("run[0].itertions") && m.contains("iterations"), "{m}");
    let m = err("name = \"x\"\n[[run]]\nname = \"a\"\nstyle = [{ image = \"scream\", wieght = 1 }]\n");
    assert!(m.contains("did you mean `weight`"), "{m}");
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
        ("[defaults]\niterations = 0", "defaults.iterations", "≥ 1"),
        ("[defaults]\nstyle_weight = -1", "defaults.style_weight", "≥ 0"),
        ("[defaults]\nsize = \"big\"", "defaults.size", "pixels"),
        ("[defaults]\nwidth = 300", "width/height", "both"),
        ("[defaults]\nstyle_layer_weights = [1, 2]", "style_layer_weights", "2 weights for 5"),
        ("[sweep]\nseed = []", "sweep.seed", "non-empty"),
        ("[sweep]\nseed = [0, -1]", "sweep.seed[1]", "≥ 0"),
        ("[defaults]\ncontent_layers = []\nstyle_layers = []", "content_layers", "nothing to optimise"),
    ] {
        let m = err(&format!("name = \"x\"\n{text}\n"));
        assert!(m.contains(key) && m.contains(hint), "{text}: {m}");
    }
    assert!(err("description = \"no name\"").contains("missing"));
    assert!(err("name = \"x\"\n[[run]]\nname = \"a\"\n[[run]]\nname = \"a\"\n").contains("two runs are named `a`"));
    assert!(err("name = \"x\"\n[defaults\n").contains("(syntax)"));
}
