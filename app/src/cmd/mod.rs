//! One module per subcommand: its clap arguments and a `run` that calls the libraries.

pub mod cluster;
pub mod compare;
pub mod deploy;
pub mod evaluate;
pub mod faces;
pub mod prepare;
pub mod registry;
pub mod score;
pub mod serve;
pub mod train;
pub mod worker;
