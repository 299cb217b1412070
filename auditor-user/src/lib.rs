//! map-auditor library.
