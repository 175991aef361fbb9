//! Guest inspection (under construction: see the issue tracker).
