//! `cargo xtask fixture-echo`: a tiny, deliberately simple echo server for xtask's own tests.
//!
//! Why: the regression gate must be shown to fail on a clearly slower server, and `--server`
//! must be shown to work with any command; a thread-per-connection echo that can sleep before
//! every echo (`--delay 1ms --buffer-size 64`: one 64-byte message per read, so one sleep per message) is both. It prints `listening on 127.0.0.1:PORT` like every
//! echolab server. Try it: `cargo run -p xtask -- fixture-echo --delay 2ms`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::flags::FixtureArgs;

/// Serves forever (until killed); each connection in its own thread.
pub fn run(args: &FixtureArgs) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (delay, buffer_size) = (args.delay, args.buffer_size.max(1));
        std::thread::spawn(move || {
            let _ = serve(stream, delay, buffer_size);
        });
    }
    Ok(())
}

fn serve(mut stream: TcpStream, delay: Duration, buffer_size: usize) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = vec![0u8; buffer_size];
    loop {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        stream.write_all(&buffer[..read])?;
    }
}
