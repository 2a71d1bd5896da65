//! A spinner on stderr for work that takes more than a second (compiling a policy), so a
//! person at a terminal sees that something is happening; nothing when stderr is not a
//! terminal, and nothing at all for quick work.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows `what` with a spinner and the time taken once a second has passed; cleared
/// when dropped.
pub struct Progress {
    bar: ProgressBar,
    done: Option<mpsc::Sender<()>>,
    shower: Option<JoinHandle<()>>,
}

pub fn after_a_second(what: &'static str) -> Progress {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    let (done, finished) = mpsc::channel::<()>();
    let shower = std::thread::spawn({
        let bar = bar.clone();
        move || {
            if finished.recv_timeout(Duration::from_secs(1)) == Err(mpsc::RecvTimeoutError::Timeout)
            {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                        .expect("a valid template"),
                );
                bar.set_message(what);
                bar.enable_steady_tick(Duration::from_millis(100));
            }
        }
    });
    Progress {
        bar,
        done: Some(done),
        shower: Some(shower),
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(shower) = self.shower.take() {
            let _ = shower.join();
        }
        self.bar.finish_and_clear();
    }
}
