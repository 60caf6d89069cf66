//! Finding the daemon with no flags: from `config.toml` in the current folder (or `--config`),
//! the data dir it names holds the address a running daemon wrote (`tallyd.addr`), and, in
//! development, its certificate (`dev/cert.pem`) and API keys (`dev/api-keys.toml`). Flags and
//! environment variables override each piece.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};

/// What the command line said about where to connect.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--addr` / `TALLY_ADDR`.
    pub addr: Option<SocketAddr>,
    /// `--api-key` / `TALLY_API_KEY`.
    pub api_key: Option<String>,
    /// `--ca-cert` / `TALLY_CA_CERT`.
    pub ca_cert: Option<PathBuf>,
}

/// Where to connect and how to authenticate.
#[derive(Debug, Clone)]
pub struct Target {
    /// The daemon's address.
    pub addr: SocketAddr,
    /// PEM of the certificate to trust.
    pub ca_pem: Vec<u8>,
    /// The API key.
    pub api_key: String,
}

/// Paths and values read from `config.toml`, if there is one.
struct Found {
    listen: Option<SocketAddr>,
    data_dir: PathBuf,
    tls_cert: Option<PathBuf>,
}

/// Resolves the target: overrides first, then what the config and the data dir say.
pub fn discover(overrides: &Overrides) -> anyhow::Result<Target> {
    let found = read_config(overrides.config.as_deref())?;
    let addr = match overrides.addr {
        Some(addr) => addr,
        None => running_addr(&found.data_dir)?
            .or(found.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7070))),
    };
    let ca_path = overrides
        .ca_cert
        .clone()
        .or(found.tls_cert.clone())
        .unwrap_or_else(|| found.data_dir.join("dev").join("cert.pem"));
    let ca_pem = std::fs::read(&ca_path).with_context(|| {
        format!(
            "reading the daemon's certificate {} (start tallyd first, or pass --ca-cert)",
            ca_path.display()
        )
    })?;
    let api_key = match &overrides.api_key {
        Some(key) => key.clone(),
        None => dev_admin_key(&found.data_dir)?,
    };
    Ok(Target {
        addr,
        ca_pem,
        api_key,
    })
}

fn read_config(path: Option<&Path>) -> anyhow::Result<Found> {
    let default = Path::new("config.toml");
    let path = match path {
        Some(path) => Some(path),
        None if default.exists() => Some(default),
        None => None,
    };
    let doc: toml::Table = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => toml::Table::new(),
    };
    let base = path
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // The same `TALLY__SECTION__KEY` overrides tallyd applies, so both find the same daemon.
    let text_at = |section: &str, key: &str| {
        let var = format!(
            "TALLY__{}__{}",
            section.to_ascii_uppercase(),
            key.to_ascii_uppercase()
        );
        std::env::var(var).ok().or_else(|| {
            doc.get(section)
                .and_then(|s| s.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
    };
    let listen = text_at("server", "listen").and_then(|l| l.parse().ok());
    let data_dir = base.join(text_at("storage", "data_dir").unwrap_or("tally-data".into()));
    let tls_cert = text_at("server", "tls_cert").map(|c| base.join(c));
    Ok(Found {
        listen,
        data_dir,
        tls_cert,
    })
}

/// The address a running daemon wrote into its data dir, with an unspecified IP made loopback.
fn running_addr(data_dir: &Path) -> anyhow::Result<Option<SocketAddr>> {
    let path = data_dir.join("tallyd.addr");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let mut addr: SocketAddr = text
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold an address", path.display()))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(Some(addr))
}

fn dev_admin_key(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("dev").join("api-keys.toml");
    let text = std::fs::read_to_string(&path).map_err(|_| {
        anyhow!(
            "no API key: pass --api-key or set TALLY_API_KEY (no development keys at {})",
            path.display()
        )
    })?;
    let keys: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    keys.get("admin")
        .and_then(|k| k.as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{} has no admin key", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_address_certificate_and_admin_key_from_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"data\"\n",
        )
        .unwrap();
        let dev = dir.path().join("data/dev");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("cert.pem"), "PEM").unwrap();
        std::fs::write(
            dev.join("api-keys.toml"),
            "admin = \"k1\"\nclient = \"k2\"\nmonitor = \"k3\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("data/tallyd.addr"), "0.0.0.0:4567\n").unwrap();
        let overrides = Overrides {
            config: Some(dir.path().join("config.toml")),
            ..Overrides::default()
        };
        let target = discover(&overrides).unwrap();
        assert_eq!(target.addr, "127.0.0.1:4567".parse::<SocketAddr>().unwrap());
        assert_eq!(target.ca_pem, b"PEM");
        assert_eq!(target.api_key, "k1");
        let overrides = Overrides {
            api_key: Some("mine".into()),
            ..overrides
        };
        assert_eq!(discover(&overrides).unwrap().api_key, "mine");
    }

    #[test]
    fn a_missing_certificate_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            "[storage]\ndata_dir = \"nowhere\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            config: Some(dir.path().join("config.toml")),
            ..Overrides::default()
        };
        let err = format!("{:#}", discover(&overrides).unwrap_err());
        assert!(err.contains("start tallyd first"), "{err}");
    }
}
