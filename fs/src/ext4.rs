//! (backend under construction: see the issue tracker)
