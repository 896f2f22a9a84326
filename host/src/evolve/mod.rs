//! The nightly evolution: the language-model providers it asks, and (later) its steps.

pub mod provider;
