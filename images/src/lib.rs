//! Test-image builders (under construction: see the issue tracker).
