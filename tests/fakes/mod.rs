//! Servers on loopback that stand in for the outside world in tests.

pub mod llm;
pub mod telegram;
