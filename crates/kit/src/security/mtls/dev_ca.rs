//! The development CA `flotilla up` keeps under `<data dir>/tls/`: `ca.crt`/`ca.key`,
//! and `<service>.crt`/`<service>.key` for every service (and `operator`, the
//! identity of the `flotilla` commands), each with `spiffe://<trust domain>/<service>`
//! as its URI subject alternative name. Key files are written with mode `0600`.
//!
//! In production the platform issues the certificates (cert-manager, a Kubernetes
//! Secret); nothing here runs there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::identity::SpiffeId;

/// How long a service certificate the dev CA issues is valid (`up` issues fresh ones
/// at every start).
pub const SERVICE_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long the dev CA itself is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Why the dev CA could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum DevCaError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Generating or parsing a key or certificate failed.
    #[error("{what}: {source}")]
    Cert {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
}

/// The files of one issued identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key (mode `0600`).
    pub key: PathBuf,
}

/// A development certificate authority on disk.
pub struct DevCa {
    dir: PathBuf,
    key: KeyPair,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DevCaError + '_ {
    move |source| DevCaError::Io {
        path: path.to_owned(),
        source,
    }
}

fn cert_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> DevCaError {
    let what = what.into();
    move |source| DevCaError::Cert { what, source }
}

fn at(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = SystemTime::now();
    // An hour of slack for clocks that disagree a little.
    params.not_before = at(now - Duration::from_secs(3600));
    params.not_after = at(now + valid_for);
}

/// Writes `contents` to `path` through a temporary file and a rename, so a reader never
/// sees half a file; `private` files get mode `0600` from the start.
pub fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), DevCaError> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = std::fs::remove_file(&tmp);
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(contents).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// What the CA certificate says of its subject. Issuing needs only this and the CA's
/// key (the issuer name and key identifier of an issued certificate come from them), so
/// a CA loaded from disk signs without its certificate being parsed back.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Flotilla development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl DevCa {
    /// Loads the CA in `dir` (`ca.crt`, `ca.key`), creating the directory (mode
    /// `0700`) and a new CA when there is none.
    pub fn load_or_create(dir: &Path) -> Result<Self, DevCaError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(dir))?;
        }
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        if cert_path.exists() && key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let key =
                KeyPair::from_pem(&key_pem).map_err(cert_err(format!("{}", key_path.display())))?;
            return Ok(Self {
                dir: dir.to_owned(),
                key,
            });
        }
        let key = KeyPair::generate().map_err(cert_err("generating the CA key"))?;
        let mut params = ca_params();
        validity(&mut params, CA_VALIDITY);
        let cert = params
            .self_signed(&key)
            .map_err(cert_err("signing the CA certificate"))?;
        write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
        write_file(&cert_path, cert.pem().as_bytes(), false)?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
        })
    }

    /// The CA certificate's file (what every peer trusts).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Issues a certificate for `id` (client and server use) and writes it as
    /// `<service>.crt` and `<service>.key` next to the CA.
    pub fn issue(&self, id: &SpiffeId) -> Result<Issued, DevCaError> {
        let issuer = Issuer::new(ca_params(), &self.key);
        let key = KeyPair::generate().map_err(cert_err(format!("generating a key for {id}")))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, id.service());
        let uri = id
            .to_string()
            .try_into()
            .map_err(cert_err(format!("{id} as a URI name")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, SERVICE_CERT_VALIDITY);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(cert_err(format!("signing the certificate of {id}")))?;
        let issued = Issued {
            cert: self.dir.join(format!("{}.crt", id.service())),
            key: self.dir.join(format!("{}.key", id.service())),
        };
        write_file(&issued.key, key.serialize_pem().as_bytes(), true)?;
        write_file(&issued.cert, cert.pem().as_bytes(), false)?;
        Ok(issued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_certificates_with_the_spiffe_id_and_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let ca = DevCa::load_or_create(&tls).unwrap();
        let id = SpiffeId::new("flotilla.local", "orders").unwrap();
        let issued = ca.issue(&id).unwrap();
        assert_eq!(issued.cert, tls.join("orders.crt"));

        let pem = std::fs::read(&issued.cert).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(SpiffeId::from_certificate(&der), Some(id.clone()));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&issued.key), 0o600);
            assert_eq!(mode(&tls.join("ca.key")), 0o600);
            assert_eq!(mode(&tls), 0o700);
        }

        // A second start keeps the CA and can still issue.
        let ca_pem = std::fs::read(tls.join("ca.crt")).unwrap();
        let again = DevCa::load_or_create(&tls).unwrap();
        assert_eq!(std::fs::read(again.cert_path()).unwrap(), ca_pem);
        let reissued = again.issue(&id).unwrap();
        // …and what it issues still chains to the CA on disk.
        let mtls = super::super::Mtls::from_files(
            id,
            &again.cert_path(),
            &reissued.cert,
            &reissued.key,
            Default::default(),
        );
        assert!(mtls.is_ok(), "{mtls:?}");
    }

    use rustls_pki_types::pem::PemObject;
}
