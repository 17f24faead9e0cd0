//! Helpers shared by xtask's integration tests: the measured binaries (built once, dev profile,
//! by a nested `cargo build`), the xtask binary itself, and a /proc scan for leftover processes.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use xtask::flags::BuildProfile;
use xtask::shell::{Binaries, build_binaries, project_root};

pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        build_binaries(&project_root(), BuildProfile::Dev, None)
            .expect("building echo-server and loadgen")
    })
}

pub fn bin_dir() -> PathBuf {
    binaries()
        .echo_server
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

pub fn xtask_binary() -> &'static str {
    env!("CARGO_BIN_EXE_xtask")
}

/// PIDs of live processes whose command line mentions `marker` (zombies excluded).
pub fn processes_mentioning(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if cmdline.contains(marker) && pid != std::process::id() && !zombie {
            found.push(pid);
        }
    }
    found
}
