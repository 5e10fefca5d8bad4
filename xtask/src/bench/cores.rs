//! Many cores: the 16-shard raw flood on a tokio multi-thread runtime of
//! two workers against one, with the simulator's CPU beside each row
//! (it shares the machine's cores with the client here).

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::{Bench, Row, SimProcess, Spread, measure, number, strings};

/// The CPU time a process has used, in seconds, from `/proc/<pid>/stat`
/// (utime + stime, fields 14 and 15, in the kernel's USER_HZ of 100 ticks
/// a second).
fn process_cpu_s(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name, in parentheses, may hold spaces: count from its end.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("a /proc stat line without a command name")?;
    // Fields from the third (state) on; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |n: usize| -> Result<f64> {
        let field = fields.get(n - 3).context("a short /proc stat line")?;
        Ok(field.parse::<f64>()?)
    };
    Ok((ticks(14)? + ticks(15)?) / 100.0)
}

pub(super) fn cores(bench: &mut Bench<'_>) -> Result<()> {
    let (bin, plan) = (bench.bin, bench.plan);
    let (rows, report) = (&mut bench.rows, &mut bench.report);
    let (shards, events) = plan.cores;
    eprintln!("many cores: {shards} shards × {events} events, 1 and 2 workers…");
    let sim = SimProcess::flooding(bin, shards, events)?;
    let pid = sim.child.id();
    let args = |workers: usize| {
        strings(&[
            "cores",
            "--workers",
            &workers.to_string(),
            "--shards",
            &shards.to_string(),
            "--events",
            &events.to_string(),
            "--gateway",
            &sim.gateway,
        ])
    };
    // A warm-up: the sim builds its flood on first use.
    measure(bin, &args(2))?;
    let mut runs: Vec<(usize, Value)> = Vec::new();
    for _ in 0..plan.runs {
        for workers in [1, 2] {
            let before = process_cpu_s(pid)?;
            let mut run = measure(bin, &args(workers))?;
            // The sim's CPU over the client's run, as cores busy on average.
            run["sim_cores"] = json!((process_cpu_s(pid)? - before) / number(&run, "wall_s"));
            runs.push((workers, run));
        }
    }
    let pick = |workers: usize, f: &dyn Fn(&Value) -> f64| {
        Spread::of(
            &runs
                .iter()
                .filter(|(w, _)| *w == workers)
                .map(|(_, r)| f(r))
                .collect::<Vec<_>>(),
        )
    };
    let rate = |r: &Value| number(r, "flood_events") / number(r, "flood_s") / 1e3;
    let client_cores = |r: &Value| number(r, "cpu_s") / number(r, "wall_s");
    let sim_cores = |r: &Value| number(r, "sim_cores");
    let show = |s: Option<Spread>| s.map_or_else(|| "–".to_owned(), |s| s.show(2));
    for workers in [1, 2] {
        let ratio = match (pick(2, &rate), pick(1, &rate)) {
            (Some(two), Some(one)) if workers == 2 => format!(
                "{:.2}× one worker (target ≥ 1.7×); ",
                two.median / one.median
            ),
            _ => String::new(),
        };
        rows.push(Row::higher(
            &format!("many cores: {shards} shards, raw, multi-thread runtime of {workers} worker(s): k events/s"),
            pick(workers, &rate),
            None,
            format!(
                "{ratio}client {} cores busy, sim {} cores busy",
                show(pick(workers, &client_cores)),
                show(pick(workers, &sim_cores))
            ),
        ));
    }
    report["runs"]["cores"] = json!(
        runs.iter()
            .map(|(w, r)| json!({"workers": w, "report": r}))
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_reads_its_own_cpu_time() {
        let spin: u64 = (0..20_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert!(spin > 0);
        let cpu = process_cpu_s(std::process::id()).unwrap();
        assert!(cpu.is_finite() && cpu >= 0.0, "{cpu}");
        assert!(process_cpu_s(u32::MAX).is_err());
    }
}
