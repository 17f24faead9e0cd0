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
pub const KNOWN_STRATEGIES: [&str; 7] = [
    "iterative",
    "thread",
    "pool",
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
    Ok(ServerEntry {
        name: name.to_string(),
        command: None,
    })
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
        .map(|name| ServerEntry {
            name,
            command: None,
        })
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
}
