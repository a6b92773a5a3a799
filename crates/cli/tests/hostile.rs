//! The hostile-input battery, small enough for every test run: `berth bench --hostile` with a few thousand
//! generated inputs per parser (rules, entity bodies, blueprint definitions, UI forms), a few hundred per
//! HTTP route of a live server, and a restart. Any panic, 5xx, or accepted write that does not read back
//! fails it. The full battery (1,000,000 inputs per parser) is `berth bench --hostile` (BENCHMARKS.md).

mod support;

#[test]
fn the_hostile_battery_finds_nothing() {
    for seed in ["1", "2"] {
        let (ok, out, err) = support::berth(&["bench", "--hostile", "--count", "1500", "--seed", seed]);
        assert!(ok, "seed {seed}:\n{out}\n{err}");
        assert!(out.contains("hostile inputs were handled"), "{out}");
    }
}
