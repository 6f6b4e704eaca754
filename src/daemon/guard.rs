//! What ends the daemon from outside its loop: SIGTERM, a graceful stop
//! exactly like `marvel daemon stop` (the panes keep running), and the
//! loss of its state directory's lock, which ends it at once.

use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use signal_hook::consts::SIGTERM;
use signal_hook::iterator::Signals;

use super::server::Incoming;
use crate::lock::{DaemonLock, Verdict};
use crate::proto::Request;

/// How often the daemon re-checks that it still owns its directory.
pub const LOCK_CHECK: Duration = Duration::from_millis(500);

use super::main_loop::log;

/// From now on SIGTERM hands the loop a `Stop` request, the way the
/// socket thread does, so it stops whatever the loop is doing.
pub fn stop_on_sigterm<M: From<Incoming> + Send + 'static>(
    to_loop: Sender<M>,
) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM])?;
    std::thread::Builder::new()
        .name("marvel-signals".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            for _ in signals.forever() {
                log("SIGTERM: stopping; panes keep running");
                if to_loop.send(M::from(stop_request())).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// A `Stop` as the socket thread hands it over, with nobody waiting for
/// the answer or for it to be written.
fn stop_request() -> Incoming {
    let (reply, _) = mpsc::channel();
    let (_, written) = mpsc::channel();
    Incoming {
        request: Request::Stop,
        reply,
        follow: None,
        written,
    }
}

/// Keeps `lock` for the rest of the process's life and re-checks it every
/// [`LOCK_CHECK`]. A removed `daemon.lock` is made again; when the
/// directory itself is lost (removed, replaced, or its lock file held by
/// another process) the daemon ends at once, writing nothing more there,
/// so two daemons never act on one directory.
pub fn hold_lock(mut lock: DaemonLock) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("marvel-lock".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut last_failure = None;
            loop {
                std::thread::sleep(LOCK_CHECK);
                match lock.verify() {
                    Verdict::Kept => last_failure = None,
                    Verdict::Recreated => {
                        log("daemon.lock was removed or replaced; wrote it again");
                    }
                    Verdict::Failed(why) => {
                        if last_failure.as_ref() != Some(&why) {
                            log(&format!("cannot check the lock: {why}"));
                            last_failure = Some(why);
                        }
                    }
                    Verdict::Lost(why) => {
                        log(&format!(
                            "this daemon no longer owns its state directory ({why}); exiting at once, panes keep running"
                        ));
                        std::process::exit(crate::error::exit::FAILURE);
                    }
                }
            }
        })?;
    Ok(())
}
