//! The NBD gateway (under construction: see the issue tracker).
