//! Wire constants of the NBD protocol and the limits this server enforces.
//!
//! Section names refer to `doc/proto.md` of the NetworkBlockDevice project ("the spec"), and to
//! its `extension-ext-header` branch for extended headers.

/// "NBDMAGIC", first server word of every newstyle handshake (spec: "Newstyle negotiation").
pub(crate) const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT", second server word, and the prefix of every client option (same section).
pub(crate) const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply (spec: "Fixed newstyle negotiation").
pub(crate) const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// Compact request magic (spec: "Request message").
pub(crate) const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Extended request magic (extension-ext-header: "Request message").
pub(crate) const EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;
/// Simple reply magic (spec: "Simple reply message").
pub(crate) const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Structured reply chunk magic (spec: "Structured reply chunk message").
pub(crate) const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Extended reply chunk magic (extension-ext-header: "Extended reply chunk message").
pub(crate) const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;

// Handshake flags (spec: "Handshake flags").
pub(crate) const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub(crate) const FLAG_NO_ZEROES: u16 = 1 << 1;
// Client flags (spec: "Client flags").
pub(crate) const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub(crate) const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Transmission flags (spec: "Transmission flags").
pub(crate) const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub(crate) const TFLAG_READ_ONLY: u16 = 1 << 1;
pub(crate) const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub(crate) const TFLAG_SEND_FUA: u16 = 1 << 3;
pub(crate) const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub(crate) const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub(crate) const TFLAG_SEND_DF: u16 = 1 << 7;
pub(crate) const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub(crate) const TFLAG_SEND_CACHE: u16 = 1 << 10;
pub(crate) const TFLAG_SEND_FAST_ZERO: u16 = 1 << 11;

// Option types (spec: "Option types"; 11 from extension-ext-header).
pub(crate) const OPT_EXPORT_NAME: u32 = 1;
pub(crate) const OPT_ABORT: u32 = 2;
pub(crate) const OPT_LIST: u32 = 3;
pub(crate) const OPT_STARTTLS: u32 = 5;
pub(crate) const OPT_INFO: u32 = 6;
pub(crate) const OPT_GO: u32 = 7;
pub(crate) const OPT_STRUCTURED_REPLY: u32 = 8;
pub(crate) const OPT_LIST_META_CONTEXT: u32 = 9;
pub(crate) const OPT_SET_META_CONTEXT: u32 = 10;
pub(crate) const OPT_EXTENDED_HEADERS: u32 = 11;

// Option reply types (spec: "Option reply types").
pub(crate) const REP_ACK: u32 = 1;
pub(crate) const REP_SERVER: u32 = 2;
pub(crate) const REP_INFO: u32 = 3;
pub(crate) const REP_META_CONTEXT: u32 = 4;
const REP_ERR: u32 = 1 << 31;
pub(crate) const REP_ERR_UNSUP: u32 = REP_ERR | 1;
pub(crate) const REP_ERR_POLICY: u32 = REP_ERR | 2;
pub(crate) const REP_ERR_INVALID: u32 = REP_ERR | 3;
pub(crate) const REP_ERR_TLS_REQD: u32 = REP_ERR | 5;
pub(crate) const REP_ERR_UNKNOWN: u32 = REP_ERR | 6;
pub(crate) const REP_ERR_SHUTDOWN: u32 = REP_ERR | 7;
pub(crate) const REP_ERR_TOO_BIG: u32 = REP_ERR | 9;
pub(crate) const REP_ERR_EXT_HEADER_REQD: u32 = REP_ERR | 10;

// Information types (spec: "NBD_REP_INFO").
pub(crate) const INFO_EXPORT: u16 = 0;
pub(crate) const INFO_NAME: u16 = 1;
pub(crate) const INFO_DESCRIPTION: u16 = 2;
pub(crate) const INFO_BLOCK_SIZE: u16 = 3;

// Command flags (spec: "Command flags"; PAYLOAD_LEN from extension-ext-header).
pub(crate) const CMD_FLAG_FUA: u16 = 1 << 0;
pub(crate) const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub(crate) const CMD_FLAG_DF: u16 = 1 << 2;
pub(crate) const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub(crate) const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;
pub(crate) const CMD_FLAG_PAYLOAD_LEN: u16 = 1 << 5;

// Request types (spec: "Request types").
pub(crate) const CMD_READ: u16 = 0;
pub(crate) const CMD_WRITE: u16 = 1;
pub(crate) const CMD_DISC: u16 = 2;
pub(crate) const CMD_FLUSH: u16 = 3;
pub(crate) const CMD_TRIM: u16 = 4;
pub(crate) const CMD_CACHE: u16 = 5;
pub(crate) const CMD_WRITE_ZEROES: u16 = 6;
pub(crate) const CMD_BLOCK_STATUS: u16 = 7;

// Structured reply flags and types (spec: "Structured reply flags", "Structured reply types").
pub(crate) const REPLY_FLAG_DONE: u16 = 1 << 0;
pub(crate) const REPLY_TYPE_NONE: u16 = 0;
pub(crate) const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub(crate) const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub(crate) const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub(crate) const REPLY_TYPE_BLOCK_STATUS_EXT: u16 = 6;
pub(crate) const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;

// `base:allocation` flags (spec: "`base:allocation` metadata context").
pub(crate) const STATE_HOLE: u32 = 1 << 0;
pub(crate) const STATE_ZERO: u32 = 1 << 1;
/// The one metadata context this server provides.
pub(crate) const BASE_ALLOCATION: &str = "base:allocation";
/// The context id we hand out for `base:allocation` (ids are opaque to clients).
pub(crate) const BASE_ALLOCATION_ID: u32 = 1;

/// NBD error values (spec: "Error values"). They are protocol numbers, not host errnos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum NbdError {
    /// `NBD_EPERM`: write to a read-only export.
    Perm = 1,
    /// `NBD_EIO`: the backing store failed.
    Io = 5,
    /// `NBD_ENOMEM`.
    NoMem = 12,
    /// `NBD_EINVAL`: bad flags, unknown command, read past the end.
    Inval = 22,
    /// `NBD_ENOSPC`: write past the end, or the store is full.
    NoSpc = 28,
    /// `NBD_EOVERFLOW`: a length beyond what this server handles in one request.
    Overflow = 75,
    /// `NBD_ENOTSUP`: fast zeroing not possible.
    NotSup = 95,
    /// `NBD_ESHUTDOWN`: the server is shutting down.
    Shutdown = 108,
}

impl NbdError {
    /// The value sent on the wire.
    pub(crate) fn code(self) -> u32 {
        self as u32
    }

    /// Maps a host I/O error to the closest NBD error (spec: "Error values" asks for
    /// `EDQUOT`/`EFBIG` to become `ENOSPC`).
    pub(crate) fn from_io(e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(code)
                if code == rustix::io::Errno::NOSPC.raw_os_error()
                    || code == rustix::io::Errno::DQUOT.raw_os_error()
                    || code == rustix::io::Errno::FBIG.raw_os_error() =>
            {
                Self::NoSpc
            }
            Some(code)
                if code == rustix::io::Errno::PERM.raw_os_error()
                    || code == rustix::io::Errno::ROFS.raw_os_error()
                    || code == rustix::io::Errno::ACCESS.raw_os_error() =>
            {
                Self::Perm
            }
            Some(code) if code == rustix::io::Errno::NOMEM.raw_os_error() => Self::NoMem,
            _ => Self::Io,
        }
    }
}

/// Longest string (export name, description, context name) accepted or sent
/// (spec: "Conventions": strings are at most 4096 bytes).
pub(crate) const MAX_STRING: usize = 4096;
/// Largest option payload this server reads. The largest valid option is `NBD_OPT_SET_META_CONTEXT`
/// with a 4096-byte name and a few queries; anything larger is treated as a denial of service
/// (spec: "Termination of the session during option haggling") and disconnected.
pub(crate) const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Most options one session may send before transmission; a client looping in negotiation is
/// disconnected (spec allows a hard disconnect for denial of service).
pub(crate) const MAX_OPTIONS: u32 = 1024;
/// Most metadata-context queries read from one option.
pub(crate) const MAX_META_QUERIES: u32 = 64;
/// Most information requests honoured in one `NBD_OPT_INFO`/`NBD_OPT_GO`.
pub(crate) const MAX_INFO_REQUESTS: u16 = 64;

/// Maximum payload of one request or read reply: 2^25 bytes, the spec's portable limit
/// (spec: "Size constraints"). Checked before any buffer is sized.
pub const MAX_PAYLOAD: u32 = 1 << 25;
/// Minimum block size advertised: 1, the default for a file-backed export (spec: "Size constraints").
pub(crate) const MIN_BLOCK: u32 = 1;
/// Preferred block size advertised: 4096, the page and filesystem block size.
pub(crate) const PREFERRED_BLOCK: u32 = 4096;
/// Most block-status descriptors in one reply chunk (spec: "`NBD_REPLY_TYPE_BLOCK_STATUS`":
/// servers SHOULD NOT send more than 2^20).
pub(crate) const MAX_EXTENTS_PER_REPLY: usize = 1 << 20;
/// Most content chunks in one structured read reply; the rest of the range is sent as data.
pub(crate) const MAX_READ_CHUNKS: usize = 256;
/// Holes shorter than this inside a structured read are sent as data (fewer, larger chunks).
pub(crate) const MIN_HOLE_CHUNK: u64 = 4096;

/// Compact request header length (spec: "Request message").
pub(crate) const REQUEST_LEN: usize = 28;
/// Extended request header length (extension-ext-header: "Request message").
pub(crate) const EXTENDED_REQUEST_LEN: usize = 32;
/// Simple reply header length.
pub(crate) const SIMPLE_REPLY_LEN: usize = 16;
/// Structured reply chunk header length.
pub(crate) const STRUCTURED_REPLY_LEN: usize = 20;
/// Extended reply chunk header length.
pub(crate) const EXTENDED_REPLY_LEN: usize = 32;
