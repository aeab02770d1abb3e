//! A part run as a worker process: this binary re-executed with the same arguments plus
//! `--workers N --worker-index I`. Its stdout lines are [`Event`]s, its stdin lines
//! [`Command`]s; its stderr is passed through.

use std::ffi::OsString;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, watch};

use super::{Command, Event};
use crate::error::LoadError;

/// Starts worker `index` of `count`; its events go to `events`, `commands` go to it.
pub fn spawn(
    index: usize,
    count: usize,
    events: mpsc::Sender<(usize, Event)>,
    commands: watch::Receiver<Command>,
) -> Result<Child, LoadError> {
    let exe = std::env::current_exe().map_err(LoadError::Spawn)?;
    let mut child = tokio::process::Command::new(exe)
        .args(worker_argv(std::env::args_os().skip(1), index, count))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(LoadError::Spawn)?;
    let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
        return Err(LoadError::Parts("worker started without pipes".to_owned()));
    };
    tokio::spawn(forward_events(index, stdout, events));
    tokio::spawn(forward_commands(stdin, commands));
    Ok(child)
}

/// The parent's arguments without any worker flags, then this worker's.
fn worker_argv(args: impl Iterator<Item = OsString>, index: usize, count: usize) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let text = arg.to_string_lossy();
        if text == "--workers" || text == "--worker-index" {
            skip_value = true;
            continue;
        }
        if text.starts_with("--workers=") || text.starts_with("--worker-index=") {
            continue;
        }
        out.push(arg);
    }
    out.extend(
        [
            "--workers".to_owned(),
            count.to_string(),
            "--worker-index".to_owned(),
            index.to_string(),
        ]
        .map(OsString::from),
    );
    out
}

/// Parses the worker's stdout; a worker that ends without Done or Failed is reported as failed.
async fn forward_events(index: usize, stdout: ChildStdout, events: mpsc::Sender<(usize, Event)>) {
    let mut lines = BufReader::new(stdout).lines();
    let mut finished = false;
    let failure = loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<Event>(&line) {
                Ok(event) => {
                    finished |= matches!(event, Event::Done(_) | Event::Failed { .. });
                    if events.send((index, event)).await.is_err() {
                        return;
                    }
                }
                Err(_) => eprintln!("worker {index}: {line}"),
            },
            Ok(None) => break "exited without reporting its figures".to_owned(),
            Err(error) => break format!("unreadable output: {error}"),
        }
    };
    if !finished {
        let _ = events.send((index, Event::Failed { error: failure })).await;
    }
}

/// Writes each new command as a line; closes stdin when the coordinator is gone.
async fn forward_commands(mut stdin: ChildStdin, mut commands: watch::Receiver<Command>) {
    loop {
        let command = *commands.borrow_and_update();
        let line = format!("{}\n", command.line());
        if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
        if command == Command::Stop || commands.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str], index: usize, count: usize) -> Vec<String> {
        worker_argv(args.iter().map(OsString::from), index, count)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn worker_flags_are_replaced_and_everything_else_kept() {
        assert_eq!(
            argv(
                &["idle", "--connections", "9", "--workers", "3", "--json"],
                2,
                3
            ),
            [
                "idle",
                "--connections",
                "9",
                "--json",
                "--workers",
                "3",
                "--worker-index",
                "2"
            ]
        );
        assert_eq!(
            argv(&["chat", "--workers=2", "--worker-index=0"], 1, 2),
            ["chat", "--workers", "2", "--worker-index", "1"]
        );
    }
}
