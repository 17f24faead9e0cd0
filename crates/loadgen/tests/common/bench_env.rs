//! Helpers shared by the `vs_blocking` bench and the `one_connection_p50` example (included in
//! each with `#[path]`): settings from the environment and pinning threads to cores.

/// The environment variable `name` parsed as a `T`, or `default` when it is unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pins the calling thread (and the threads it spawns later) to `cores`.
pub fn pin_to_cores(cores: &[usize]) -> bool {
    // SAFETY: cpu_set_t is plain old data; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cores {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}
