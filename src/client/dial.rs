//! `marvel daemon dial-stdio`, the far end of an ssh context: a client of
//! this host's daemon (started if needed, with every check a command makes)
//! that says who it is in one greeting line, then relays the wire protocol
//! between its standard streams and the daemon's socket, byte for byte.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use rustix::event::{PollFd, PollFlags};
use serde::{Deserialize, Serialize};

use crate::client::local;
use crate::error::{Error, Result, exit};
use crate::paths::Target;
use crate::proto::PROTOCOL_VERSION;

/// The first line `dial-stdio` writes, before any answer of the daemon.
/// `marvel` and `protocol` keep these names and meanings in every version,
/// so that any two versions can tell each other apart; the rest is read
/// only when the protocols agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeting {
    /// The marvel version on that host.
    pub marvel: String,
    pub protocol: u32,
    /// The daemon's socket is open: the next lines are its answers.
    pub connected: bool,
    /// Why it is not (`None` with `connected: false`: no daemon runs and
    /// none was to be started).
    #[serde(default)]
    pub error: Option<Error>,
}

impl Greeting {
    fn new(connected: bool, error: Option<Error>) -> Greeting {
        Greeting {
            marvel: env!("CARGO_PKG_VERSION").to_string(),
            protocol: PROTOCOL_VERSION,
            connected,
            error,
        }
    }
}

/// Connects to the daemon (starting it unless `start` is false), writes
/// the greeting, and relays until either side ends. Returns the exit code:
/// what went wrong is in the greeting, for the client to show.
pub fn serve(t: &Target, start: bool) -> Result<i32> {
    let connected = if start {
        local::connect_or_start(t).map(Some)
    } else {
        local::connect(&t.paths)
    };
    let (stream, greeting) = match connected {
        Ok(Some(s)) => (Some(s), Greeting::new(true, None)),
        Ok(None) => (None, Greeting::new(false, None)),
        Err(e) => (None, Greeting::new(false, Some(e))),
    };
    let mut line = serde_json::to_vec(&greeting)
        .map_err(|e| Error::other(format!("cannot encode the greeting: {e}")))?;
    line.push(b'\n');
    let mut out = io::stdout().lock();
    if out.write_all(&line).and_then(|()| out.flush()).is_err() {
        // Nobody is listening any more.
        return Ok(exit::FAILURE);
    }
    drop(out);
    match stream {
        Some(s) => {
            relay(&s);
            Ok(exit::OK)
        }
        None => Ok(greeting.error.map_or(exit::OK, |e| e.code())),
    }
}

/// Copies stdin to the socket and the socket to stdout until the daemon
/// closes the connection or the client goes away (stdin ends: the client
/// only closes it once it has read all it wanted, or when it is gone).
fn relay(socket: &UnixStream) {
    let stdin = io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = [
            PollFd::new(&stdin, PollFlags::IN),
            PollFd::new(socket, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        let ready = |f: &PollFd| {
            f.revents()
                .intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
        };
        let (from_client, from_daemon) = (ready(&fds[0]), ready(&fds[1]));
        if from_daemon {
            match rustix::io::read(socket, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut out = io::stdout().lock();
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        return;
                    }
                }
            }
        }
        if from_client {
            match rustix::io::read(stdin.as_fd(), &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut sock = socket;
                    if sock.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greeting_keeps_its_two_stable_fields() {
        let g = Greeting::new(false, Some(Error::daemon("no")));
        let v: serde_json::Value = serde_json::to_value(&g).unwrap();
        assert_eq!(v["marvel"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["protocol"], PROTOCOL_VERSION);
        let back: Greeting = serde_json::from_value(v).unwrap();
        assert_eq!(back, g);
    }
}
