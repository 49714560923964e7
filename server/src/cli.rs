//! The command line: `nimbus serve`, `nimbus migrate`, `nimbus version`.
//! Parses arguments, loads the configuration and runs one command; every
//! failure ends in one line on stderr and a non-zero exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::config::{Config, Overrides, ProcessEnv};

#[derive(Debug, Parser)]
#[command(name = "nimbus", version, about = "A self-hosted backend-as-a-service in one binary")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (applies pending migrations first).
    Serve(Overrides),
    /// Apply pending database migrations, then exit.
    Migrate(Overrides),
    /// Print the version and exit.
    Version,
    /// Check or test security rules without a server.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Check function modules without a server.
    #[command(subcommand)]
    Functions(FunctionsCommand),
}

#[derive(Debug, Subcommand)]
pub enum FunctionsCommand {
    /// Load every *.js module in DIR (default ./functions) and list its functions; errors as file:line:col.
    Check {
        #[arg(default_value = "functions")]
        dir: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Compile every *.rules file in DIR (default ./rules); print errors as file:line:col.
    Check {
        #[arg(default_value = "rules")]
        dir: std::path::PathBuf,
    },
    /// Run a JSON file of described requests with expected allow/deny against the rules.
    Test {
        cases: std::path::PathBuf,
        /// The rules folder (default: the file's "rules" entry, else ./rules).
        #[arg(long)]
        rules: Option<std::path::PathBuf>,
    },
}

/// Runs the parsed command to completion.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            println!("nimbus {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Serve(flags) => with_config(&flags, serve),
        Command::Migrate(flags) => with_config(&flags, migrate),
        Command::Rules(RulesCommand::Check { dir }) => match crate::rules::load_dir(&dir) {
            Ok(_) => {
                println!("{}: rules are valid", dir.display());
                ExitCode::SUCCESS
            }
            Err(line) => {
                eprintln!("error: {line}");
                ExitCode::FAILURE
            }
        },
        Command::Functions(FunctionsCommand::Check { dir }) => match tokio_runtime() {
            Ok(runtime) => match runtime.block_on(crate::functions::check_dir(&dir)) {
                Ok(lines) => {
                    lines.iter().for_each(|line| println!("{line}"));
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    errors.iter().for_each(|line| eprintln!("error: {line}"));
                    ExitCode::FAILURE
                }
            },
            Err(line) => {
                eprintln!("error: {line}");
                ExitCode::FAILURE
            }
        },
        Command::Rules(RulesCommand::Test { cases, rules }) => {
            match crate::rules::cases::run_file(&cases, rules.as_deref()) {
                Ok((_, 0)) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(line) => {
                    eprintln!("error: {line}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn with_config(flags: &Overrides, command: fn(Config) -> Result<(), String>) -> ExitCode {
    let result = Config::load(flags, &ProcessEnv).map_err(|e| e.to_string()).and_then(|config| {
        crate::telemetry::init(&config.log, config.log_format)?;
        command(config)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn serve(config: Config) -> Result<(), String> {
    tokio_runtime()?.block_on(async move {
        let app = crate::app::build(config).await.map_err(|e| e.to_string())?;
        if let Some(key) = &app.new_service_key {
            println!("service key (shown only once; store it safely): {}", key.expose_secret());
        }
        let addr = app.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%addr, "nimbus is ready");
        println!("listening on {addr}");
        app.run(crate::app::shutdown_signal()).await.map_err(|e| format!("server error: {e}"))
    })
}

fn migrate(config: Config) -> Result<(), String> {
    tokio_runtime()?.block_on(async move {
        let store =
            crate::store::Store::connect(&config.database, config.query_timeout).await.map_err(|e| e.to_string())?;
        store.migrate().await.map_err(|e| e.to_string())?;
        println!("migrations applied ({})", store.backend_name());
        store.close().await;
        Ok(())
    })
}
