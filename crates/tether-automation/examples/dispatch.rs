//! Prints the dispatch figures of issue 5, item 2, as `tether bench --json`
//! will report them. Run in release:
//! `cargo run --release -p tether-automation --example dispatch`.

fn main() {
    let events = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let report = tether_automation::bench::dispatch_report(events);
    let row = |f: &tether_automation::bench::DispatchFigures| {
        format!(
            "{{\"tasks\": {}, \"events\": {}, \"p50_us\": {:.2}, \"p99_us\": {:.2}, \"mean_us\": {:.2}, \"max_us\": {:.1}}}",
            f.tasks_installed, f.events, f.p50_us, f.p99_us, f.mean_us, f.max_us
        )
    };
    println!("{{");
    println!("  \"dispatch_p99_us\": {:.2},", report.dispatch_p99_us);
    println!(
        "  \"dispatch_unrelated_ratio\": {:.3},",
        report.dispatch_unrelated_ratio
    );
    println!("  \"with_100_unrelated\": {},", row(&report.with_100));
    println!("  \"with_10000_unrelated\": {}", row(&report.with_10_000));
    println!("}}");
}
