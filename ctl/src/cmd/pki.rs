//! `tidemark pki init`, `issue` and `revoke`: a small CA for the fleet.
//!
//! Every process presents a certificate whose common name is its identity, `ROLE:NAME`
//! (`agent:db1`, `sandbox:drill1`, `admin:alice`, `controller:backup1`); the controller takes
//! the caller's role and name from it. Keys are written 0600, and nothing is overwritten.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;
use tidemark_core::identity::{Identity, Role};

use crate::client::{CliError, Exit};
use crate::output::{Format, print_json};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Create the fleet CA in DIR (ca.crt, ca.key).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Validity of the CA certificate.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a key and certificate for ROLE:NAME, signed by the CA in DIR.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// agent:HOST, sandbox:HOST, admin:NAME, viewer:NAME or controller:HOST.
        #[arg(long)]
        name: String,
        /// Extra DNS names or IP addresses the controller is reached by (controller only).
        #[arg(long)]
        san: Vec<String>,
        #[arg(long, default_value_t = 825)]
        days: i64,
    },
    /// Block a certificate at the controller at once (a stolen or retired host's): every
    /// call it makes is refused and its job stream is closed. A certificate issued afterwards
    /// under the same name is not affected.
    Revoke {
        /// The CA directory holding ROLE-NAME.crt (renamed to .revoked afterwards, so that
        /// a new certificate can be issued under the name).
        #[arg(long, requires = "name", conflicts_with = "cert")]
        dir: Option<PathBuf>,
        /// ROLE:NAME, with --dir.
        #[arg(long, requires = "dir")]
        name: Option<String>,
        /// Or the certificate file itself.
        #[arg(long, required_unless_present = "dir")]
        cert: Option<PathBuf>,
    },
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::new(Exit::Usage, msg)
}

fn failed(msg: impl Into<String>) -> CliError {
    CliError::new(Exit::Failed, msg)
}

pub async fn run(config: Option<&Path>, format: Format, args: Args) -> Result<Exit, CliError> {
    let written = match args.cmd {
        Cmd::Revoke { dir, name, cert } => {
            return revoke(config, format, dir.as_deref(), name.as_deref(), cert).await;
        }
        Cmd::Init { dir, days } => init(&dir, days)?,
        Cmd::Issue {
            dir,
            name,
            san,
            days,
        } => issue(&dir, &name, &san, days)?,
    };
    if format == Format::Json {
        print_json(&json!({ "files": written }));
    } else {
        for f in &written {
            println!("wrote {}", f.display());
        }
    }
    Ok(Exit::Ok)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// Write a new file, refusing to replace an existing one.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), CliError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                failed(format!(
                    "{} already exists; refusing to overwrite it",
                    path.display()
                ))
            } else {
                failed(format!("writing {}: {e}", path.display()))
            }
        })?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| failed(format!("writing {}: {e}", path.display())))
}

fn init(dir: &Path, days: i64) -> Result<Vec<PathBuf>, CliError> {
    fs::create_dir_all(dir).map_err(|e| failed(format!("creating {}: {e}", dir.display())))?;
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if key.exists() || crt.exists() {
        return Err(failed(format!(
            "{} already holds a CA; refusing to overwrite it",
            dir.display()
        )));
    }
    let kp = KeyPair::generate().map_err(|e| failed(format!("generating the CA key: {e}")))?;
    let mut params = CertificateParams::new(Vec::new()).map_err(|e| failed(e.to_string()))?;
    // A name of its own, so that certificates of two fleets' CAs are never confused.
    let tag: String = kp
        .public_key_raw()
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Tidemark fleet CA {tag}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days);
    let cert = params
        .self_signed(&kp)
        .map_err(|e| failed(format!("signing the CA certificate: {e}")))?;
    write_new(&key, &kp.serialize_pem(), 0o600)?;
    write_new(&crt, &cert.pem(), 0o644)?;
    Ok(vec![crt, key])
}

fn cert_stem(id: &Identity) -> String {
    format!("{}-{}", id.role.as_str(), id.name)
}

async fn revoke(
    config: Option<&Path>,
    format: Format,
    dir: Option<&Path>,
    name: Option<&str>,
    cert: Option<PathBuf>,
) -> Result<Exit, CliError> {
    let path = match (dir, name, cert) {
        (_, _, Some(c)) => c,
        (Some(d), Some(n), None) => {
            let id: Identity = n
                .parse()
                .map_err(|e: tidemark_core::identity::IdentityError| usage(e.to_string()))?;
            d.join(format!("{}.crt", cert_stem(&id)))
        }
        _ => return Err(usage("give --cert FILE, or --dir DIR and --name ROLE:NAME")),
    };
    let (id, fingerprint) = tidemark_core::identity::read_certificate(&path).map_err(failed)?;
    if id.role == Role::Controller {
        return Err(usage(
            "a controller certificate is not revoked at the controller; replace it and the CA",
        ));
    }
    let mut c = crate::client::connect(config).await?;
    let r = c
        .revoke_certificate(tidemark_proto::RevokeCertificateRequest {
            fingerprint,
            identity: id.to_string(),
        })
        .await?
        .into_inner();
    // The name is free for a new certificate; the revoked one stays for the record.
    let mut moved = None;
    if dir.is_some() {
        for ext in ["crt", "key"] {
            let from = path.with_extension(ext);
            if from.exists() {
                let to = path.with_extension(format!("{ext}.revoked"));
                fs::rename(&from, &to)
                    .map_err(|e| failed(format!("renaming {}: {e}", from.display())))?;
                moved.get_or_insert_with(Vec::new).push(to);
            }
        }
    }
    if format == Format::Json {
        print_json(&json!({
            "identity": r.identity, "fingerprint": r.fingerprint, "already": r.already,
            "moved": moved,
        }));
    } else {
        println!(
            "{} {} (certificate {})",
            if r.already {
                "was already revoked:"
            } else {
                "revoked"
            },
            r.identity,
            r.fingerprint
        );
        for m in moved.iter().flatten() {
            println!("kept as {}", m.display());
        }
    }
    Ok(Exit::Ok)
}

fn issue(dir: &Path, name: &str, sans: &[String], days: i64) -> Result<Vec<PathBuf>, CliError> {
    let id: Identity = name
        .parse()
        .map_err(|e: tidemark_core::identity::IdentityError| usage(e.to_string()))?;
    if !sans.is_empty() && id.role != Role::Controller {
        return Err(usage("--san applies to controller certificates only"));
    }
    let ca_key_path = dir.join("ca.key");
    let read = |p: &Path| {
        fs::read_to_string(p).map_err(|e| {
            failed(format!("reading {}: {e}", p.display())).hint(format!(
                "create the CA first: tidemark pki init --dir {}",
                dir.display()
            ))
        })
    };
    let ca_key_pem = read(&ca_key_path)?;
    let mode = fs::metadata(&ca_key_path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        return Err(failed(format!(
            "{} is readable by others (mode {mode:04o}); run: chmod 600 {}",
            ca_key_path.display(),
            ca_key_path.display()
        )));
    }
    let ca_cert_pem = read(&dir.join("ca.crt"))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| failed(format!("{}: {e}", ca_key_path.display())))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)
        .map_err(|e| failed(format!("{}/ca.crt: {e}", dir.display())))?;

    let mut names = vec![id.name.clone()];
    names.extend(sans.iter().cloned());
    let mut params = CertificateParams::new(names).map_err(|e| usage(format!("{name}: {e}")))?;
    params
        .distinguished_name
        .push(DnType::CommonName, id.to_string());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match id.role {
        Role::Controller => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    validity(&mut params, days);
    let kp = KeyPair::generate().map_err(|e| failed(format!("generating a key: {e}")))?;
    let cert = params
        .signed_by(&kp, &issuer)
        .map_err(|e| failed(format!("signing {name}: {e}")))?;
    let stem = cert_stem(&id);
    let (crt, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    if crt.exists() {
        return Err(failed(format!(
            "{} already exists; refusing to overwrite it",
            crt.display()
        )));
    }
    write_new(&key, &kp.serialize_pem(), 0o600)?;
    write_new(&crt, &cert.pem(), 0o644)?;
    Ok(vec![crt, key])
}
