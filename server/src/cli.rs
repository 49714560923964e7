//! The command line: `nimbus serve`, `migrate`, `version`, `rules`, `functions`,
//! `import`, `export`, `types`.
//! Parses arguments, loads the configuration and runs one command; every
//! failure ends in one line on stderr and a non-zero exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::config::{Config, Overrides, ProcessEnv};
use crate::import::Existing;

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
    /// Import a Firebase project's users or documents.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Export documents.
    #[command(subcommand)]
    Export(ExportCommand),
    /// GraphQL: `nimbus graphql schema` prints the schema (SDL) for client code generators.
    #[command(subcommand)]
    Graphql(GraphqlCommand),
    /// Copy the SQLite database to FILE while the server runs (a consistent snapshot).
    Backup {
        file: std::path::PathBuf,
        #[command(flatten)]
        config: Overrides,
    },
    /// Copy the whole project (users, keys, documents, change log, jobs, settings) from its
    /// SQLite database to an empty PostgreSQL database, to move to several instances.
    Copy {
        /// The PostgreSQL database to copy into (postgres://…); it must be empty.
        #[arg(long, value_name = "URL")]
        to: String,
        #[command(flatten)]
        config: Overrides,
    },
    /// Put a backup made by `nimbus backup` in place as the database of an empty data dir.
    Restore {
        file: std::path::PathBuf,
        #[command(flatten)]
        config: Overrides,
    },
    /// Print TypeScript interfaces for the collections that have a JSON Schema in nimbus.toml.
    Types {
        /// Write them to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        #[command(flatten)]
        config: Overrides,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Users from `firebase auth:export users.json --format=json`, with the
    /// project's password hash parameters (console → Authentication → ⋮ →
    /// Password hash parameters). Existing ids are skipped.
    FirebaseAuth {
        file: std::path::PathBuf,
        /// base64_signer_key
        #[arg(long, env = "NIMBUS_FIREBASE_HASH_KEY", hide_env_values = true)]
        hash_key: String,
        /// base64_salt_separator
        #[arg(long)]
        salt_separator: String,
        #[arg(long)]
        rounds: u32,
        #[arg(long)]
        mem_cost: u32,
        #[command(flatten)]
        config: Overrides,
    },
    /// Documents from a file of `{"path", "data"}` lines, through the documents
    /// layer (change log and triggers apply).
    Firestore {
        file: std::path::PathBuf,
        /// Enqueue no trigger jobs for these writes.
        #[arg(long)]
        no_triggers: bool,
        /// Leave documents that already exist as they are (count them as skipped), e.g. to seed a demo.
        #[arg(long)]
        skip_existing: bool,
        #[command(flatten)]
        config: Overrides,
    },
}

#[derive(Debug, Subcommand)]
pub enum GraphqlCommand {
    /// Print the schema served at /v1/graphql (typed for nimbus.toml's JSON Schemas), in SDL.
    Schema(Overrides),
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Every document as `{"path", "data"}` lines.
    Firestore {
        file: std::path::PathBuf,
        #[command(flatten)]
        config: Overrides,
    },
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
        Command::Graphql(GraphqlCommand::Schema(flags)) => with_config(&flags, |config| {
            let sdl = crate::graphql::Graphql::sdl(&config.schemas).map_err(|e| e.to_string())?;
            print!("{sdl}");
            Ok(())
        }),
        Command::Migrate(flags) => with_config(&flags, migrate),
        Command::Backup { file, config } => with_config(&config, |config| backup(config, &file)),
        Command::Restore { file, config } => with_config(&config, |config| restore(config, &file)),
        Command::Copy { to, config } => with_config(&config, |config| copy(config, &to)),
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
        Command::Import(command) => import(command),
        Command::Types { out, config } => with_config(&config, move |config| {
            let text = crate::documents::typescript::interfaces(&config.schemas);
            match out {
                Some(path) => std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display())),
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }),
        Command::Export(ExportCommand::Firestore { file, config }) => {
            let export = move |config| {
                with_parts(config, move |parts| async move {
                    let written = crate::import::export_firestore(&parts.services.documents, &file).await?;
                    println!("{written} documents exported to {}", file.display());
                    Ok(true)
                })
            };
            with_config(&config, export)
        }
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

fn with_config<R: Into<CommandOutcome>>(
    flags: &Overrides,
    command: impl FnOnce(Config) -> Result<R, String>,
) -> ExitCode {
    let result = Config::load(flags, &ProcessEnv).map_err(|e| e.to_string()).and_then(|config| {
        crate::telemetry::init(&config.log, config.log_format)?;
        for name in &config.unknown_env {
            tracing::warn!(variable = %name, "{name} is set but is not a setting this version of Nimbus reads; it is ignored");
        }
        command(config)
    });
    match result.map(Into::into) {
        Ok(CommandOutcome(true)) => ExitCode::SUCCESS,
        Ok(CommandOutcome(false)) => ExitCode::FAILURE,
        Err(line) => {
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

/// Whether a command that ran to its end did all it was asked (exit 0) or not (exit 1).
struct CommandOutcome(bool);

impl From<()> for CommandOutcome {
    fn from((): ()) -> Self {
        CommandOutcome(true)
    }
}

impl From<bool> for CommandOutcome {
    fn from(all_done: bool) -> Self {
        CommandOutcome(all_done)
    }
}

/// Runs `work` on the assembled parts (no listener, no background work).
fn with_parts<F, Fut>(config: Config, work: F) -> Result<bool, String>
where
    F: FnOnce(crate::app::Parts) -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    tokio_runtime()?.block_on(async move {
        let parts = crate::app::assemble(config).await.map_err(|e| e.to_string())?;
        print_new_service_key(parts.new_service_key.as_ref());
        let store = parts.services.store.clone();
        let outcome = work(parts).await;
        store.close().await;
        outcome
    })
}

/// The service key made by this start (the first on a new database), shown once,
/// whichever command made it (`serve`, or an import before the first `serve`).
fn print_new_service_key(key: Option<&secrecy::SecretString>) {
    if let Some(key) = key {
        println!("service key (shown only once; store it safely): {}", key.expose_secret());
    }
}

/// Prints an import's report; `true` when nothing was refused.
fn print_report(report: &crate::import::Report, what: &str) -> bool {
    report.refused.iter().for_each(|line| eprintln!("refused: {line}"));
    println!("{}", report.summary(what));
    report.refused.is_empty()
}

fn import(command: ImportCommand) -> ExitCode {
    match command {
        ImportCommand::FirebaseAuth { file, hash_key, salt_separator, rounds, mem_cost, config } => {
            let parameters = crate::import::HashParameters { signer_key: hash_key, salt_separator, rounds, mem_cost };
            let run = move |config| {
                with_parts(config, move |parts| async move {
                    let report = crate::import::firebase_auth(&parts.services.accounts, &file, &parameters).await?;
                    Ok(print_report(&report, "users"))
                })
            };
            with_config(&config, run)
        }
        ImportCommand::Firestore { file, no_triggers, skip_existing, config } => {
            let run = move |config| {
                with_parts(config, move |parts| async move {
                    let documents = if no_triggers {
                        parts.services.documents.without_triggers()
                    } else {
                        parts.services.documents.clone()
                    };
                    let existing = if skip_existing { Existing::Skip } else { Existing::Replace };
                    let report = crate::import::firestore(&documents, &file, existing).await?;
                    Ok(print_report(&report, "documents"))
                })
            };
            with_config(&config, run)
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
        print_new_service_key(app.new_service_key.as_ref());
        let addr = app.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%addr, "nimbus is ready");
        println!("listening on {addr}");
        app.run(crate::app::shutdown_signal()).await.map_err(|e| format!("server error: {e}"))
    })
}

fn sqlite_path(config: &Config, command: &str) -> Result<std::path::PathBuf, String> {
    match &config.database {
        crate::config::DatabaseConfig::Sqlite { path } => Ok(path.clone()),
        crate::config::DatabaseConfig::Postgres { .. } => Err(format!(
            "`nimbus {command}` is for SQLite; for PostgreSQL use its own tools (pg_dump, or \
             continuous archiving: docs/operations.md)"
        )),
    }
}

fn backup(config: Config, file: &std::path::Path) -> Result<(), String> {
    sqlite_path(&config, "backup")?;
    if file.exists() {
        return Err(format!("{} exists; name a new file", file.display()));
    }
    tokio_runtime()?.block_on(async move {
        let store =
            crate::store::Store::connect(&config.database, config.query_timeout).await.map_err(|e| e.to_string())?;
        let copied = store.backup_to(file).await.map_err(|e| format!("backup: {e}"));
        store.close().await;
        copied?;
        println!("backed up to {}", file.display());
        Ok(())
    })
}

fn copy(config: Config, url: &str) -> Result<(), String> {
    sqlite_path(&config, "copy")?;
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err("--to takes a PostgreSQL URL (postgres://user:password@host/database)".into());
    }
    let target = crate::config::DatabaseConfig::Postgres { url: secrecy::SecretString::from(url.to_owned()) };
    tokio_runtime()?.block_on(async move {
        let connect = |database| crate::store::Store::connect(database, config.query_timeout);
        let source = connect(&config.database).await.map_err(|e| e.to_string())?;
        let destination = connect(&target).await.map_err(|e| format!("--to: {e}"))?;
        if destination.has_tables().await.map_err(|e| e.to_string())? {
            return Err("--to: the database is not empty; copy into a new, empty database".into());
        }
        source.migrate().await.map_err(|e| e.to_string())?;
        let copied = source.copy_to(&destination).await.map_err(|e| format!("copy: {e}"));
        destination.close().await;
        source.close().await;
        for (table, rows) in copied? {
            println!("{table}: {rows} rows");
        }
        println!("copied; to serve from PostgreSQL, set NIMBUS_DATABASE_URL={}", without_password(url));
        println!("(writes made after the copy began are not in it: stop the server before copying)");
        Ok(())
    })
}

/// A database URL with its password left out, to print.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:…{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn restore(config: Config, file: &std::path::Path) -> Result<(), String> {
    let target = sqlite_path(&config, "restore")?;
    if target.exists() {
        return Err(format!("{} exists: restore into an empty data dir", target.display()));
    }
    let folder = target.parent().ok_or("the database path has no folder")?;
    std::fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    let incoming = folder.join("nimbus.db.restoring");
    std::fs::copy(file, &incoming).map_err(|e| format!("{}: {e}", file.display()))?;
    let checked = tokio_runtime()?.block_on(async {
        let database = crate::config::DatabaseConfig::Sqlite { path: incoming.clone() };
        let store = crate::store::Store::connect(&database, config.query_timeout).await.map_err(|e| e.to_string())?;
        let intact = store.is_intact().await.map_err(|e| e.to_string());
        store.close().await;
        intact
    });
    match checked {
        Ok(true) => {
            std::fs::rename(&incoming, &target).map_err(|e| format!("{}: {e}", target.display()))?;
            println!("restored {} as {}", file.display(), target.display());
            Ok(())
        }
        Ok(false) | Err(_) => {
            let _ = std::fs::remove_file(&incoming);
            Err(format!("{} is not a whole Nimbus SQLite database", file.display()))
        }
    }
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
