//! Shared test helpers: an in-process server on a unix socket, a raw-bytes NBD client, tool checks.
#![allow(dead_code, unreachable_pub, missing_docs)]
// Test clients build wire fields from small known lengths, and some tests truncate on purpose.
#![allow(clippy::cast_possible_truncation)]

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nbd_gateway::{Server, ServerConfig, Store};

pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const EXT_REQUEST_MAGIC: u32 = 0x21e4_1c71;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
pub const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;

pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
pub const REP_ERR_POLICY: u32 = 0x8000_0002;
pub const REP_ERR_INVALID: u32 = 0x8000_0003;
pub const REP_ERR_TLS_REQD: u32 = 0x8000_0005;
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;
pub const REP_ERR_SHUTDOWN: u32 = 0x8000_0007;
pub const REP_ERR_TOO_BIG: u32 = 0x8000_0009;
pub const REP_ERR_EXT_HEADER_REQD: u32 = 0x8000_000a;

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

pub const FLAG_FUA: u16 = 1;
pub const FLAG_NO_HOLE: u16 = 2;
pub const FLAG_DF: u16 = 4;
pub const FLAG_REQ_ONE: u16 = 8;
pub const FLAG_FAST_ZERO: u16 = 16;

pub const EPERM: u32 = 1;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

/// Returns false (and says so) when `tool` is not installed.
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("skipping: {tool} not found");
    }
    found
}

/// An in-process server over a store in a temporary directory, on a unix socket.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub server: Arc<Server>,
    pub store: Arc<Store>,
    pub rt: tokio::runtime::Runtime,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(ServerConfig::default())
    }

    pub fn start_with(config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path().join("store")).unwrap());
        let sock = dir.path().join("nbd.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = Server::new(Arc::clone(&store) as _, config).unwrap();
        let listener = {
            let _g = rt.enter();
            tokio::net::UnixListener::bind(&sock).unwrap()
        };
        let s = Arc::clone(&server);
        rt.spawn(async move { s.serve_unix(listener).await });
        Self {
            dir,
            sock,
            server,
            store,
            rt,
        }
    }

    /// Creates a volume and returns the path of its data file.
    pub fn volume(&self, name: &str, size: u64) -> PathBuf {
        self.store.create_volume(name, size, "test volume").unwrap();
        self.data_path(name)
    }

    pub fn data_path(&self, name: &str) -> PathBuf {
        self.store
            .root()
            .join("volumes")
            .join(name)
            .join("data.raw")
    }

    pub fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.sock.display())
    }

    pub fn connect(&self) -> Raw {
        Raw::connect(&self.sock)
    }
}

/// Writes `pattern` bytes at `offset` of a file.
pub fn poke(path: &Path, offset: u64, data: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, offset).unwrap();
}

/// The data/hole map of a file from SEEK_DATA/SEEK_HOLE: (offset, len, is_data), merged.
pub fn file_map(path: &Path) -> Vec<(u64, u64, bool)> {
    let f = std::fs::File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let backend = nbd_gateway::FileBackend::new(f).unwrap();
    use nbd_gateway::ExportBackend;
    let runs = backend.runs(0, size, 1 << 20).unwrap();
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    let mut pos = 0;
    for r in runs {
        match out.last_mut() {
            Some(last) if last.2 != r.hole => last.1 += r.len,
            _ => out.push((pos, r.len, !r.hole)),
        }
        pos += r.len;
    }
    out
}

/// A tiny deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A raw-bytes NBD client speaking exactly what the test says.
pub struct Raw {
    pub s: UnixStream,
    pub extended: bool,
}

/// One option reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptReply {
    pub opt: u32,
    pub typ: u32,
    pub data: Vec<u8>,
}

/// One transmission reply: simple, or one structured/extended chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple {
        error: u32,
        cookie: u64,
    },
    Chunk {
        flags: u16,
        typ: u16,
        cookie: u64,
        payload: Vec<u8>,
    },
}

impl Raw {
    pub fn connect(path: &Path) -> Self {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Self { s, extended: false }
    }

    /// Reads the server greeting and sends the client flags.
    pub fn greet(&mut self, client_flags: u32) {
        let mut hello = [0u8; 18];
        self.s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..8], &NBDMAGIC.to_be_bytes());
        assert_eq!(&hello[8..16], &IHAVEOPT.to_be_bytes());
        assert_eq!(u16::from_be_bytes([hello[16], hello[17]]), 3);
        self.s.write_all(&client_flags.to_be_bytes()).unwrap();
    }

    pub fn send_opt(&mut self, opt: u32, data: &[u8]) {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.s.write_all(&b).unwrap();
    }

    pub fn read_opt_reply(&mut self) -> OptReply {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(&h[..8], &OPT_REPLY_MAGIC.to_be_bytes());
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let typ = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut data = vec![0u8; len as usize];
        self.s.read_exact(&mut data).unwrap();
        OptReply { opt, typ, data }
    }

    /// Sends an option and collects replies up to the final one (ACK or error).
    pub fn opt(&mut self, opt: u32, data: &[u8]) -> Vec<OptReply> {
        self.send_opt(opt, data);
        let mut out = Vec::new();
        loop {
            let r = self.read_opt_reply();
            assert_eq!(r.opt, opt);
            let last = r.typ == REP_ACK || r.typ & 0x8000_0000 != 0;
            out.push(r);
            if last {
                return out;
            }
        }
    }

    pub fn go_data(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            d.extend_from_slice(&i.to_be_bytes());
        }
        d
    }

    pub fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            d.extend_from_slice(&(q.len() as u32).to_be_bytes());
            d.extend_from_slice(q.as_bytes());
        }
        d
    }

    /// Greets, negotiates as asked, and enters transmission with OPT_GO on `export`.
    /// Returns the transmission flags.
    pub fn handshake(&mut self, export: &str, structured: bool, extended: bool, meta: bool) -> u16 {
        self.greet(3);
        if structured {
            assert_eq!(self.opt(OPT_STRUCTURED_REPLY, &[])[0].typ, REP_ACK);
        }
        if extended {
            assert_eq!(self.opt(OPT_EXTENDED_HEADERS, &[])[0].typ, REP_ACK);
            self.extended = true;
        }
        if meta {
            let r = self.opt(
                OPT_SET_META_CONTEXT,
                &Self::meta_data(export, &["base:allocation"]),
            );
            assert_eq!(r.last().unwrap().typ, REP_ACK);
            assert_eq!(r[0].typ, REP_META_CONTEXT);
        }
        let r = self.opt(OPT_GO, &Self::go_data(export, &[]));
        assert_eq!(r.last().unwrap().typ, REP_ACK, "{r:?}");
        let info = r.iter().find(|x| x.data[..2] == [0, 0]).unwrap();
        u16::from_be_bytes([info.data[10], info.data[11]])
    }

    pub fn request(&mut self, flags: u16, typ: u16, cookie: u64, offset: u64, len: u64) {
        let mut b = Vec::with_capacity(32);
        if self.extended {
            b.extend_from_slice(&EXT_REQUEST_MAGIC.to_be_bytes());
        } else {
            b.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        }
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&typ.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        if self.extended {
            b.extend_from_slice(&len.to_be_bytes());
        } else {
            b.extend_from_slice(&(len as u32).to_be_bytes());
        }
        self.s.write_all(&b).unwrap();
    }

    /// Reads one reply message (a simple reply or one chunk). Simple replies to reads carry no
    /// data here: use [`Raw::read_exact`] for the data afterwards.
    pub fn reply(&mut self) -> Reply {
        let mut m = [0u8; 4];
        self.s.read_exact(&mut m).unwrap();
        let magic = u32::from_be_bytes(m);
        match magic {
            SIMPLE_REPLY_MAGIC => {
                let mut r = [0u8; 12];
                self.s.read_exact(&mut r).unwrap();
                Reply::Simple {
                    error: u32::from_be_bytes(r[..4].try_into().unwrap()),
                    cookie: u64::from_be_bytes(r[4..].try_into().unwrap()),
                }
            }
            STRUCTURED_REPLY_MAGIC | EXTENDED_REPLY_MAGIC => {
                let ext = magic == EXTENDED_REPLY_MAGIC;
                let mut r = vec![0u8; if ext { 28 } else { 16 }];
                self.s.read_exact(&mut r).unwrap();
                let flags = u16::from_be_bytes(r[..2].try_into().unwrap());
                let typ = u16::from_be_bytes(r[2..4].try_into().unwrap());
                let cookie = u64::from_be_bytes(r[4..12].try_into().unwrap());
                let len = if ext {
                    u64::from_be_bytes(r[20..28].try_into().unwrap())
                } else {
                    u64::from(u32::from_be_bytes(r[12..16].try_into().unwrap()))
                };
                let mut payload = vec![0u8; len as usize];
                self.s.read_exact(&mut payload).unwrap();
                Reply::Chunk {
                    flags,
                    typ,
                    cookie,
                    payload,
                }
            }
            other => panic!("bad reply magic {other:#x}"),
        }
    }

    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).unwrap();
        b
    }

    /// The error of a reply: simple error field, or the error of an error chunk, or 0.
    pub fn error_of(r: &Reply) -> u32 {
        match r {
            Reply::Simple { error, .. } => *error,
            Reply::Chunk { typ, payload, .. } if typ & 0x8000 != 0 => {
                u32::from_be_bytes(payload[..4].try_into().unwrap())
            }
            Reply::Chunk { .. } => 0,
        }
    }

    /// Sends a request and returns the error of its (single-message) reply.
    pub fn simple_cmd(&mut self, flags: u16, typ: u16, offset: u64, len: u64) -> u32 {
        self.request(flags, typ, 7, offset, len);
        let r = self.reply();
        Self::error_of(&r)
    }

    pub fn write(&mut self, flags: u16, offset: u64, data: &[u8]) -> u32 {
        self.request(flags, CMD_WRITE, 9, offset, data.len() as u64);
        self.s.write_all(data).unwrap();
        let r = self.reply();
        Self::error_of(&r)
    }

    /// A read with simple replies (no structured replies negotiated).
    pub fn read_simple(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
        self.request(0, CMD_READ, 11, offset, u64::from(len));
        match self.reply() {
            Reply::Simple { error: 0, .. } => Ok(self.read_exact(len as usize)),
            Reply::Simple { error, .. } => Err(error),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// True if the server closed the connection (EOF or reset) within the read timeout.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}
