//! The `certgate` binary: CLI, tracing, config, then the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(version, about = "mutual-TLS-aware OAuth edge gateway")]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "config/certgate.toml")]
    config: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and exit.
    CheckConfig,
    /// Create or upgrade the PostgreSQL schema (store.backend = "postgres") and exit.
    Migrate,
    /// Copy a memory-backend data directory (snapshot + journals) into an empty PostgreSQL
    /// database, creating its schema: the move from one node to many.
    MigrateStore {
        /// The data directory (`store.data_dir` of the node being moved).
        #[arg(long)]
        from: PathBuf,
        /// The database URL (as `store.postgres_url`, `sslmode` included).
        #[arg(long)]
        to: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Keep the guard alive: dropping it flushes the log writer thread.
    let _log_guard = certgate::logging::init(match cli.log_format {
        LogFormat::Text => certgate::logging::LogFormat::Text,
        LogFormat::Json => certgate::logging::LogFormat::Json,
    });

    if let Some(Command::MigrateStore { from, to }) = &cli.command {
        return migrate_store(&cli.config, from, to);
    }
    let config = match certgate::Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("certgate: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Migrate) = cli.command {
        return migrate(&config);
    }
    if let Some(Command::CheckConfig) = cli.command {
        for warning in config.warnings() {
            eprintln!("certgate: warning: {warning}");
        }
        // Everything start-up checks (TLS files, static clients) must fail here too.
        if let Err(e) = certgate::check(&config) {
            eprintln!("certgate: invalid configuration: {e}");
            return ExitCode::from(2);
        }
        println!("{}: configuration ok", cli.config.display());
        return ExitCode::SUCCESS;
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("certgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listeners = match certgate::Listeners::bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("certgate: cannot listen: {e}");
                return ExitCode::FAILURE;
            }
        };
        // The addresses actually bound: a configured port 0 shows as the port the kernel
        // chose (the tests start the binary that way and read the ports from this line).
        let local = |l: &tokio::net::TcpListener| l.local_addr().ok();
        let tls = local(&listeners.tls).unwrap_or(config.server.tls_listen);
        let proxy = listeners
            .proxy
            .as_ref()
            .and_then(local)
            .or(config.server.proxy_listen);
        let admin = listeners
            .admin
            .as_ref()
            .and_then(local)
            .or(config.server.admin_listen);
        tracing::info!(
            tls = %tls,
            proxy = ?proxy,
            admin = ?admin,
            issuer = %config.server.issuer,
            "certgate listening"
        );
        match certgate::run(
            config,
            listeners,
            Arc::new(certgate::clock::SystemClock),
            shutdown_signal(),
        )
        .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("certgate: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// A runtime for the one-shot commands.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("certgate: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// `certgate migrate`.
fn migrate(config: &certgate::Config) -> ExitCode {
    if config.store.backend != certgate::config::Backend::Postgres {
        eprintln!("certgate: migrate: store.backend is not \"postgres\"; nothing to migrate");
        return ExitCode::from(2);
    }
    let settings = match certgate::store::postgres::PgSettings::from_config(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("certgate: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(certgate::store::postgres::connect_and_migrate(settings)) {
        Ok(_) => {
            println!("certgate: database schema is up to date");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("certgate: migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `certgate migrate-store --from DATA_DIR --to URL`. TLS settings for the database
/// (`store.postgres_ca`) come from `--config` when that file exists.
fn migrate_store(config_path: &std::path::Path, from: &std::path::Path, to: &str) -> ExitCode {
    let mut config = if config_path.exists() {
        match certgate::Config::load(config_path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("certgate: invalid configuration: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        certgate::Config::default()
    };
    config.store.backend = certgate::config::Backend::Postgres;
    config.store.postgres_url = to.to_owned();
    let settings = match certgate::store::postgres::PgSettings::from_config(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("certgate: migrate-store: {e}");
            return ExitCode::from(2);
        }
    };
    let source =
        match certgate::store::MemoryStore::load(from, Arc::new(certgate::clock::SystemClock)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("certgate: migrate-store: {e}");
                return ExitCode::FAILURE;
            }
        };
    let (clients, tokens) = source.records();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let done = rt.block_on(async {
        let pool = certgate::store::postgres::connect_and_migrate(settings).await?;
        certgate::store::PgStore::import(&pool, None, &clients, &tokens).await
    });
    match done {
        Ok(()) => {
            println!(
                "certgate: migrated {} clients and {} access tokens from {}",
                clients.len(),
                tokens.len(),
                from.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("certgate: migrate-store: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
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
