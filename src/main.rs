//! `mlpd`: parse the configuration, start logging, build the app, serve until SIGINT/SIGTERM.
//! `mlpd healthcheck` asks a running server (at `MLPD_BIND`) for `/health` and exits 0 if it
//! answers 200 — for container health checks, where no HTTP client is installed.

/// mimalloc instead of glibc's allocator: a request allocates and frees its body, its rows
/// and its answer on whichever runtime thread runs it, and glibc's arenas spent ≈ 12% of the
/// server's time in `malloc`/`free` under load (README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use mlpd::{App, Config, startup, telemetry};
use std::io::{Read, Write};
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        std::process::exit(if healthcheck() { 0 } else { 1 });
    }
    let config = Config::parse();
    telemetry::init(config.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let app = App::build(config).await?;
            app.run_until(startup::shutdown_signal()).await
        })
}

/// `GET /health` on the configured address (a wildcard address means this host).
fn healthcheck() -> bool {
    let config = Config::parse_from(["mlpd"]);
    let mut addr = config.bind;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}
