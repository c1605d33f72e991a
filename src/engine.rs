//! The engine façade the CLI (and later the API) calls.
