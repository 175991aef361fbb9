//! Wire constants of the NBD protocol (NetworkBlockDevice `doc/proto.md`; section names cited).

/// "NBDMAGIC" (Handshake, "Newstyle negotiation").
pub(crate) const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": newstyle server magic and the prefix of every option request.
pub(crate) const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Oldstyle `cliserv_magic` (Handshake, "Oldstyle negotiation"), refused.
pub(crate) const CLISERV_MAGIC: u64 = 0x0000_4202_8186_1253;
/// Magic of option replies (Handshake, "Fixed newstyle negotiation").
pub(crate) const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// Handshake flags (Values, "Handshake flags").
pub(crate) const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub(crate) const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags (Values, "Client flags").
pub(crate) const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub(crate) const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Option types (Values, "Option types").
pub(crate) const OPT_EXPORT_NAME: u32 = 1;
pub(crate) const OPT_GO: u32 = 7;
pub(crate) const OPT_STRUCTURED_REPLY: u32 = 8;
pub(crate) const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply types (Values, "Option reply types").
pub(crate) const REP_ACK: u32 = 1;
pub(crate) const REP_INFO: u32 = 3;
pub(crate) const REP_META_CONTEXT: u32 = 4;
/// Error replies have bit 31 set.
pub(crate) const REP_FLAG_ERROR: u32 = 1 << 31;
pub(crate) const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
pub(crate) const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
pub(crate) const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
pub(crate) const REP_ERR_PLATFORM: u32 = REP_FLAG_ERROR | 4;
pub(crate) const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
pub(crate) const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
pub(crate) const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
pub(crate) const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_FLAG_ERROR | 8;
pub(crate) const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;

/// Information types in `NBD_REP_INFO` (Values, "Option reply types", `NBD_REP_INFO`).
pub(crate) const INFO_EXPORT: u16 = 0;
pub(crate) const INFO_BLOCK_SIZE: u16 = 3;
/// `NBD_INFO_EXPORT` length: type, size, flags.
pub(crate) const INFO_EXPORT_LEN: u32 = 12;
/// `NBD_INFO_BLOCK_SIZE` length: type, minimum, preferred, maximum.
pub(crate) const INFO_BLOCK_SIZE_LEN: u32 = 14;

/// Transmission flags (Values, "Transmission flags").
pub(crate) const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub(crate) const TFLAG_READ_ONLY: u16 = 1 << 1;
pub(crate) const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub(crate) const TFLAG_SEND_FUA: u16 = 1 << 3;
pub(crate) const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub(crate) const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;

/// Request magic (Transmission, "Request message").
pub(crate) const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Simple reply magic (Transmission, "Simple reply message").
pub(crate) const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Structured reply chunk magic (Transmission, "Structured reply chunk message").
pub(crate) const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Commands (Values, "Request types").
pub(crate) const CMD_READ: u16 = 0;
pub(crate) const CMD_WRITE: u16 = 1;
pub(crate) const CMD_DISC: u16 = 2;
pub(crate) const CMD_FLUSH: u16 = 3;
pub(crate) const CMD_TRIM: u16 = 4;
pub(crate) const CMD_WRITE_ZEROES: u16 = 6;
pub(crate) const CMD_BLOCK_STATUS: u16 = 7;

/// Command flags (Values, "Command flags").
pub(crate) const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Structured reply flags and types (Values, "Structured reply flags/types").
pub(crate) const REPLY_FLAG_DONE: u16 = 1 << 0;
pub(crate) const REPLY_TYPE_NONE: u16 = 0;
pub(crate) const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub(crate) const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub(crate) const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Error chunk types have bit 15 set.
pub(crate) const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;
pub(crate) const REPLY_TYPE_ERROR_OFFSET: u16 = REPLY_TYPE_ERROR_BIT | 2;

/// `base:allocation` status flags ("Metadata querying", `base:allocation`).
pub(crate) const STATE_HOLE: u32 = 1 << 0;
pub(crate) const STATE_ZERO: u32 = 1 << 1;
/// The one metadata context we ask for.
pub(crate) const META_BASE_ALLOCATION: &str = "base:allocation";

/// Largest minimum block size a server may advertise ("Size constraints").
pub(crate) const MAX_MIN_BLOCK: u32 = 1 << 16;
/// Payloads up to 2^25 bytes are never a denial of service ("Size constraints"); we never send or
/// accept more per request, whatever the server advertises.
pub(crate) const MAX_PAYLOAD: u32 = 1 << 25;
/// Servers should not send more than 2^20 block status descriptors per chunk (`NBD_REPLY_TYPE_BLOCK_STATUS`).
pub(crate) const MAX_STATUS_DESCRIPTORS: u32 = 1 << 20;

/// Error values (Values, "Error values").
pub(crate) fn errno_name(code: u32) -> &'static str {
    match code {
        1 => "EPERM",
        5 => "EIO",
        12 => "ENOMEM",
        22 => "EINVAL",
        28 => "ENOSPC",
        75 => "EOVERFLOW",
        95 => "ENOTSUP",
        108 => "ESHUTDOWN",
        _ => "unknown error",
    }
}

/// The `std::io::ErrorKind` closest to an NBD error value.
pub(crate) fn errno_kind(code: u32) -> std::io::ErrorKind {
    use std::io::ErrorKind as K;
    match code {
        1 => K::PermissionDenied,
        12 => K::OutOfMemory,
        22 | 75 => K::InvalidInput,
        28 => K::StorageFull,
        95 => K::Unsupported,
        108 => K::ConnectionAborted,
        _ => K::Other,
    }
}

/// Name of an option-reply error, for messages.
pub(crate) fn rep_err_name(kind: u32) -> &'static str {
    match kind {
        REP_ERR_UNSUP => "unsupported",
        REP_ERR_POLICY => "forbidden by policy",
        REP_ERR_INVALID => "invalid",
        REP_ERR_PLATFORM => "not available on this platform",
        REP_ERR_TLS_REQD => "tls required",
        REP_ERR_UNKNOWN => "unknown export",
        REP_ERR_SHUTDOWN => "server shutting down",
        REP_ERR_BLOCK_SIZE_REQD => "block size required",
        REP_ERR_TOO_BIG => "too big",
        _ => "unknown error",
    }
}
