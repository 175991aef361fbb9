//! Tests of the first-boot fixer.
