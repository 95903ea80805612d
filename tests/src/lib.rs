//! Helpers for the end-to-end tests: network namespaces, processes, clean-up.
