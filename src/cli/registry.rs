//! `berth pull`, `berth push`, `berth login`, `berth logout`.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::{bail, Context};
use clap::Args;

use berth::engine::Engine;
use berth::image::registry::{Credentials, ProgressMode, PullOptions, PushOptions};

#[derive(Args)]
pub struct PullArgs {
    /// Pick this platform from a multi-platform image: os/arch[/variant].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Verify TLS certificates; false also allows plain http.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    tls_verify: bool,
    /// Print only the image id.
    #[arg(short, long)]
    quiet: bool,
    /// The image: NAME[:TAG] or NAME@DIGEST.
    image: String,
}

#[derive(Args)]
pub struct PushArgs {
    /// Verify TLS certificates; false also allows plain http.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    tls_verify: bool,
    /// Print only the digest.
    #[arg(short, long)]
    quiet: bool,
    /// The image to push (its name says where to).
    image: String,
    /// Push it under this name instead (podman's form).
    destination: Option<String>,
}

#[derive(Args)]
pub struct LoginArgs {
    /// User name (asked for when not given).
    #[arg(short, long)]
    username: Option<String>,
    /// Password; insecure, it shows in the process list: prefer --password-stdin.
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Verify TLS certificates; false also allows plain http.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    tls_verify: bool,
    /// The registry, e.g. registry.example.com or localhost:5000.
    server: String,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// The registry to forget the credentials of.
    server: String,
}

fn progress(quiet: bool) -> ProgressMode {
    if quiet {
        ProgressMode::Quiet
    } else {
        ProgressMode::Auto
    }
}

/// `berth pull`: progress on stderr, the image id on stdout.
pub fn pull(engine: &Engine, args: PullArgs) -> anyhow::Result<()> {
    let opts = PullOptions {
        platform: args.platform,
        tls_verify: args.tls_verify,
        progress: progress(args.quiet),
        credentials: None,
    };
    let pulled = engine
        .pull(&args.image, &opts)
        .with_context(|| format!("pulling {}", args.image))?;
    println!("{}", pulled.id);
    Ok(())
}

/// `berth push`: progress on stderr, `TAG: digest: DIGEST size: N` on stdout.
pub fn push(engine: &Engine, args: PushArgs) -> anyhow::Result<()> {
    let opts = PushOptions {
        tls_verify: args.tls_verify,
        progress: progress(args.quiet),
        credentials: None,
    };
    let pushed = engine
        .push(&args.image, args.destination.as_deref(), &opts)
        .with_context(|| format!("pushing {}", args.image))?;
    if args.quiet {
        println!("{}", pushed.digest);
    } else {
        println!(
            "{}: digest: {} size: {}",
            pushed.tag, pushed.digest, pushed.size
        );
    }
    Ok(())
}

/// `berth login`: the password from --password-stdin, -p, or asked on the terminal.
pub fn login(engine: &Engine, args: LoginArgs) -> anyhow::Result<()> {
    if args.password_stdin && args.password.is_some() {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    if args.password_stdin && args.username.is_none() {
        bail!("--password-stdin needs --username");
    }
    let username = match args.username {
        Some(u) => u,
        None => prompt("Username: ")?,
    };
    if username.is_empty() {
        bail!("a user name is needed: pass --username");
    }
    let password = if args.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the password from standard input")?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else {
        read_password()?
    };
    if password.is_empty() {
        bail!("the password is empty: give one (with --password-stdin to pipe it in)");
    }
    let creds = Credentials { username, password };
    engine
        .login(&args.server, &creds, args.tls_verify)
        .with_context(|| format!("logging in to {}", args.server))?;
    println!("Login Succeeded!");
    Ok(())
}

/// `berth logout`.
pub fn logout(engine: &Engine, args: LogoutArgs) -> anyhow::Result<()> {
    let host = engine.logout(&args.server)?;
    println!("Removed login credentials for {host}");
    Ok(())
}

/// Asks for a line on the terminal (stdin must be one).
fn prompt(question: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask on: pass --username (and --password-stdin)");
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// Reads a password from the terminal without echoing it.
fn read_password() -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("no terminal to ask the password on: use --password-stdin");
    }
    eprint!("Password: ");
    std::io::stderr().flush()?;
    let saved = tcgetattr(&stdin).context("reading the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turning echo off")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
