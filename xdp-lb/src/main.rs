//! `xdp-lb`: the command line. Parses arguments, sets up logging, and hands over to
//! `daemon::run` or the validator; errors end as one line and a non-zero exit.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use xdp_lb::config::{self, XdpMode};

/// `--version`: the version, the commit, and what the host must offer.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("XDP_LB_COMMIT"),
    ")\nneeds: Linux >= 6.1 (XDP in driver or generic mode, BPF links, devmap hash, \
     LRU hash maps, CAP_BPF; its verifier tested on 6.1 and 6.18), glibc >= 2.34; \
     the XDP program is built in"
);

#[derive(Parser)]
#[command(
    name = "xdp-lb",
    version,
    long_version = LONG_VERSION,
    about = "XDP load balancer with VRRP failover and health checks (keepalived + LVS in one daemon)"
)]
struct Cli {
    /// Configuration file (TOML); default /etc/xdp-lb/lb.toml.
    #[arg(short, long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Override `dataplane.xdp_mode`.
    #[arg(long, value_enum)]
    xdp_mode: Option<ModeArg>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration, then what start-up needs from this host (interfaces,
    /// routes to the real servers, VRRP source addresses), without changing anything.
    Check {
        /// The file alone, without looking at this host (e.g. on a build host).
        #[arg(long)]
        offline: bool,
    },
    /// Show a running daemon's VRRP instances, services and real servers (read from
    /// its status API: `--api`, else `[global] api` of the configuration, by default
    /// 127.0.0.1:9180).
    Status {
        /// The status API's address, e.g. 127.0.0.1:9180.
        #[arg(long, value_name = "ADDR")]
        api: Option<std::net::SocketAddr>,
        /// Print the JSON snapshot as it is.
        #[arg(long)]
        json: bool,
        /// The API's `api_token`, with `--api` (read from the configuration otherwise).
        #[arg(long, env = "XDP_LB_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Drain this node: withdraw every announced VIP (`announce = true`) from the
    /// routing daemon while XDP keeps forwarding what still arrives, then wait until
    /// the announced services see no packet for `[announce] drain_idle`. The node
    /// stays drained until `xdp-lb resume` (or a restart).
    Drain {
        /// The status API's address, e.g. 127.0.0.1:9180.
        #[arg(long, value_name = "ADDR")]
        api: Option<std::net::SocketAddr>,
        /// The API's `api_token`, with `--api` (read from the configuration otherwise).
        #[arg(long, env = "XDP_LB_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Return once the VIPs are withdrawn, without waiting for the traffic to stop.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the traffic to stop, in seconds (exit status 1 after).
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        timeout: u64,
    },
    /// End a drain: announce the VIPs again while their services have quorum.
    Resume {
        /// The status API's address, e.g. 127.0.0.1:9180.
        #[arg(long, value_name = "ADDR")]
        api: Option<std::net::SocketAddr>,
        /// The API's `api_token`, with `--api` (read from the configuration otherwise).
        #[arg(long, env = "XDP_LB_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// List the flow table like `ipvsadm -Lnc` (client, virtual service, real server,
    /// closing, idle), then ActiveConn/InActConn per real server.
    Connections {
        /// The status API's address, e.g. 127.0.0.1:9180.
        #[arg(long, value_name = "ADDR")]
        api: Option<std::net::SocketAddr>,
        /// The API's `api_token`, with `--api` (read from the configuration otherwise).
        #[arg(long, env = "XDP_LB_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Only this virtual service, as `VIP:PORT/PROTO` (e.g. 192.0.2.100:80/tcp).
        #[arg(long)]
        service: Option<String>,
        /// Print the JSON as it is.
        #[arg(long)]
        json: bool,
    },
    /// Explain where a connection goes and why: the service it matches (or why none),
    /// the VRRP state that gates it, its flow entry (real server, age), else the hash
    /// bucket a new connection takes (sh, maglev) or the round-robin shares (rr, wrr),
    /// with the real server's health and weight. Read from the live maps through the
    /// status API.
    Explain {
        /// The client, as IP or IP:PORT ([IPv6]:PORT). Without the port the flow table
        /// is not looked up, and a maglev service's bucket is unknown (sh needs none).
        #[arg(value_name = "SRC[:PORT]")]
        src: String,
        /// The virtual service's address and port, VIP:PORT.
        #[arg(value_name = "DST:PORT")]
        dst: std::net::SocketAddr,
        #[arg(value_enum, value_name = "PROTO")]
        proto: ProtoArg,
        /// The status API's address, e.g. 127.0.0.1:9180.
        #[arg(long, value_name = "ADDR")]
        api: Option<std::net::SocketAddr>,
        /// The API's `api_token`, with `--api` (read from the configuration otherwise).
        #[arg(long, env = "XDP_LB_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the JSON as it is.
        #[arg(long)]
        json: bool,
    },
    /// Print the digest of a page's body as keepalived's `genhash` does (`genhash -s
    /// SERVER -p PORT -u URL`): the value of an http check's `digest` ("md5:" + it),
    /// or of keepalived's `url { digest }`. The page is fetched as the check fetches it.
    Genhash {
        /// The server's IP address.
        #[arg(short = 's', long, value_name = "ADDRESS")]
        server: std::net::IpAddr,
        /// The server's port.
        #[arg(short = 'p', long, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// The path to fetch, e.g. /index.html.
        #[arg(short = 'u', long, value_name = "PATH")]
        url: String,
        /// Over TLS (SSL_GET); any certificate is accepted, as keepalived's genhash does.
        #[arg(short = 'S', long)]
        use_ssl: bool,
        /// The Host header (and the TLS server name), as the check's `virtualhost`.
        #[arg(
            short = 'V',
            long = "use-virtualhost",
            visible_alias = "virtualhost",
            value_name = "HOST"
        )]
        virtualhost: Option<String>,
        /// Send the virtualhost as SNI (keepalived's -I); xdp-lb always does, so this
        /// is accepted for keepalived's command lines and changes nothing.
        #[arg(short = 'I', long)]
        use_sni: bool,
        /// The hash: md5 (keepalived's, the default) or sha256 (xdp-lb's checks take both).
        #[arg(short = 'H', long, value_enum, default_value = "md5")]
        hash: HashArg,
        /// Limit of each network phase, in seconds.
        #[arg(short = 't', long, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: u64,
        /// Also print the status and the body's length (on stderr).
        #[arg(short = 'v', long)]
        verbose: bool,
    },
    /// Print the man page or a shell completion script (for packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
    },
    /// Translate a keepalived.conf into an xdp-lb configuration on stdout; every
    /// setting not translated is reported on stderr with its line.
    ImportKeepalived {
        /// The keepalived configuration file.
        file: PathBuf,
        /// `[dataplane] interfaces` (repeatable); default: the vrrp instances' interfaces.
        #[arg(long = "interface", value_name = "IFACE")]
        interfaces: Vec<String>,
        /// keepalived's config id (`keepalived -i ID`): import the `@ID` lines meant for
        /// this host; without it every `@...` line is reported and left out.
        #[arg(long = "config-id", value_name = "ID")]
        config_id: Option<String>,
        /// Firewall rules setting the marks of `fwmark` virtual servers and group
        /// entries (`iptables-save`/`ip6tables-save` or `nft list ruleset` output;
        /// repeatable): a mark whose rules match only VIPs and ports becomes those
        /// VIP:port pairs.
        #[arg(long = "fwmark-rules", value_name = "FILE")]
        fwmark_rules: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Generated {
    Man,
    Bash,
    Zsh,
    Fish,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtoArg {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, ValueEnum)]
enum HashArg {
    Md5,
    Sha256,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Auto,
    Driver,
    Generic,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xdp-lb: error: {}", xdp_lb::error_chain::Chain(&*e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(Command::Status { api, json, token }) = &cli.command {
        let (addr, token) = api_target(*api, token, cli.config.as_deref())?;
        let snapshot = block_on(xdp_lb::status_client::fetch(addr, token.as_deref()))?;
        if *json {
            println!("{}", serde_json::to_string_pretty(&snapshot)?);
        } else {
            print!("{}", xdp_lb::status_client::render(&snapshot));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Command::Drain {
        api,
        token,
        no_wait,
        timeout,
    }) = &cli.command
    {
        let (addr, token) = api_target(*api, token, cli.config.as_deref())?;
        let timeout = std::time::Duration::from_secs(*timeout);
        return block_on(drain(addr, token, *no_wait, timeout));
    }
    if let Some(Command::Resume { api, token }) = &cli.command {
        let (addr, token) = api_target(*api, token, cli.config.as_deref())?;
        let status = block_on(xdp_lb::status_client::post_drain(
            addr,
            token.as_deref(),
            false,
        ))?;
        println!("{}: announced VIPs follow their quorum again", status.state);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Command::Connections {
        api,
        token,
        service,
        json,
    }) = &cli.command
    {
        let (addr, token) = api_target(*api, token, cli.config.as_deref())?;
        let list = block_on(xdp_lb::status_client::fetch_connections(
            addr,
            token.as_deref(),
            service.as_deref(),
        ))?;
        if *json {
            println!("{}", serde_json::to_string_pretty(&list)?);
        } else {
            print!("{}", xdp_lb::connections::render(&list));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Command::Explain {
        src,
        dst,
        proto,
        api,
        token,
        json,
    }) = &cli.command
    {
        let (src, src_port) = match src.parse::<std::net::SocketAddr>() {
            Ok(s) => (s.ip(), Some(s.port())),
            Err(_) => (
                src.parse::<std::net::IpAddr>().map_err(|_| {
                    anyhow::anyhow!(
                        "SRC {src:?} is neither IP nor IP:PORT (e.g. 198.51.100.7:40000, \
                         [2001:db8::7]:40000)"
                    )
                })?,
                None,
            ),
        };
        let query = xdp_lb::explain::Query {
            src,
            src_port,
            dst: dst.ip(),
            dst_port: dst.port(),
            protocol: match proto {
                ProtoArg::Tcp => "tcp",
                ProtoArg::Udp => "udp",
            }
            .into(),
        };
        query.check()?;
        let (addr, token) = api_target(*api, token, cli.config.as_deref())?;
        let answer = block_on(xdp_lb::status_client::fetch_explanation(
            addr,
            token.as_deref(),
            &query,
        ))?;
        if *json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            print!("{}", xdp_lb::explain::render(&answer));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Command::ImportKeepalived {
        file,
        interfaces,
        config_id,
        fwmark_rules,
    }) = &cli.command
    {
        let options = xdp_lb::import::Options {
            interfaces: interfaces.clone(),
            config_id: config_id.clone(),
            fwmark_rules: fwmark_rules.clone(),
        };
        return import_keepalived(file, &options).map(|()| ExitCode::SUCCESS);
    }
    if let Some(Command::Generate { what }) = &cli.command {
        return generate(*what).map(|()| ExitCode::SUCCESS);
    }
    if let Some(Command::Genhash {
        server,
        port,
        url,
        use_ssl,
        virtualhost,
        use_sni: _,
        hash,
        timeout,
        verbose,
    }) = &cli.command
    {
        let request = xdp_lb_checks::Genhash {
            server: std::net::SocketAddr::new(*server, *port),
            path: url.clone(),
            virtualhost: virtualhost.clone(),
            tls: *use_ssl,
            hash: match hash {
                HashArg::Md5 => xdp_lb_checks::HashKind::Md5,
                HashArg::Sha256 => xdp_lb_checks::HashKind::Sha256,
            },
            timeout: std::time::Duration::from_secs(*timeout),
        };
        return genhash(&request, *verbose).map(|()| ExitCode::SUCCESS);
    }
    let path = match config_path(cli.config.as_deref()) {
        Some(path) => path,
        None => anyhow::bail!(
            "no configuration: {} does not exist; give `--config FILE` (see \
             config/lb.example.toml)",
            config::DEFAULT_PATH
        ),
    };
    let mut config = config::load(&path)?;
    if let Some(mode) = cli.xdp_mode {
        config.dataplane.xdp_mode = match mode {
            ModeArg::Auto => XdpMode::Auto,
            ModeArg::Driver => XdpMode::Driver,
            ModeArg::Generic => XdpMode::Generic,
        };
    }
    match cli.command {
        Some(
            Command::Status { .. }
            | Command::Drain { .. }
            | Command::Resume { .. }
            | Command::Connections { .. }
            | Command::Explain { .. }
            | Command::ImportKeepalived { .. }
            | Command::Genhash { .. }
            | Command::Generate { .. },
        ) => {
            unreachable!("handled above")
        }
        Some(Command::Check { offline }) => {
            if !offline {
                block_on(xdp_lb::preflight::check(&config)).map_err(|e| {
                    e.context(format!("{}: this host cannot run it", path.display()))
                })?;
                for warning in xdp_lb::preflight::host_warnings(&config) {
                    eprintln!("xdp-lb: warning: {warning}");
                }
            }
            let backends: usize = config
                .virtual_servers
                .iter()
                .map(|v| v.real_servers.len())
                .sum();
            // Rules that never decide are not errors (they install and count), but
            // most likely mistakes: said on stderr, as the daemon logs them.
            let shadowed = config::shadowed_rules(&config);
            for shadow in &shadowed {
                eprintln!("xdp-lb: warning: {shadow}");
            }
            let rules: usize = config.filter.deny.len()
                + config
                    .virtual_servers
                    .iter()
                    .map(|v| v.allow.len() + v.deny.len())
                    .sum::<usize>();
            let filter = match (rules, shadowed.len()) {
                (0, _) => String::new(),
                (n, 0) => format!(", {n} source-filter rules"),
                (n, s) => format!(", {n} source-filter rules ({s} never decide)"),
            };
            // bfdd may well start after xdp-lb (which keeps trying), so its absence is
            // a warning, said where the operator looks.
            let socket = &config.global.bfdd_socket;
            if !config.bfd.is_empty() && !offline && !socket.exists() {
                eprintln!(
                    "xdp-lb: warning: bfdd's control socket {} is not there: the [bfd.*] \
                     sessions stay unknown until bfdd runs with it (`bfdd=yes` in \
                     /etc/frr/daemons; `--bfdctl` for another path)",
                    socket.display()
                );
            }
            let bfd = match config.bfd.len() {
                0 => String::new(),
                n => format!(", {n} bfd sessions"),
            };
            println!(
                "{}: ok ({} virtual servers, {} real servers, {} vrrp instances{bfd}{filter}, \
                 interfaces: {})",
                path.display(),
                config.virtual_servers.len(),
                backends,
                config.vrrp.len(),
                config.dataplane.interfaces.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let xdp_mode = config.dataplane.xdp_mode;
            runtime
                .block_on(async move {
                    let (tx, reloads) = tokio::sync::mpsc::channel(4);
                    tokio::spawn(reload_on_sighup(path, xdp_mode, tx));
                    xdp_lb::daemon::run_reloadable(config, reloads, shutdown_signal()).await
                })
                .map(|exit| match exit {
                    xdp_lb::daemon::Exit::Stopped => ExitCode::SUCCESS,
                    xdp_lb::daemon::Exit::HandedOver => {
                        ExitCode::from(xdp_lb::daemon::Exit::HANDOVER_CODE)
                    }
                })
        }
    }
}

/// The configuration to read: `--config`, else the default path if it exists.
fn config_path(given: Option<&std::path::Path>) -> Option<PathBuf> {
    let default = std::path::Path::new(config::DEFAULT_PATH);
    given
        .map(std::path::Path::to_path_buf)
        .or_else(|| default.exists().then(|| default.to_path_buf()))
}

/// The status API to ask: `--api` (with `--token`), else the configuration's `[global]
/// api`. Without `--config`, the default configuration if it exists, else the default
/// address: the API is on by default, so `xdp-lb status` needs no arguments.
fn api_target(
    api: Option<std::net::SocketAddr>,
    token: &Option<String>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<(std::net::SocketAddr, Option<String>)> {
    if let Some(addr) = api {
        return Ok((addr, token.clone()));
    }
    let Some(path) = config_path(config) else {
        return Ok((config::DEFAULT_API, token.clone()));
    };
    let global = config::load(&path)?.global;
    let addr = global.api.ok_or_else(|| {
        anyhow::anyhow!(
            "{} sets `[global] api = \"off\"`, so the daemon serves no status; remove it \
             (the default is {}) or give --api",
            path.display(),
            config::DEFAULT_API
        )
    })?;
    Ok((addr, token.clone().or(global.api_token)))
}

/// `drain`: POST /drain, then (unless `no_wait`) /status until the drain is complete.
async fn drain(
    addr: std::net::SocketAddr,
    token: Option<String>,
    no_wait: bool,
    timeout: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    use xdp_lb::advertise::DrainState;
    let token = token.as_deref();
    let started = std::time::Instant::now();
    let status = xdp_lb::status_client::post_drain(addr, token, true).await?;
    println!("announced VIPs withdrawn; XDP forwards what still arrives");
    if no_wait || status.state == DrainState::Drained {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let s = xdp_lb::status_client::fetch(addr, token).await?;
        match s.drain.state {
            DrainState::Drained => {
                println!(
                    "drained: the last packet came {:.1} s after the withdrawal",
                    s.drain.last_traffic_after_seconds.unwrap_or(0.0)
                );
                return Ok(ExitCode::SUCCESS);
            }
            DrainState::Draining => {}
            other => anyhow::bail!("the drain ended: the node is {other} (xdp-lb resume?)"),
        }
        if started.elapsed() > timeout {
            eprintln!(
                "xdp-lb: traffic still arrives {:.0} s after the withdrawal (is this the \
                 only node announcing the VIPs?); the node stays drained",
                started.elapsed().as_secs_f64()
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `genhash`: the digest alone on stdout, as keepalived 2.x's genhash prints it, so
/// scripts that read its output read ours; anything else on stderr.
fn genhash(request: &xdp_lb_checks::Genhash, verbose: bool) -> anyhow::Result<()> {
    let target = format!("{}{}", request.server, request.path);
    let fetched = block_on(async {
        xdp_lb_checks::genhash(request)
            .await
            .map_err(|reason| anyhow::anyhow!("GET {target}: {reason}"))
    })?;
    if verbose {
        eprintln!(
            "GET {target}: status {}, {} body bytes, {}",
            fetched.status,
            fetched.body_len,
            request.hash.name()
        );
    }
    if !xdp_lb_checks::DEFAULT_STATUS.contains(&fetched.status) {
        // keepalived's genhash hashes the body whatever the status; say what a check
        // of this url would also need.
        eprintln!(
            "xdp-lb: warning: GET {target} answered status {}: a check of it fails unless \
             its `status` accepts {}",
            fetched.status, fetched.status
        );
    }
    println!("{}", fetched.digest);
    Ok(())
}

fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// Logs to stderr, or straight to the journal when stderr is the journal (under
/// systemd), so each line keeps its priority (journalctl -p warning).
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    match journald {
        Some(journald) => tracing_subscriber::registry()
            .with(filter)
            .with(journald.with_syslog_identifier("xdp-lb".into()))
            .init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
    }
}

/// `generate`: the man page (roff) or a completion script, on stdout.
fn generate(what: Generated) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    let mut command = Cli::command();
    let mut out = std::io::stdout();
    match what {
        Generated::Man => clap_mangen::Man::new(command)
            .section("8")
            .render(&mut out)?,
        Generated::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut command, "xdp-lb", &mut out)
        }
        Generated::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut command, "xdp-lb", &mut out)
        }
        Generated::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut command, "xdp-lb", &mut out)
        }
    }
    Ok(())
}

/// `import-keepalived`: notes on stderr (and as comments in the TOML), the TOML on
/// stdout only if it is valid.
fn import_keepalived(
    file: &std::path::Path,
    options: &xdp_lb::import::Options,
) -> anyhow::Result<()> {
    let import = xdp_lb::import::import_file(file, options)?;
    for line in import.report() {
        eprintln!("{line}");
    }
    if import.interfaces_from_vrrp {
        eprintln!(
            "xdp-lb: note: [dataplane] interfaces = {:?} (the vrrp instances' interfaces); \
             give --interface to choose",
            import.interfaces
        );
    }
    import.validate().map_err(anyhow::Error::msg)?;
    print!("{}", import.toml);
    Ok(())
}

/// On each SIGHUP, reads and validates `path` again and hands the result to the
/// daemon; an invalid file is reported (file:line:col) and the daemon keeps running
/// as it was. `--xdp-mode` keeps applying.
async fn reload_on_sighup(
    path: PathBuf,
    xdp_mode: XdpMode,
    tx: tokio::sync::mpsc::Sender<xdp_lb::config::Config>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(e) => {
            tracing::error!("cannot install the SIGHUP handler, reload is off: {e}");
            return;
        }
    };
    while hup.recv().await.is_some() {
        tracing::info!(config = %path.display(), "SIGHUP received: reloading the configuration");
        // Parsed off the runtime: a big file must not delay an advert.
        let parsed = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || config::load(&path)).await
        };
        let Ok(parsed) = parsed else {
            tracing::error!("reload refused: parsing the configuration panicked");
            continue;
        };
        match parsed {
            Ok(mut config) => {
                config.dataplane.xdp_mode = xdp_mode;
                if tx.send(config).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!("reload refused, the running configuration stays: {e}"),
        }
    }
}

/// Resolves on SIGINT or SIGTERM: a stop, unless the SIGTERM is systemd restarting
/// the service, which is handed over as SIGQUIT is.
async fn shutdown_signal() -> xdp_lb::daemon::Shutdown {
    use tokio::signal::unix::{SignalKind, signal};
    use xdp_lb::daemon::Shutdown;
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {
            if xdp_lb::systemd::restart_in_progress().await {
                tracing::info!("SIGTERM received while systemd restarts the service: handing over");
                Shutdown::Handover
            } else {
                tracing::info!("SIGTERM received");
                Shutdown::Stop
            }
        }
        _ = int.recv() => {
            tracing::info!("SIGINT received");
            Shutdown::Stop
        }
    }
}
