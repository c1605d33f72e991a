//! `berth doctor` and `berth info`: host checks.
