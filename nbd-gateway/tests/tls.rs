//! STARTTLS with certificates made in the test: qemu-img and nbdinfo as clients, plus a raw
//! rustls client checking the FORCEDTLS rules and the reset of negotiated state.

#![allow(
    clippy::cast_possible_truncation,
    reason = "wire fields built from small test values"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::*;
use nbd_gateway::{Server, ServerConfig, Store, TlsMode};

struct TlsServer {
    dir: tempfile::TempDir,
    port: u16,
    _rt: tokio::runtime::Runtime,
}

/// Writes ca-cert.pem, server-cert.pem and server-key.pem into `dir`.
fn make_certs(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "rehost test ca");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let srv_key = rcgen::KeyPair::generate().unwrap();
    let mut srv =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    srv.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    srv.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    srv.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let srv_cert = srv.signed_by(&srv_key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join("ca-cert.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server-cert.pem"), srv_cert.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), srv_key.serialize_pem()).unwrap();
}

fn start(mode: TlsMode) -> TlsServer {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    make_certs(&certs);
    let store = Store::open(dir.path().join("store")).unwrap();
    store.create_volume("v", 1 << 20, "tls volume").unwrap();
    std::fs::write(
        dir.path().join("store/volumes/v/data.raw"),
        vec![0x42u8; 1 << 20],
    )
    .unwrap();
    let acceptor = nbd_gateway::acceptor_from_pem(
        &certs.join("server-cert.pem"),
        &certs.join("server-key.pem"),
    )
    .unwrap();
    let config = ServerConfig {
        tls_mode: mode,
        tls_acceptor: Some(acceptor),
        ..ServerConfig::default()
    };
    let server = Server::new(Arc::new(store), config).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move { server.serve_tcp(listener).await });
    TlsServer { dir, port, _rt: rt }
}

#[test]
fn qemu_img_over_tls() {
    if !have("qemu-img") {
        return;
    }
    let t = start(TlsMode::Require);
    let certs = t.dir.path().join("certs");
    let out = Command::new("qemu-img")
        .args([
            "info",
            "--output=json",
            "--object",
            &format!(
                "tls-creds-x509,id=tls0,dir={},endpoint=client",
                certs.display()
            ),
            "--image-opts",
            &format!(
                "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={},export=v,tls-creds=tls0",
                t.port
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["virtual-size"].as_u64(), Some(1 << 20));
    // Without TLS the same server refuses.
    let plain = Command::new("qemu-img")
        .args(["info", &format!("nbd://127.0.0.1:{}/v", t.port)])
        .output()
        .unwrap();
    assert!(!plain.status.success());
}

#[test]
fn nbdinfo_and_nbdcopy_over_tls() {
    if !have("nbdinfo") || !have("nbdcopy") {
        return;
    }
    let t = start(TlsMode::Allow);
    let certs = t.dir.path().join("certs");
    let uri = format!(
        "nbds://127.0.0.1:{}/v?tls-certificates={}",
        t.port,
        certs.display()
    );
    let out = Command::new("nbdinfo").arg(&uri).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("with TLS"), "{text}");
    let is_tls = Command::new("nbdinfo")
        .args(["--is", "tls", &uri])
        .status()
        .unwrap();
    assert_eq!(is_tls.code(), Some(0));
    let local = t.dir.path().join("copy.raw");
    let st = Command::new("nbdcopy")
        .args([&uri, local.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read(&local).unwrap(), vec![0x42u8; 1 << 20]);
    // Allow mode: plaintext still works.
    let plain = Command::new("nbdinfo")
        .arg(format!("nbd://127.0.0.1:{}/v", t.port))
        .output()
        .unwrap();
    assert!(plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stdout).contains("without TLS"));
}

/// Minimal raw client over any stream.
fn opt<S: Read + Write>(s: &mut S, opt: u32, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    s.write_all(&b).unwrap();
    s.flush().unwrap();
    let mut out = Vec::new();
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).unwrap();
        let typ = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut d = vec![0u8; len as usize];
        s.read_exact(&mut d).unwrap();
        let last = typ == REP_ACK || typ & 0x8000_0000 != 0;
        out.push((typ, d));
        if last {
            return out;
        }
    }
}

#[test]
fn forced_tls_rules_and_state_reset() {
    let t = start(TlsMode::Require);
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).unwrap();
    s.write_all(&3u32.to_be_bytes()).unwrap();
    // Before TLS: everything but STARTTLS/ABORT is TLS_REQD.
    assert_eq!(opt(&mut s, OPT_LIST, &[])[0].0, REP_ERR_TLS_REQD);
    assert_eq!(
        opt(&mut s, OPT_STRUCTURED_REPLY, &[])[0].0,
        REP_ERR_TLS_REQD
    );
    assert_eq!(
        opt(&mut s, OPT_GO, &Raw::go_data("v", &[]))[0].0,
        REP_ERR_TLS_REQD
    );
    assert_eq!(opt(&mut s, 99, b"junk")[0].0, REP_ERR_TLS_REQD);
    assert_eq!(opt(&mut s, OPT_STARTTLS, b"x")[0].0, REP_ERR_INVALID);
    assert_eq!(opt(&mut s, OPT_STARTTLS, &[])[0].0, REP_ACK);

    let ca = std::fs::read(t.dir.path().join("certs/ca-cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    use rustls::pki_types::pem::PemObject;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, s);
    // After TLS: a second STARTTLS is invalid; options work.
    assert_eq!(opt(&mut tls, OPT_STARTTLS, &[])[0].0, REP_ERR_INVALID);
    let list = opt(&mut tls, OPT_LIST, &[]);
    assert_eq!(list[0].0, REP_SERVER);
    assert_eq!(&list[0].1[4..], b"v");
    assert_eq!(
        opt(&mut tls, OPT_STRUCTURED_REPLY, &[])[0].0,
        REP_ACK,
        "structured replies negotiate after TLS"
    );
    let r = opt(&mut tls, OPT_GO, &Raw::go_data("v", &[]));
    assert_eq!(r.last().unwrap().0, REP_ACK);
    // One structured read over TLS.
    let mut req = REQUEST_MAGIC.to_be_bytes().to_vec();
    req.extend_from_slice(&0u16.to_be_bytes());
    req.extend_from_slice(&CMD_READ.to_be_bytes());
    req.extend_from_slice(&1u64.to_be_bytes());
    req.extend_from_slice(&0u64.to_be_bytes());
    req.extend_from_slice(&512u32.to_be_bytes());
    tls.write_all(&req).unwrap();
    tls.flush().unwrap();
    let mut h = [0u8; 20];
    tls.read_exact(&mut h).unwrap();
    assert_eq!(&h[..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
    assert_eq!(len, 8 + 512);
    let mut p = vec![0u8; len as usize];
    tls.read_exact(&mut p).unwrap();
    assert!(p[8..].iter().all(|&b| b == 0x42));
}

#[test]
fn starttls_resets_negotiated_state() {
    let t = start(TlsMode::Allow);
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).unwrap();
    s.write_all(&3u32.to_be_bytes()).unwrap();
    // Allow mode: plaintext options work, and structured replies negotiate...
    assert_eq!(opt(&mut s, OPT_STRUCTURED_REPLY, &[])[0].0, REP_ACK);
    assert_eq!(opt(&mut s, OPT_STARTTLS, &[])[0].0, REP_ACK);
    let ca = std::fs::read(t.dir.path().join("certs/ca-cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, s);
    // ...but not across STARTTLS: meta contexts need structured replies again.
    assert_eq!(
        opt(
            &mut tls,
            OPT_SET_META_CONTEXT,
            &Raw::meta_data("v", &["base:allocation"])
        )[0]
        .0,
        REP_ERR_INVALID
    );
    assert_eq!(opt(&mut tls, OPT_STRUCTURED_REPLY, &[])[0].0, REP_ACK);
}
