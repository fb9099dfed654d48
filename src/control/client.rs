//! The client side of the control socket (used by shardctl).

use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Find the socket to talk to: the one given, or the only socket in
/// [`default_dir`].
pub fn find_socket(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let dir = default_dir();
    let dir = dir.display();
    let entries: Vec<PathBuf> = std::fs::read_dir(default_dir())
        .map_err(|e| format!("{dir}: {e}: is a shardfs daemon running? (or give --socket)"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    match entries.len() {
        0 => Err(format!(
            "no control socket in {dir}: is a shardfs daemon running?"
        )),
        1 => Ok(entries.into_iter().next().expect("one")),
        _ => Err(format!(
            "several pools are mounted ({}): pick one with --socket",
            entries
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No daemon could be reached, or its answer was not a reply.
    Unreachable(String),
    /// The daemon refused or failed the command; its message.
    Refused(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) | CallError::Refused(m) => f.write_str(m),
        }
    }
}

/// Send one command and return the result or the daemon's error.
pub fn call(socket: &Path, cmd: Command) -> Result<serde_json::Value, String> {
    call_typed(socket, cmd).map_err(|e| e.to_string())
}

/// [`call`], telling an unreachable daemon from a refused command.
pub fn call_typed(socket: &Path, cmd: Command) -> Result<serde_json::Value, CallError> {
    use CallError::Unreachable;
    let mut s = UnixStream::connect(socket)
        .map_err(|e| Unreachable(format!("{}: {e}: is the pool mounted?", socket.display())))?;
    s.set_read_timeout(Some(Duration::from_secs(600))).ok();
    let mut line = serde_json::to_vec(&Request {
        v: PROTOCOL_VERSION,
        cmd,
    })
    .expect("serialisable");
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| Unreachable(format!("send: {e}")))?;
    let mut reader = BufReader::new(s.take(MAX_REPLY as u64));
    let mut buf = Vec::new();
    reader
        .read_until(b'\n', &mut buf)
        .map_err(|e| Unreachable(format!("receive: {e}")))?;
    let r: Reply = serde_json::from_slice(&buf)
        .map_err(|e| Unreachable(format!("malformed reply from daemon: {e}")))?;
    if r.ok {
        Ok(r.result.unwrap_or(serde_json::Value::Null))
    } else {
        Err(CallError::Refused(
            r.error.unwrap_or_else(|| "unknown error".into()),
        ))
    }
}
