//! TEMP STUB
use std::path::PathBuf;
#[derive(Debug, Clone, Copy, PartialEq, Eq)] pub enum Role { Master, Slave }
#[derive(Debug, Clone, PartialEq, Eq)] pub struct ServerArgs { pub config: PathBuf, pub role: Role, pub master: Option<String>, pub event: Option<u64> }
pub enum Command { Run(ServerArgs), Help, Version }
#[derive(Debug)] pub struct CliError;
impl std::fmt::Display for CliError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "x") } }
impl std::error::Error for CliError {}
pub const USAGE: &str = "";
pub fn parse_args<I: IntoIterator<Item = std::ffi::OsString>>(_a: I) -> Result<Command, CliError> { Err(CliError) }
