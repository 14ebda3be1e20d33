//! The server's validated configuration: built once from the command line and the
//! environment, and the only thing the rest of the server sees. Parsing is `cli`'s job
//! (and `file`'s, for `--config`); checking is this module's.

pub mod cli;
pub mod file;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use app::budget::MAX_CHAT_URL_LEN;
use url::Url;

use crate::{
    chat::ChatRules,
    config::cli::{DataDirArg, ServeArgs},
    http::client_address::TrustedProxies,
    model::subscription::EndpointPolicy,
    push::DeliverySettings,
    store::StoreLocation,
};

/// The most history lines a server keeps: on sled, pruning walks past the kept lines' keys
/// with every new line.
pub const MAX_HISTORY_LIMIT: usize = 10_000;

/// The longest `--stale-after`, in days (ten years): longer is "off".
pub const MAX_STALE_AFTER_DAYS: u64 = 3650;

#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub vapid_subject: String,
    pub rules: ChatRules,
    pub delivery: DeliverySettings,
    pub store: StoreLocation,
    pub trusted_proxies: TrustedProxies,
    pub admin_token: Option<String>,
    /// Serve HTTPS with these files.
    pub tls: Option<TlsFiles>,
}

/// The store `data` names: PostgreSQL with --database-url, else sled in the data dir.
pub fn store_location(data: &DataDirArg, cache_mib: u64) -> Result<StoreLocation, ConfigError> {
    if cache_mib == 0 {
        return Err(ConfigError::CacheSize);
    }
    match &data.database_url {
        None => Ok(StoreLocation::Sled {
            cache_bytes: cache_mib * 1024 * 1024,
        }),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(StoreLocation::Postgres { url: url.clone() })
        }
        Some(_) => Err(ConfigError::DatabaseUrl),
    }
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Shorter admin tokens are too easy to guess.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "push services need a contact for this server: pass --vapid-subject \
         mailto:you@example.org (or an https: URL), or set PUSHCHAT_VAPID_SUBJECT"
    )]
    MissingSubject,
    #[error("--vapid-subject {subject:?} is not usable: {why}")]
    BadSubject { subject: String, why: &'static str },
    #[error("--history-limit must be between 1 and {MAX_HISTORY_LIMIT}")]
    HistoryLimit,
    #[error(
        "--stale-after must be a number of days between 1 and {MAX_STALE_AFTER_DAYS}, \
         or \"off\" (never prune silent browsers), not {0:?}"
    )]
    StaleAfter(String),
    #[error("--cache-mib must be at least 1")]
    CacheSize,
    #[error("--database-url must be a postgres:// (or postgresql://) URL")]
    DatabaseUrl,
    #[error("--fan-outs-at-once must be at least 1")]
    FanOutsAtOnce,
    #[error("--chat-lines-per-minute must be at least 1")]
    ChatRate,
    #[error("--members-per-address must be at least 1")]
    MembersPerAddress,
    #[error("--admin-token must be at least {MIN_ADMIN_TOKEN_LEN} characters")]
    AdminToken,
    #[error("--push-services {service:?} is not usable: {why}")]
    PushService { service: String, why: &'static str },
    #[error("--public-url {url:?} is not usable: {why}")]
    PublicUrl { url: String, why: &'static str },
}

impl Config {
    pub fn from_args(args: ServeArgs) -> Result<Self, ConfigError> {
        let subject = args.vapid_subject.ok_or(ConfigError::MissingSubject)?;
        let vapid_subject = validate_subject(subject.trim())?;
        if !(1..=MAX_HISTORY_LIMIT).contains(&args.history_limit) {
            return Err(ConfigError::HistoryLimit);
        }
        let stale_after = stale_after(&args.stale_after)?;
        let store = store_location(&args.data, args.cache_mib)?;
        let max_fan_outs = match (args.fan_outs_at_once, &store) {
            (Some(0), _) => return Err(ConfigError::FanOutsAtOnce),
            (Some(count), _) => count,
            // Each holds a connection: three instances stay within PostgreSQL's default
            // of 100 connections.
            (None, StoreLocation::Postgres { .. }) => 16,
            (None, StoreLocation::Sled { .. }) => DeliverySettings::default().max_fan_outs,
        };
        if args.chat_lines_per_minute == 0 {
            return Err(ConfigError::ChatRate);
        }
        if args.members_per_address == 0 {
            return Err(ConfigError::MembersPerAddress);
        }
        if args
            .admin_token
            .as_ref()
            .is_some_and(|token| token.trim().len() < MIN_ADMIN_TOKEN_LEN)
        {
            return Err(ConfigError::AdminToken);
        }
        let chat_url = chat_url(
            args.public_url.public_url.as_deref(),
            args.addr,
            args.tls_cert.is_some(),
        )?;
        let push_services = args
            .push_services
            .iter()
            .map(|service| validate_push_service(service))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            addr: args.addr,
            data_dir: args.data.data_dir,
            vapid_subject,
            rules: ChatRules {
                endpoints: EndpointPolicy {
                    allow_loopback: args.allow_loopback_endpoints,
                    push_services,
                },
                history_limit: args.history_limit,
                chat_lines_per_minute: args.chat_lines_per_minute,
                members_per_address: args.members_per_address,
                join_passphrase: args
                    .join_passphrase
                    .map(|passphrase| passphrase.trim().to_owned())
                    .filter(|passphrase| !passphrase.is_empty()),
                stale_after,
            },
            delivery: DeliverySettings {
                allow_loopback_endpoints: args.allow_loopback_endpoints,
                max_fan_outs,
                finish_queue_on_stop: !store.is_shared(),
                chat_url,
                ..DeliverySettings::default()
            },
            store,
            trusted_proxies: TrustedProxies(
                args.trusted_proxy
                    .iter()
                    .map(|address| address.to_canonical())
                    .collect(),
            ),
            admin_token: args.admin_token.map(|token| token.trim().to_owned()),
            tls: args
                .tls_cert
                .zip(args.tls_key)
                .map(|(cert, key)| TlsFiles { cert, key }),
        })
    }
}

/// `--stale-after`: a number of days, or "off" (`None`).
pub fn stale_after(given: &str) -> Result<Option<Duration>, ConfigError> {
    let given = given.trim();
    if given.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match given.parse::<u64>() {
        Ok(days) if (1..=MAX_STALE_AFTER_DAYS).contains(&days) => {
            Ok(Some(Duration::from_secs(days * 24 * 3600)))
        }
        _ => Err(ConfigError::StaleAfter(given.to_owned())),
    }
}

/// The chat's public URL, which every push's notification opens: `public_url` when given
/// (an absolute http or https URL of at most [`MAX_CHAT_URL_LEN`] bytes), else the
/// address the server listens on, `addr`, over https when it serves `tls` (an unspecified
/// address, such as 0.0.0.0, as localhost).
pub fn chat_url(
    public_url: Option<&str>,
    addr: SocketAddr,
    tls: bool,
) -> Result<String, ConfigError> {
    let Some(given) = public_url else {
        let scheme = if tls { "https" } else { "http" };
        let port = addr.port();
        let listening = match addr.ip() {
            ip if ip.is_unspecified() => format!("{scheme}://localhost:{port}/"),
            _ => format!("{scheme}://{addr}/"),
        };
        // As browsers write it: without the scheme's default port.
        return Ok(Url::parse(&listening).map_or(listening, String::from));
    };
    let bad = |why| ConfigError::PublicUrl {
        url: given.to_owned(),
        why,
    };
    let url = Url::parse(given.trim())
        .map_err(|_| bad("it must be an absolute URL such as https://chat.example.org/"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("it must be an http: or https: URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(bad(
            "give the address people open, without a user or a #fragment",
        ));
    }
    let url = url.to_string();
    if url.len() > MAX_CHAT_URL_LEN {
        return Err(bad(
            "it is longer than 128 bytes, which every push would carry",
        ));
    }
    Ok(url)
}

/// RFC 8292's `sub`: a mailto: address or an https: URL where the operator can be reached.
fn validate_subject(subject: &str) -> Result<String, ConfigError> {
    let bad = |why| ConfigError::BadSubject {
        subject: subject.to_owned(),
        why,
    };
    let url = Url::parse(subject).map_err(|_| bad("it must start with mailto: or https:"))?;
    let host = match url.scheme() {
        "mailto" => {
            let (user, domain) = url
                .path()
                .split_once('@')
                .ok_or_else(|| bad("a mailto: needs an address like mailto:you@example.org"))?;
            if user.is_empty() || domain.is_empty() {
                return Err(bad(
                    "a mailto: needs an address like mailto:you@example.org",
                ));
            }
            domain.to_ascii_lowercase()
        }
        "https" => url.host_str().unwrap_or_default().to_ascii_lowercase(),
        _ => return Err(bad("it must start with mailto: or https:")),
    };
    let host = host.trim_end_matches('.');
    if host == "localhost" || host.ends_with(".localhost") || host.ends_with(".local") {
        return Err(bad(
            "Apple's push service rejects localhost and .local contacts; give one people can reach",
        ));
    }
    Ok(subject.to_owned())
}

/// One of `--push-services`: a bare host name, which endpoints' hosts must be or end in.
/// Returned as endpoints' hosts are written: lowercase, IDNA-encoded, no trailing dot.
fn validate_push_service(service: &str) -> Result<String, ConfigError> {
    let bad = |why| ConfigError::PushService {
        service: service.to_owned(),
        why,
    };
    let name = service.trim();
    if name.is_empty() {
        return Err(bad(
            "a push service is empty; give host names separated by commas",
        ));
    }
    if name.starts_with("*.") {
        return Err(bad(
            "write it without \"*.\": a push service's subdomains are accepted already",
        ));
    }
    if name.starts_with('[') || name.parse::<std::net::IpAddr>().is_ok() {
        return Err(bad("give the push service's host name, not an address"));
    }
    if name.contains(['/', ':']) {
        return Err(bad(
            "give the host name alone, such as fcm.googleapis.com: no https://, port or path",
        ));
    }
    let not_a_name = "it is not a host name such as fcm.googleapis.com";
    let name = match url::Host::parse(name) {
        Ok(url::Host::Domain(name)) => name,
        Ok(_) => return Err(bad("give the push service's host name, not an address")),
        Err(_) => return Err(bad(not_a_name)),
    };
    let name = name.strip_suffix('.').unwrap_or(&name);
    let is_label = |label: &str| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !name.split('.').all(is_label) {
        return Err(bad(not_a_name));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_stale_after_is_days_or_off() {
        let days = |n: u64| Some(Duration::from_secs(n * 24 * 3600));
        assert_eq!(stale_after("60"), Ok(days(60)));
        assert_eq!(stale_after(" 1 "), Ok(days(1)));
        assert_eq!(stale_after("OFF"), Ok(None));
        for bad in ["0", "-3", "60d", "", "3651"] {
            let refused = stale_after(bad).unwrap_err();
            assert!(
                refused.to_string().starts_with("--stale-after "),
                "{refused}"
            );
        }
    }

    #[test]
    fn test_mailto_and_https_contacts_are_accepted() {
        assert!(validate_subject("mailto:ops@example.org").is_ok());
        assert!(validate_subject("https://chat.example.org/contact").is_ok());
    }

    #[test]
    fn test_other_contacts_are_refused_with_a_reason() {
        for subject in [
            "ops@example.org",
            "http://example.org",
            "mailto:",
            "mailto:@example.org",
            "https://",
        ] {
            assert!(
                matches!(
                    validate_subject(subject),
                    Err(ConfigError::BadSubject { .. })
                ),
                "{subject}"
            );
        }
    }

    #[test]
    fn test_localhost_contacts_are_refused_because_apple_rejects_them() {
        for subject in [
            "mailto:me@localhost",
            "https://localhost/",
            "mailto:me@box.local",
        ] {
            let error = validate_subject(subject).unwrap_err().to_string();
            assert!(error.contains("Apple"), "{subject}: {error}");
        }
    }

    fn serve(flags: &[&str]) -> Result<Config, ConfigError> {
        use clap::Parser;
        let mut all = vec![
            "pushchat",
            "serve",
            "--vapid-subject",
            "mailto:ops@example.org",
        ];
        all.extend(flags);
        match crate::config::cli::Cli::parse_from(all).command {
            crate::config::cli::Command::Serve(args) => Config::from_args(*args),
            _ => unreachable!("parsed a serve command"),
        }
    }

    #[test]
    fn test_push_services_are_any_public_host_unless_listed() {
        assert!(serve(&[]).unwrap().rules.endpoints.push_services.is_empty());
        let listed = serve(&[
            "--push-services",
            "fcm.googleapis.com, Push.Services.Mozilla.com,push.apple.com.",
        ])
        .unwrap();
        assert_eq!(
            listed.rules.endpoints.push_services,
            [
                "fcm.googleapis.com",
                "push.services.mozilla.com",
                "push.apple.com"
            ]
        );
        // They apply with loopback endpoints allowed, too.
        let both = serve(&["--allow-loopback-endpoints", "--push-services", "localhost"]).unwrap();
        assert!(both.rules.endpoints.allow_loopback);
        assert_eq!(both.rules.endpoints.push_services, ["localhost"]);
    }

    #[test]
    fn test_push_services_must_be_bare_host_names() {
        for service in [
            "https://fcm.googleapis.com",
            "fcm.googleapis.com/fcm/send",
            "fcm.googleapis.com:443",
            "",
            " ",
            "*.notify.windows.com",
            ".googleapis.com",
            "fcm..googleapis.com",
            "fcm googleapis.com",
            "user@fcm.googleapis.com",
            "142.250.185.74",
            "[2a00:1450::1]",
        ] {
            let error = validate_push_service(service).unwrap_err();
            assert!(
                matches!(error, ConfigError::PushService { .. }),
                "{service:?}"
            );
            assert!(error.to_string().contains("--push-services"), "{service:?}");
        }
        // Through the flag: an empty item between commas is refused, naming the flag.
        let error = serve(&["--push-services", "fcm.googleapis.com,,push.apple.com"])
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.starts_with("--push-services"), "{error}");
    }

    #[test]
    fn test_push_services_come_as_a_list_from_a_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pushchat.toml");
        std::fs::write(
            &file,
            "vapid-subject = \"mailto:ops@example.org\"\n\
             push-services = [\"fcm.googleapis.com\", \"push.services.mozilla.com\"]\n",
        )
        .unwrap();
        let args = ["pushchat", "serve", "--config"].map(std::ffi::OsString::from);
        let mut args = args.to_vec();
        args.push(file.into_os_string());
        let config = match crate::config::file::parse(args).unwrap().command {
            crate::config::cli::Command::Serve(args) => Config::from_args(*args).unwrap(),
            _ => unreachable!("parsed a serve command"),
        };
        assert_eq!(
            config.rules.endpoints.push_services,
            ["fcm.googleapis.com", "push.services.mozilla.com"]
        );
    }

    #[test]
    fn test_the_log_format_is_text_unless_a_flag_or_the_config_file_says_json() {
        use crate::config::cli::LogFormat;
        let parse = |args: &[&std::ffi::OsStr]| {
            let args = args.iter().map(|arg| arg.to_os_string()).collect();
            crate::config::file::parse(args).unwrap().log_format
        };
        let args = ["pushchat", "serve"].map(std::ffi::OsStr::new);
        assert_eq!(parse(&args), LogFormat::Text);
        let args = ["pushchat", "serve", "--log-format", "json"].map(std::ffi::OsStr::new);
        assert_eq!(parse(&args), LogFormat::Json);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pushchat.toml");
        std::fs::write(&file, "log-format = \"json\"\n").unwrap();
        let args = ["pushchat", "members", "--config"].map(std::ffi::OsStr::new);
        let mut args = args.to_vec();
        args.push(file.as_os_str());
        assert_eq!(parse(&args), LogFormat::Json);
    }

    #[test]
    fn test_the_public_url_defaults_to_the_listen_address() {
        assert_eq!(
            serve(&[]).unwrap().delivery.chat_url,
            "http://127.0.0.1:3000/"
        );
        let anywhere = serve(&["--addr", "0.0.0.0:8080"]).unwrap();
        assert_eq!(anywhere.delivery.chat_url, "http://localhost:8080/");
        let v6 = serve(&["--addr", "[::1]:3000"]).unwrap();
        assert_eq!(v6.delivery.chat_url, "http://[::1]:3000/");
        let addr = "192.0.2.7:443".parse().unwrap();
        assert_eq!(chat_url(None, addr, true).unwrap(), "https://192.0.2.7/");
    }

    #[test]
    fn test_a_public_url_is_an_absolute_http_url_and_named_in_its_error() {
        let given = serve(&["--public-url", "https://Chat.Example.org"]).unwrap();
        assert_eq!(given.delivery.chat_url, "https://chat.example.org/");
        let path = serve(&["--public-url", "https://example.org/team/chat/"]).unwrap();
        assert_eq!(path.delivery.chat_url, "https://example.org/team/chat/");
        let too_long = format!("https://example.org/{}", "a".repeat(MAX_CHAT_URL_LEN));
        for url in [
            "chat.example.org",
            "/chat",
            "ftp://example.org/",
            "mailto:ops@example.org",
            "https://user:secret@example.org/",
            "https://example.org/#top",
            too_long.as_str(),
        ] {
            let error = serve(&["--public-url", url]).err();
            assert!(
                matches!(error, Some(ConfigError::PublicUrl { .. })),
                "{url}: {error:?}"
            );
            let said = error.map(|error| error.to_string()).unwrap_or_default();
            assert!(said.starts_with("--public-url"), "{said}");
        }
    }

    #[test]
    fn test_the_store_is_sled_unless_a_postgres_url_names_one() {
        let sled = serve(&[]).unwrap();
        assert!(
            matches!(sled.store, StoreLocation::Sled { cache_bytes } if cache_bytes == 64 << 20)
        );
        assert_eq!(sled.delivery.max_fan_outs, 256);
        let url = "postgres://chat@db.example.org/chat";
        let postgres = serve(&["--database-url", url]).unwrap();
        assert_eq!(postgres.store, StoreLocation::Postgres { url: url.into() });
        // Each fan-out in progress holds a connection there.
        assert_eq!(postgres.delivery.max_fan_outs, 16);
        let tuned = serve(&["--database-url", url, "--fan-outs-at-once", "40"]).unwrap();
        assert_eq!(tuned.delivery.max_fan_outs, 40);
        assert_eq!(
            serve(&["--database-url", "mysql://db.example.org/chat"]).err(),
            Some(ConfigError::DatabaseUrl)
        );
        assert_eq!(
            serve(&["--fan-outs-at-once", "0"]).err(),
            Some(ConfigError::FanOutsAtOnce)
        );
    }
}
