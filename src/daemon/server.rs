//! The daemon's socket: accepts connections, checks that the peer is the
//! same user, reads one size-limited request line, hands it to the daemon
//! loop and writes the answer. One bad connection never stops the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use crate::error::Error;
use crate::proto::{Envelope, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Request, Response};
use crate::view::EventView;

/// A request on its way to the daemon loop.
pub struct Incoming {
    pub request: Request,
    pub reply: Sender<Response>,
    /// For `events --follow`: where to send each new event.
    pub follow: Option<Sender<EventView>>,
    /// Signalled once the reply has been written to the client, so a
    /// stopping daemon does not exit before its last answer is out.
    pub written: mpsc::Receiver<()>,
}

/// The uid of the process at the other end of a Unix socket.
pub fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Only the daemon's own user may talk to it: `inject` is remote typing
/// into an agent.
pub fn check_peer(peer: u32, own: u32) -> Result<(), Error> {
    if peer == own {
        Ok(())
    } else {
        Err(Error::refused(
            format!("connection from uid {peer} refused: this daemon serves uid {own} only"),
            None,
        ))
    }
}

/// Decodes one request line, checking size and protocol version.
pub fn decode(line: &[u8]) -> Result<Request, Error> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(Error::usage(format!(
            "request of {} bytes refused: the limit is {MAX_REQUEST_BYTES}",
            line.len()
        )));
    }
    let env: Envelope = serde_json::from_slice(line).map_err(|e| {
        // A different protocol often fails to decode: say which we speak.
        let version = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("protocol").and_then(|p| p.as_u64()));
        match version {
            Some(v) if v != PROTOCOL_VERSION as u64 => protocol_error(v),
            _ => Error::usage(format!("malformed request: {e}")),
        }
    })?;
    if env.protocol != PROTOCOL_VERSION {
        return Err(protocol_error(env.protocol as u64));
    }
    Ok(env.request)
}

fn protocol_error(v: u64) -> Error {
    Error::refused(
        format!("client speaks protocol {v}, this daemon speaks {PROTOCOL_VERSION}"),
        Some("run `marvel daemon stop` so the next command starts a matching daemon".into()),
    )
}

/// Accepts connections until the listener fails; each gets its own thread.
/// Requests go to the loop as whatever message type it reads.
pub fn serve<M: From<Incoming> + Send + 'static>(listener: UnixListener, to_loop: Sender<M>) {
    let own = unsafe { libc::geteuid() };
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let to_loop = to_loop.clone();
        let _ = std::thread::Builder::new()
            .name("marvel-conn".into())
            .stack_size(128 * 1024)
            .spawn(move || handle(stream, own, to_loop));
    }
}

fn handle<M: From<Incoming>>(mut stream: UnixStream, own: u32, to_loop: Sender<M>) {
    let result = peer_uid(&stream)
        .map_err(|e| Error::other(format!("cannot identify the peer: {e}")))
        .and_then(|uid| check_peer(uid, own))
        .and_then(|()| read_request(&stream));
    let request = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = write_line(&mut stream, &Response::Error(e));
            return;
        }
    };
    let (reply_tx, reply_rx) = mpsc::channel();
    let (written_tx, written_rx) = mpsc::channel();
    let (follow_tx, follow_rx) = match &request {
        Request::Events { follow: true, .. } => {
            let (tx, rx) = mpsc::channel();
            (Some(tx), Some(rx))
        }
        _ => (None, None),
    };
    let sent = to_loop.send(M::from(Incoming {
        request,
        reply: reply_tx,
        follow: follow_tx,
        written: written_rx,
    }));
    if sent.is_err() {
        let _ = write_line(
            &mut stream,
            &Response::Error(Error::daemon("the daemon is shutting down")),
        );
        return;
    }
    let Ok(resp) = reply_rx.recv() else { return };
    let wrote = write_line(&mut stream, &resp);
    let _ = written_tx.send(());
    if wrote.is_err() {
        return;
    }
    if let Some(rx) = follow_rx {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        while let Ok(ev) = rx.recv() {
            if write_line(&mut stream, &Response::Event(ev)).is_err() {
                return;
            }
        }
    }
}

fn read_request(stream: &UnixStream) -> Result<Request, Error> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.take(MAX_REQUEST_BYTES as u64 + 1));
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| Error::usage(format!("cannot read the request: {e}")))?;
    if line.len() > MAX_REQUEST_BYTES {
        return Err(Error::usage(format!(
            "request refused: larger than the limit of {MAX_REQUEST_BYTES} bytes"
        )));
    }
    decode(&line)
}

fn write_line(stream: &mut UnixStream, resp: &Response) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Valid request lines to mutate.
    fn seeds() -> Vec<Vec<u8>> {
        let reqs = [
            Request::Ping,
            Request::Status,
            Request::Kill { key: "w-0".into() },
            Request::Scale {
                key: "squad/w".into(),
                replicas: 3,
            },
            Request::Inject {
                key: "w-0".into(),
                text: "hello".into(),
                enter: true,
                keys: false,
            },
            Request::Events {
                filter: Default::default(),
                follow: false,
            },
        ];
        reqs.into_iter()
            .map(|request| {
                serde_json::to_vec(&Envelope {
                    protocol: PROTOCOL_VERSION,
                    request,
                })
                .unwrap()
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_are_refused_with_an_error(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let e = decode(&bytes).unwrap_err();
            prop_assert!(e.to_string().starts_with("error: "));
        }

        #[test]
        fn mutated_requests_decode_or_are_refused_cleanly(
            seed in 0..6usize,
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 1..8),
        ) {
            let mut line = seeds()[seed].clone();
            for (at, byte, op) in edits {
                let at = at % (line.len() + 1);
                match op {
                    0 => line.insert(at, byte),
                    1 if at < line.len() => { line.remove(at); }
                    _ if at < line.len() => line[at] = byte,
                    _ => {}
                }
            }
            if let Err(e) = decode(&line) {
                let shown = e.to_string();
                prop_assert!(
                    shown.starts_with("error: malformed request")
                        || shown.contains("speaks protocol"),
                    "{}", shown
                );
            }
        }
    }

    #[test]
    fn another_uid_is_refused() {
        assert!(check_peer(1000, 1000).is_ok());
        let e = check_peer(1001, 1000).unwrap_err();
        assert_eq!(e.code(), crate::error::exit::REFUSED);
        assert_eq!(
            e.to_string(),
            "error: connection from uid 1001 refused: this daemon serves uid 1000 only"
        );
    }

    #[test]
    fn the_peer_of_a_socket_pair_is_ourselves() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), unsafe { libc::geteuid() });
    }

    #[test]
    fn bad_requests_get_errors_not_panics() {
        assert!(
            decode(b"garbage")
                .unwrap_err()
                .to_string()
                .starts_with("error: malformed request")
        );
        let wrong = br#"{"protocol":99,"request":"Ping"}"#;
        assert!(
            decode(wrong)
                .unwrap_err()
                .to_string()
                .contains("protocol 99")
        );
        let big = vec![b'x'; MAX_REQUEST_BYTES + 1];
        assert!(decode(&big).unwrap_err().to_string().contains("refused"));
        let ok = format!(r#"{{"protocol":{PROTOCOL_VERSION},"request":"Ping"}}"#);
        assert!(matches!(decode(ok.as_bytes()), Ok(Request::Ping)));
    }
}
