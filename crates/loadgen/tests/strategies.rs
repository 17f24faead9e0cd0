//! loadgen against every strategy of the real echo server (in-process, on 127.0.0.1:0): every
//! message verified, zero errors.

mod common;

use common::config;
use echo_server::{Config as ServerConfig, Server, Strategy};

#[test]
fn every_strategy_echoes_every_message() {
    for &strategy in Strategy::ALL {
        let server = Server::start(ServerConfig::loopback(strategy)).expect("server starts");
        let mut c = config(&server.local_addr().to_string());
        c.connections = 8;
        c.messages = Some(4_000);
        c.size_bytes = 1_000;
        c.depth = Some(2);
        let r = loadgen::run(&c).expect("run completes");
        let stats = server.shutdown();
        assert_eq!(r.errors.total, 0, "{}: {:?}", strategy.name(), r.errors);
        assert_eq!(r.messages.verified, 4_000, "{}", strategy.name());
        assert_eq!(r.messages.sent, 4_000, "{}", strategy.name());
        assert_eq!(r.connections.opened, 8, "{}", strategy.name());
        assert!(
            stats.bytes_in >= 4_000_000,
            "{}: {stats:?}",
            strategy.name()
        );
    }
}
