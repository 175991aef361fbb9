//! Windows registry hives (under construction: see the issue tracker).
