//! The servers a trial runs: built-in strategies and external `--server NAME='CMD … {port}'`
//! commands, how each is started ([`server_launch`]), which strategies the built server offers,
//! and the start check every server passes before any trial ([`preflight`]).

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::pinning::Pinning;
use crate::error::input_error;
use crate::interrupt;
use crate::record::plan::{BenchPlan, ServerEntry};
use crate::shell::{self, Binaries, Readiness, ServerLaunch};

/// Every strategy name the server may know (DESIGN.md); `all` picks those the built server lists.
pub const KNOWN_STRATEGIES: [&str; 8] = [
    "iterative",
    "thread",
    "pool",
    "reactor-pool",
    "rayon",
    "event-loop",
    "async",
    "uring",
];

/// Strategies that serve at most `--workers` connections at once: with fewer workers than
/// connections the rest starve (`capacity` then passes a worker per connection).
pub const BOUNDED_STRATEGIES: [&str; 2] = ["pool", "rayon"];

/// `Some(connections)` when the built-in `strategy` serves at most W connections at once and
/// `server_args` sets no `--workers`: the worker count to pass, so that no connection waits
/// for a worker (`capacity` and `regress` add it).
pub fn workers_for(
    strategy: &str,
    builtin: bool,
    server_args: &[String],
    connections: u32,
) -> Option<u32> {
    let has_workers = server_args
        .iter()
        .any(|arg| arg == "--workers" || arg.starts_with("--workers="));
    (builtin && BOUNDED_STRATEGIES.contains(&strategy) && !has_workers).then_some(connections)
}

/// Strategies whose thread count is `--workers`; `NAME:N` in `--strategies` sets it.
const WORKER_STRATEGIES: [&str; 4] = ["pool", "reactor-pool", "rayon", "async"];

/// Strategies whose thread count is `--loops` (one event loop per thread).
const LOOP_STRATEGIES: [&str; 2] = ["event-loop", "uring"];

/// The server flag that sets `strategy`'s thread count, if it has one.
pub fn threads_flag(strategy: &str) -> Option<&'static str> {
    if WORKER_STRATEGIES.contains(&strategy) {
        Some("--workers")
    } else if LOOP_STRATEGIES.contains(&strategy) {
        Some("--loops")
    } else {
        None
    }
}

/// Parses one `--strategies` item, `NAME` or `NAME:N` (N threads: `--workers N`, or `--loops N`
/// for the event loops); an unknown name, a bad count, or a count for a strategy without threads
/// to size is an input error.
pub fn parse_strategy_item(item: &str) -> Result<ServerEntry> {
    let (name, count) = match item.split_once(':') {
        Some((name, count)) => (name.trim(), Some(count.trim())),
        None => (item.trim(), None),
    };
    if !KNOWN_STRATEGIES.contains(&name) {
        return Err(input_error(format!(
            "unknown strategy {name:?}; known: {}, or all",
            KNOWN_STRATEGIES.join(", ")
        )));
    }
    let mut entry = ServerEntry::builtin(name);
    if let Some(count) = count {
        let Some(flag) = threads_flag(name) else {
            return Err(input_error(format!(
                "--strategies {item:?}: {name} has no thread count to set (NAME:N works for {} and {})",
                WORKER_STRATEGIES.join(", "),
                LOOP_STRATEGIES.join(", ")
            )));
        };
        match count.parse::<u32>() {
            Ok(threads) if threads >= 1 => entry.threads = Some(threads),
            _ => {
                return Err(input_error(format!(
                    "--strategies {item:?}: the count after ':' must be a whole number ≥ 1 (the server's {flag})"
                )));
            }
        }
    }
    Ok(entry)
}

/// Rejects `NAME:N` together with the same flag in `--server-args` (which applies to every
/// strategy, so one of the two would silently lose).
pub fn check_threads_against_server_args(
    servers: &[ServerEntry],
    server_args: &[String],
) -> Result<()> {
    for server in servers.iter().filter(|s| s.threads.is_some()) {
        let Some(flag) = threads_flag(&server.name) else {
            continue;
        };
        if server_args
            .iter()
            .any(|arg| arg == flag || arg.starts_with(&format!("{flag}=")))
        {
            return Err(input_error(format!(
                "--strategies {}:{}: --server-args also sets {flag}; say the count in one place",
                server.name,
                server.threads.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// Parses `NAME=CMD`.
pub fn parse_server_spec(spec: &str) -> Result<ServerEntry> {
    let Some((name, command)) = spec.split_once('=') else {
        return Err(input_error(format!(
            "--server {spec:?}: expected NAME='CMD … {{port}}'"
        )));
    };
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(input_error(format!(
            "--server {spec:?}: the name before '=' must be one word"
        )));
    }
    if !command.contains("{port}") {
        return Err(input_error(format!(
            "--server {name}: the command must contain {{port}} (xtask substitutes a free port)"
        )));
    }
    Ok(ServerEntry {
        name: name.to_string(),
        command: Some(command.trim().to_string()),
        threads: None,
    })
}

/// A built-in strategy as a server entry; an unknown name is an input error listing the known.
pub fn builtin_strategy(name: &str) -> Result<ServerEntry> {
    if !KNOWN_STRATEGIES.contains(&name) {
        return Err(input_error(format!(
            "unknown strategy {name:?}; known: {}",
            KNOWN_STRATEGIES.join(", ")
        )));
    }
    Ok(ServerEntry::builtin(name))
}

/// Strategy names from clap's `[possible values: a, b, c]` (printed for an invalid value).
pub fn possible_values(clap_error: &str) -> Vec<String> {
    clap_error
        .split_once("possible values:")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| {
            list.split(',')
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The strategies the built server offers (asks it with an invalid `--strategy`).
pub fn offered_strategies(echo_server: &Path) -> Result<Vec<String>> {
    let output = std::process::Command::new(echo_server)
        .args(["--strategy", "?"])
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", echo_server.display()))?;
    let offered = possible_values(&String::from_utf8_lossy(&output.stderr));
    if offered.is_empty() {
        bail!(
            "{} --strategy ? did not list its strategies",
            echo_server.display()
        );
    }
    Ok(offered)
}

/// The command line that starts `server` for one trial.
pub fn server_launch(
    server: &ServerEntry,
    binaries: &Binaries,
    stats_json: Option<&Path>,
    extra_args: &[String],
) -> Result<ServerLaunch> {
    match &server.command {
        Some(command) => ServerLaunch::external(&server.name, command),
        None => {
            let mut args: Vec<String> =
                ["--addr", "127.0.0.1:0", "--strategy", server.name.as_str()]
                    .map(String::from)
                    .to_vec();
            if let Some(path) = stats_json {
                args.push("--stats-json".into());
                args.push(path.display().to_string());
            }
            if let (Some(threads), Some(flag)) = (server.threads, threads_flag(&server.name)) {
                args.push(flag.into());
                args.push(threads.to_string());
            }
            args.extend(extra_args.iter().cloned());
            Ok(ServerLaunch {
                name: server.name.clone(),
                program: binaries.echo_server.clone(),
                args,
                readiness: Readiness::ListenLine,
            })
        }
    }
}

/// Checks that every server starts and listens (and stops it again) before any trial runs,
/// so a broken server command fails the run at once with a clear message.
pub fn preflight(
    plan: &BenchPlan,
    binaries: &Binaries,
    run_dir: &Path,
    pinning: &Pinning,
) -> Result<()> {
    for server in &plan.servers {
        let launch = server_launch(server, binaries, None, &plan.server_args)?;
        let log = run_dir.join(format!("preflight-{}.server.log", server.name));
        let mut running = shell::start_server(
            &launch,
            pinning.server.as_deref(),
            Some(&log),
            plan.ready_timeout(),
        )
        .with_context(|| format!("server {} failed its start check", server.name))?;
        running.guard.stop()?;
    }
    Ok(())
}

/// With `--strategies all`: a built-in strategy that cannot start here (e.g. `uring` where the
/// kernel or a sandbox forbids io_uring) is left out with a warning instead of failing the run.
pub fn drop_unstartable_strategies(
    plan: &mut BenchPlan,
    binaries: &Binaries,
    run_dir: &Path,
) -> Result<()> {
    let mut kept = Vec::new();
    let ready_timeout = plan.ready_timeout();
    for server in plan.servers.drain(..) {
        if !server.is_builtin() {
            kept.push(server);
            continue;
        }
        let launch = server_launch(&server, binaries, None, &plan.server_args)?;
        let log = run_dir.join(format!("preflight-{}.server.log", server.name));
        match shell::start_server(&launch, None, Some(&log), ready_timeout) {
            Ok(mut running) => {
                running.guard.stop()?;
                kept.push(server);
            }
            Err(error) if interrupt::caused(&error) => return Err(error),
            Err(error) => eprintln!(
                "warning: leaving out strategy {}: it does not start here: {error:#}",
                server.name
            ),
        }
    }
    plan.servers = kept;
    if plan.servers.is_empty() {
        bail!("no strategy starts on this machine");
    }
    Ok(())
}

/// Resolves `--strategies all` against what the built server offers, and checks that every
/// requested strategy is offered.
pub fn resolve_strategies(plan: &mut BenchPlan, binaries: &Binaries) -> Result<()> {
    if !plan.all_strategies {
        if plan.servers.iter().any(|s| s.is_builtin())
            && let Ok(offered) = offered_strategies(&binaries.echo_server)
        {
            for server in plan.servers.iter().filter(|s| s.is_builtin()) {
                if !offered.contains(&server.name) {
                    return Err(input_error(format!(
                        "this echo-server has no strategy {:?} yet; it offers: {}",
                        server.name,
                        offered.join(", ")
                    )));
                }
            }
        }
        return Ok(());
    }
    let offered = offered_strategies(&binaries.echo_server)?;
    let externals: Vec<ServerEntry> = plan.servers.drain(..).filter(|s| !s.is_builtin()).collect();
    plan.servers = offered
        .into_iter()
        .map(|name| ServerEntry::builtin(&name))
        .chain(externals)
        .collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_are_read_from_clap_errors() {
        let error = "error: invalid value '?' for '--strategy <STRATEGY>'\n  [possible values: iterative, thread, pool, event-loop]\n";
        assert_eq!(
            possible_values(error),
            ["iterative", "thread", "pool", "event-loop"]
        );
        assert!(possible_values("no list here").is_empty());
    }

    #[test]
    fn strategy_items_carry_thread_counts() {
        let pool = parse_strategy_item("pool:16").expect("valid");
        assert_eq!((pool.name.as_str(), pool.threads), ("pool", Some(16)));
        let plain = parse_strategy_item(" reactor-pool ").expect("valid");
        assert_eq!((plain.name.as_str(), plain.threads), ("reactor-pool", None));
        assert_eq!(threads_flag("event-loop"), Some("--loops"));
        assert_eq!(threads_flag("reactor-pool"), Some("--workers"));
        assert_eq!(threads_flag("thread"), None);
        for bad in [
            "pool:0",
            "pool:x",
            "pool:",
            "thread:4",
            "iterative:2",
            "nope:2",
        ] {
            let error = parse_strategy_item(bad).expect_err(bad).to_string();
            assert!(
                error.contains(bad.split(':').next().unwrap_or(bad)),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn thread_counts_reach_the_server_command_line() {
        let binaries = Binaries {
            echo_server: "echo-server".into(),
            loadgen: "loadgen".into(),
        };
        let launch = |item: &str, extra: &[&str]| {
            let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            server_launch(
                &parse_strategy_item(item).expect(item),
                &binaries,
                None,
                &extra,
            )
            .expect("launch")
            .args
            .join(" ")
        };
        assert!(launch("pool:16", &[]).ends_with("--strategy pool --workers 16"));
        assert!(launch("event-loop:2", &["--backlog", "64"]).ends_with("--loops 2 --backlog 64"));
        assert!(!launch("reactor-pool", &[]).contains("--workers"));
        let servers = [parse_strategy_item("pool:4").expect("valid")];
        let args = ["--workers=8".to_string()];
        assert!(check_threads_against_server_args(&servers, &args).is_err());
        assert!(
            check_threads_against_server_args(&servers, &["--loops".into(), "2".into()]).is_ok()
        );
    }
}
