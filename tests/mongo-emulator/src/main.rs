//! `mongo-emulator` binary: parse the command line, start the emulator, print
//! `listening on HOST:PORT`, serve until SIGINT/SIGTERM.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use mongo_emulator::{Emulator, EmulatorConfig};

const USAGE: &str = "usage: mongo-emulator --port N [--bind 127.0.0.1] [--replica-set rs0] [--history-limit N] [--advertise HOST:PORT]";

fn parse_args() -> Result<EmulatorConfig, String> {
    let mut config = EmulatorConfig::default();
    let mut ip: IpAddr = config.bind.ip();
    let mut port: u16 = 0;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_string());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("invalid {flag} '{value}': {e}");
        match flag.as_str() {
            "--port" => port = value.parse().map_err(|e| bad(&e))?,
            "--bind" => ip = value.parse().map_err(|e| bad(&e))?,
            "--replica-set" => config.replica_set = value,
            "--history-limit" => config.history_limit = value.parse().map_err(|e| bad(&e))?,
            "--advertise" => config.advertised_host = Some(value),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    config.bind = SocketAddr::new(ip, port);
    Ok(config)
}

#[tokio::main]
async fn main() {
    let config = match parse_args() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let emulator = match Emulator::start(config).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("mongo-emulator: cannot bind: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", emulator.addr());
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    emulator.shutdown().await;
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
