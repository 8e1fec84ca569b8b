//! `drover user create`: creates a user through the same service the API
//! uses; `--admin` makes an administrator (the way to get the first one).

use std::io::BufRead;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use drover_worker::{BlockingPool, Broadcast};
use rand_core::{OsRng, RngCore};

use super::{block_on_local, config_failure, ConfigArgs, EXIT_USAGE};
use crate::app::Services;
use crate::domain::{Password, Role, UserEmail, UserName};
use crate::repo::migrate;
use crate::service::ServiceError;
use crate::telemetry::{self, Role as LogRole};

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user. Prints the user as JSON; prints a generated password
    /// unless --password-stdin is given.
    Create(CreateArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[arg(long)]
    email: String,
    #[arg(long)]
    name: String,
    /// Make the user an administrator.
    #[arg(long)]
    admin: bool,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

pub fn run(command: UserCommand) -> ExitCode {
    match command {
        UserCommand::Create(args) => create(&args),
    }
}

fn create(args: &CreateArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok((config, _)) => config,
        Err(error) => return config_failure(&error),
    };
    telemetry::init(&config.log, LogRole::Command);
    let usage = |message: String| {
        eprintln!("drover: {message}");
        ExitCode::from(EXIT_USAGE)
    };
    let email = match UserEmail::parse(&args.email) {
        Ok(email) => email,
        Err(error) => return usage(format!("--email: {}", error.issue)),
    };
    let name = match UserName::parse(&args.name) {
        Ok(name) => name,
        Err(error) => return usage(format!("--name: {}", error.issue)),
    };
    let (password, generated) = if args.password_stdin {
        let mut line = String::new();
        if let Err(error) = std::io::stdin().lock().read_line(&mut line) {
            return usage(format!("cannot read the password from standard input: {error}"));
        }
        (line.trim_end_matches(['\r', '\n']).to_owned(), false)
    } else {
        let mut bytes = [0u8; 15];
        OsRng.fill_bytes(&mut bytes);
        (bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(), true)
    };
    let password = match Password::parse(&password) {
        Ok(password) => password,
        Err(error) => return usage(format!("password: {}", error.issue)),
    };
    let role = if args.admin { Role::Admin } else { Role::User };
    let url = config.database_url();
    let result = block_on_local(async {
        if config.database.migrate_on_start {
            migrate::run(&url).await.map_err(|e| e.to_string())?;
        }
        let services = Services::build(&config, BlockingPool::new(2), Broadcast::standalone())
            .await
            .map_err(|e| e.to_string())?;
        services.users.register(email, name, &password, role).await.map_err(|e| match e {
            ServiceError::Taken(field) => format!("that {field} is already taken"),
            other => other.to_string(),
        })
    });
    match result {
        Ok(user) => {
            let json = serde_json::json!({
                "id": user.id.0,
                "email": user.email.as_str(),
                "name": user.name.as_str(),
                "role": user.role.as_str(),
            });
            println!("{json}");
            if generated {
                eprintln!("generated password (shown once): {}", password.expose());
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("drover: cannot create the user: {message}");
            ExitCode::FAILURE
        }
    }
}
