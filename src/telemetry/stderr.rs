//! Standard error for log lines, shared with a progress bar: while a bar is shown (the
//! demo's), each log line clears it, is written, and the bar is drawn again below it, so
//! no warning is drawn over the bar nor the bar over a warning.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use tracing_subscriber::fmt::MakeWriter;

/// The bar on screen, if any.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

fn bar() -> Option<indicatif::ProgressBar> {
    // A poisoned lock only means a panic while swapping the bar; the value is whole.
    BAR.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Route log lines around `bar` until [`clear_progress_bar`].
pub fn set_progress_bar(bar: &indicatif::ProgressBar) {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
}

/// Write log lines straight to stderr again.
pub fn clear_progress_bar() {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Whether log lines may be coloured: stderr is a terminal and `NO_COLOR` is unset
/// (<https://no-color.org>).
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The [`MakeWriter`] of the log layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogStderr;

/// One log line's writer (see [`LogStderr`]).
#[derive(Debug)]
pub struct LogStderrWriter;

impl Write for LogStderrWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match bar() {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for LogStderr {
    type Writer = LogStderrWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogStderrWriter
    }
}
