//! Where the measured processes run: the server on one half of the CPUs xtask may use, the
//! loadgen on the other, so neither measures the other's work (off with `--no-pin` or on one
//! CPU).

use crate::shell;

/// Where processes run: (server CPUs, loadgen CPUs), or unpinned.
#[derive(Debug, Clone, Default)]
pub struct Pinning {
    pub server: Option<Vec<usize>>,
    pub loadgen: Option<Vec<usize>>,
}

impl Pinning {
    /// Separate halves of the allowed CPUs when `pin` and there are two or more.
    pub fn new(pin: bool) -> Self {
        match pin
            .then(|| shell::split_cpus(&shell::allowed_cpus()))
            .flatten()
        {
            Some((server, loadgen)) => Self {
                server: Some(server),
                loadgen: Some(loadgen),
            },
            None => Self::default(),
        }
    }
}
