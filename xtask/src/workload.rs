//! Named workloads for `cargo xtask bench --workloads LIST`: documented presets over loadgen's
//! own flags (connections, message size, messages in flight, open-loop rate, churn), each with
//! the figure it is judged by.
//!
//! | name | loadgen flags | judged by | cells in the default run / in `all` |
//! |---|---|---|---|
//! | `pingpong` | closed loop, `--depth 1`, `--size 64` | messages/s (higher) | 16 / 1, 16, 128 connections |
//! | `pipelined` | closed loop, `--depth 32`, `--size 64` | messages/s (higher) | — / 16 connections |
//! | `keepalive` | open loop `--rate 20000` (20/s per connection), `--size 64` | p99 latency (lower) | 1,000 / 1,000 connections |
//! | `churn` | `--messages-per-connection 1 --source-addrs 127.0.0.2-127.0.0.254`, `--size 64` | connections/s (higher) | 16 / 16 connections |
//! | `bulk` | closed loop, `--depth 1`, `--size 65536` | bytes/s (higher) | — / 16 connections |
//!
//! How the cell flags combine (see [`select`]): with `--workloads`, `--connections`, `--sizes`,
//! `--depth` and `--rate` replace that parameter in every named workload (a `--rate` makes a
//! workload open loop, and an open-loop workload is judged by p99 latency). Without
//! `--workloads`, cell flags alone run today's single unnamed matrix (no workload in the cell),
//! and no flags at all run [`DEFAULT_WORKLOADS`] in their short form.
//!
//! Layer: pure data and its expansion, on the foundation (`error`) only; the plan stores the
//! expanded [`Workload`]s and a trial turns one into loadgen arguments ([`Workload::loadgen_flags`]).

use serde::{Deserialize, Serialize};

use crate::error::input_error;

/// What a workload's verdict compares (the workload's own figure of merit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Merit {
    /// Messages per second, higher is better.
    MessagesPerS,
    /// Connections per second (messages/s over messages per connection), higher is better.
    ConnectionsPerS,
    /// Bytes per second (messages/s × size), higher is better.
    BytesPerS,
    /// The 99th percentile of (coordinated-omission corrected) latency, lower is better.
    P99Us,
}

impl Merit {
    /// True when a higher figure is better.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Merit::P99Us)
    }

    /// The unit as printed after a figure.
    pub fn unit(self) -> &'static str {
        match self {
            Merit::MessagesPerS => "msg/s",
            Merit::ConnectionsPerS => "conn/s",
            Merit::BytesPerS => "MB/s",
            Merit::P99Us => "µs p99",
        }
    }
}

/// One workload, fully expanded: the parameters its cells run with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub name: String,
    pub connections: Vec<u32>,
    pub sizes_bytes: Vec<u32>,
    /// loadgen `--depth` (closed loop: messages in flight per connection; open loop: the cap).
    pub depth: Option<u32>,
    /// loadgen `--rate` (open loop, messages/s in total).
    pub rate_per_s: Option<u64>,
    /// loadgen `--messages-per-connection` (churn).
    pub messages_per_connection: Option<u32>,
    /// loadgen `--source-addrs` (churn spreads its connections over many source addresses).
    pub source_addrs: Option<String>,
    pub merit: Merit,
}

impl Workload {
    /// loadgen flags beyond `--connections` and `--size` (which come from the cell).
    pub fn loadgen_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(depth) = self.depth {
            flags.extend(["--depth".to_string(), depth.to_string()]);
        }
        if let Some(rate) = self.rate_per_s {
            flags.extend(["--rate".to_string(), rate.to_string()]);
        }
        if let Some(messages) = self.messages_per_connection {
            flags.extend([
                "--messages-per-connection".to_string(),
                messages.to_string(),
            ]);
        }
        if let Some(sources) = &self.source_addrs {
            flags.extend(["--source-addrs".to_string(), sources.clone()]);
        }
        flags
    }

    /// The figure of merit of one trial from its messages/s and p99 (µs), at `size_bytes`.
    pub fn figure(&self, messages_per_s: f64, p99_us: f64, size_bytes: u32) -> f64 {
        match self.merit {
            Merit::MessagesPerS => messages_per_s,
            Merit::ConnectionsPerS => {
                messages_per_s / f64::from(self.messages_per_connection.unwrap_or(1).max(1))
            }
            Merit::BytesPerS => messages_per_s * f64::from(size_bytes) / 1e6,
            Merit::P99Us => p99_us,
        }
    }
}

/// A preset as documented in the module table.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    /// One line on what the workload shows.
    pub about: &'static str,
    /// Connection counts in `--workloads NAME` and `all`.
    pub connections: &'static [u32],
    /// Connection counts in the default (no flags) run.
    pub short_connections: &'static [u32],
    pub size_bytes: u32,
    pub depth: Option<u32>,
    pub rate_per_s: Option<u64>,
    pub messages_per_connection: Option<u32>,
    pub source_addrs: Option<&'static str>,
    pub merit: Merit,
}

/// Source addresses churn spreads over: 253 loopback addresses, each with its own ~28,000
/// ephemeral ports, so TIME_WAIT (a minute) never exhausts them.
pub const CHURN_SOURCE_ADDRS: &str = "127.0.0.2-127.0.0.254";

/// Every preset, in the order `all` runs them.
pub const PRESETS: [Preset; 5] = [
    Preset {
        name: "pingpong",
        about: "persistent connections, one 64 B message in flight each: cost per message",
        connections: &[1, 16, 128],
        short_connections: &[16],
        size_bytes: 64,
        depth: None,
        rate_per_s: None,
        messages_per_connection: None,
        source_addrs: None,
        merit: Merit::MessagesPerS,
    },
    Preset {
        name: "pipelined",
        about: "persistent connections, 32 messages in flight each: batching and syscalls",
        connections: &[16],
        short_connections: &[16],
        size_bytes: 64,
        depth: Some(32),
        rate_per_s: None,
        messages_per_connection: None,
        source_addrs: None,
        merit: Merit::MessagesPerS,
    },
    Preset {
        name: "keepalive",
        about: "1,000 mostly idle connections at 20k msg/s in total: latency, starvation, memory",
        connections: &[1000],
        short_connections: &[1000],
        size_bytes: 64,
        depth: None,
        rate_per_s: Some(20_000),
        messages_per_connection: None,
        source_addrs: None,
        merit: Merit::P99Us,
    },
    Preset {
        name: "churn",
        about: "connect, one echo, close (the seed's client), 16 at a time: handshake cost",
        connections: &[16],
        short_connections: &[16],
        size_bytes: 64,
        depth: None,
        rate_per_s: None,
        messages_per_connection: Some(1),
        source_addrs: Some(CHURN_SOURCE_ADDRS),
        merit: Merit::ConnectionsPerS,
    },
    Preset {
        name: "bulk",
        about: "64 KiB messages on 16 connections: copy cost, bytes/s",
        connections: &[16],
        short_connections: &[16],
        size_bytes: 65536,
        depth: None,
        rate_per_s: None,
        messages_per_connection: None,
        source_addrs: None,
        merit: Merit::BytesPerS,
    },
];

/// What `cargo xtask bench` with no flags runs, each in its short form.
pub const DEFAULT_WORKLOADS: [&str; 3] = ["pingpong", "keepalive", "churn"];

/// The cell flags (`--connections`, `--sizes`, `--depth`, `--rate`) as given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellFlags {
    pub connections: Option<Vec<u32>>,
    pub sizes_bytes: Option<Vec<u32>>,
    pub depth: Option<u32>,
    pub rate_per_s: Option<u64>,
}

impl CellFlags {
    /// True when any cell flag was given.
    pub fn any(&self) -> bool {
        self.connections.is_some()
            || self.sizes_bytes.is_some()
            || self.depth.is_some()
            || self.rate_per_s.is_some()
    }
}

impl Preset {
    /// The preset with the cell flags applied; `short` takes the default run's connections.
    pub fn expand(&self, flags: &CellFlags, short: bool) -> Workload {
        let rate_per_s = flags.rate_per_s.or(self.rate_per_s);
        Workload {
            name: self.name.to_string(),
            connections: flags.connections.clone().unwrap_or_else(|| {
                if short {
                    self.short_connections.to_vec()
                } else {
                    self.connections.to_vec()
                }
            }),
            sizes_bytes: flags
                .sizes_bytes
                .clone()
                .unwrap_or_else(|| vec![self.size_bytes]),
            depth: flags.depth.or(self.depth),
            rate_per_s,
            messages_per_connection: self.messages_per_connection,
            source_addrs: self.source_addrs.map(String::from),
            // Open loop offers a fixed rate: what differs between servers is latency.
            merit: if rate_per_s.is_some() {
                Merit::P99Us
            } else {
                self.merit
            },
        }
    }
}

/// The preset named `name`.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The workloads a bench runs: `--workloads LIST` (names or `all`) with the cell flags applied
/// to each; none given → [`DEFAULT_WORKLOADS`] in short form when no cell flag is given either,
/// else an empty list (today's unnamed matrix from the cell flags alone). An unknown name is an
/// input error.
pub fn select(names: Option<&[String]>, flags: &CellFlags) -> anyhow::Result<Vec<Workload>> {
    let Some(names) = names else {
        if flags.any() {
            return Ok(vec![]);
        }
        return Ok(DEFAULT_WORKLOADS
            .iter()
            .filter_map(|name| preset(name))
            .map(|p| p.expand(flags, true))
            .collect());
    };
    let mut chosen: Vec<&Preset> = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let add: Vec<&Preset> = if name == "all" {
            PRESETS.iter().collect()
        } else if let Some(p) = preset(name) {
            vec![p]
        } else {
            return Err(input_error(format!(
                "unknown workload {name:?}; known: {}, or all",
                PRESETS.map(|p| p.name).join(", ")
            )));
        };
        for p in add {
            if !chosen.iter().any(|c| c.name == p.name) {
                chosen.push(p);
            }
        }
    }
    if chosen.is_empty() {
        return Err(input_error(
            "--workloads: name at least one workload, or all",
        ));
    }
    Ok(chosen.into_iter().map(|p| p.expand(flags, false)).collect())
}

/// True when `names` asks for every workload (`all`).
pub fn is_all(names: Option<&[String]>) -> bool {
    names.is_some_and(|names| names.iter().any(|n| n.trim() == "all"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn flags_of(workload: &Workload) -> String {
        workload.loadgen_flags().join(" ")
    }

    #[test]
    fn each_preset_expands_to_its_documented_loadgen_flags() {
        let all = select(Some(&names(&["all"])), &CellFlags::default()).expect("valid");
        let by_name = |name: &str| all.iter().find(|w| w.name == name).expect(name);
        let expected = [
            ("pingpong", vec![1, 16, 128], 64, "", Merit::MessagesPerS),
            ("pipelined", vec![16], 64, "--depth 32", Merit::MessagesPerS),
            ("keepalive", vec![1000], 64, "--rate 20000", Merit::P99Us),
            (
                "churn",
                vec![16],
                64,
                "--messages-per-connection 1 --source-addrs 127.0.0.2-127.0.0.254",
                Merit::ConnectionsPerS,
            ),
            ("bulk", vec![16], 65536, "", Merit::BytesPerS),
        ];
        assert_eq!(all.len(), expected.len());
        for (name, connections, size, flags, merit) in expected {
            let workload = by_name(name);
            assert_eq!(workload.connections, connections, "{name}");
            assert_eq!(workload.sizes_bytes, [size], "{name}");
            assert_eq!(flags_of(workload), flags, "{name}");
            assert_eq!(workload.merit, merit, "{name}");
        }
        // The order is the presets' order, whatever order the names came in.
        let order: Vec<&str> = all.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            order,
            ["pingpong", "pipelined", "keepalive", "churn", "bulk"]
        );
    }

    #[test]
    fn no_flags_run_the_short_default_set() {
        let default = select(None, &CellFlags::default()).expect("valid");
        let names: Vec<&str> = default.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, DEFAULT_WORKLOADS);
        assert!(default.len() >= 3, "the issue's minimum");
        // Short form: one cell per workload.
        assert!(
            default.iter().all(|w| w.connections.len() == 1),
            "{default:?}"
        );
        // Churn spreads its source addresses.
        let churn = default.iter().find(|w| w.name == "churn").expect("churn");
        assert_eq!(churn.source_addrs.as_deref(), Some(CHURN_SOURCE_ADDRS));
    }

    #[test]
    fn cell_flags_override_every_named_workload_or_run_alone() {
        let flags = CellFlags {
            connections: Some(vec![4]),
            sizes_bytes: None,
            depth: None,
            rate_per_s: Some(5000),
        };
        let chosen = select(Some(&names(&["pingpong", "churn"])), &flags).expect("valid");
        assert_eq!(chosen.len(), 2);
        for workload in &chosen {
            assert_eq!(workload.connections, [4]);
            assert_eq!(workload.rate_per_s, Some(5000));
            // Open loop: judged by latency.
            assert_eq!(workload.merit, Merit::P99Us);
        }
        assert_eq!(
            flags_of(&chosen[1]),
            "--rate 5000 --messages-per-connection 1 --source-addrs 127.0.0.2-127.0.0.254"
        );
        // Cell flags without --workloads: today's unnamed matrix, no workload.
        assert!(select(None, &flags).expect("valid").is_empty());
        // Duplicates collapse; `all` with a name is still every workload once.
        let twice = select(
            Some(&names(&["bulk", "all", "bulk"])),
            &CellFlags::default(),
        )
        .expect("valid");
        assert_eq!(twice.len(), PRESETS.len());
        assert_eq!(twice[0].name, "bulk");
        assert!(is_all(Some(&names(&["bulk", "all"]))));
        assert!(!is_all(Some(&names(&["bulk"]))) && !is_all(None));
    }

    #[test]
    fn unknown_or_empty_workloads_are_input_errors() {
        let error = select(
            Some(&names(&["pingpong", "websocket"])),
            &CellFlags::default(),
        )
        .expect_err("unknown");
        assert!(error.to_string().contains("websocket"), "{error}");
        assert!(error.to_string().contains("keepalive"), "{error}");
        assert!(error.is::<crate::InputError>());
        assert!(select(Some(&names(&[""])), &CellFlags::default()).is_err());
    }

    #[test]
    fn figures_follow_the_merit() {
        let all = select(Some(&names(&["all"])), &CellFlags::default()).expect("valid");
        let by_name = |name: &str| all.iter().find(|w| w.name == name).expect(name);
        assert_eq!(by_name("pingpong").figure(1000.0, 50.0, 64), 1000.0);
        assert_eq!(by_name("churn").figure(1000.0, 50.0, 64), 1000.0);
        assert_eq!(by_name("bulk").figure(1000.0, 50.0, 65536), 65.536);
        assert_eq!(by_name("keepalive").figure(1000.0, 50.0, 64), 50.0);
        assert!(Merit::MessagesPerS.higher_is_better() && !Merit::P99Us.higher_is_better());
    }
}
