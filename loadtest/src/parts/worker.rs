//! The worker side of a part run as a separate process: commands from stdin, events to stdout
//! as JSON lines. Nothing else may write to stdout in a worker.

use std::future::Future;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

use super::{Command, EVENT_QUEUE, Event, PartLink, Partial};
use crate::error::LoadError;

/// Runs `part` as worker `index` of `count` until it has reported its end.
pub async fn serve<F, Fut>(index: usize, count: usize, part: F) -> Result<(), LoadError>
where
    F: FnOnce(PartLink) -> Fut,
    Fut: Future<Output = Result<Partial, LoadError>>,
{
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (commands_tx, commands_rx) = watch::channel(Command::Wait);
    tokio::spawn(read_commands(commands_tx));
    let link = PartLink::new(index, count, events_tx, commands_rx);
    let finisher = link.clone();
    let run = async move {
        let result = part(link).await;
        finisher.finish(result).await;
    };
    let ((), written) = tokio::join!(run, write_events(events_rx));
    written
}

/// Commands from stdin; the end of stdin (the parent is gone) stops the part.
async fn read_commands(commands: watch::Sender<Command>) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(command) = Command::parse(&line) {
            commands.send_replace(command);
        }
    }
    commands.send_replace(Command::Stop);
}

/// Writes events until the part's last one.
async fn write_events(mut events: mpsc::Receiver<(usize, Event)>) -> Result<(), LoadError> {
    let mut stdout = tokio::io::stdout();
    while let Some((_, event)) = events.recv().await {
        let last = matches!(event, Event::Done(_) | Event::Failed { .. });
        let mut line = serde_json::to_string(&event)
            .map_err(|error| LoadError::Parts(format!("cannot encode an event: {error}")))?;
        line.push('\n');
        stdout
            .write_all(line.as_bytes())
            .await
            .map_err(LoadError::Pipe)?;
        stdout.flush().await.map_err(LoadError::Pipe)?;
        if last {
            break;
        }
    }
    Ok(())
}
