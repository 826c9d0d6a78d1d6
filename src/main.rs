//! `mlpd`: parse the configuration, start logging, build the app, serve until SIGINT/SIGTERM.

use clap::Parser;
use mlpd::{App, Config, startup, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.log_format);
    let app = App::build(config).await?;
    app.run_until(startup::shutdown_signal()).await
}
