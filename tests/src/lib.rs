//! Shared fixtures for the end-to-end tests live here as they grow.
