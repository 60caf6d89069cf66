//! One bidirectional stream: the `Hello` handshake, then requests read, processed concurrently up
//! to `inflight_per_stream`, and answered by id in completion order. A broken rule ends the stream
//! with a `Goodbye` that says why and closes the connection with a code. When the daemon drains,
//! the stream stops reading, answers what it has read, says `Goodbye(ShuttingDown)` and ends.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;
use tally_protocol::codec::{decode_client_frame, encode_frame};
use tally_protocol::framing::{read_first_byte, read_frame, read_frame_rest, FrameReadError};
use tally_protocol::message::*;
use tokio::io::BufReader;
use tokio::sync::Notify;

use super::{close_code, Alive, OpenStream, ServerContext};
use crate::activity::{RECENT_MAX, TOP_CUSTOMERS};

/// How long a `Goodbye` may take to reach the peer before the connection is closed anyway.
const GOODBYE_FLUSH: Duration = Duration::from_secs(1);
/// When draining, how long the stream keeps its connection open after the peer has received
/// the last answers and the `Goodbye`, waiting for the client to close it: closing first would
/// discard what the client has received but not read yet. The client library closes as soon as
/// it reads the `Goodbye`, so this only runs out for peers that are stalled or gone.
const DRAIN_LINGER: Duration = Duration::from_millis(250);
/// Bytes read from the stream at once; frames are parsed out of this buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Why the request loop ended.
enum End {
    /// The peer finished its side of the stream.
    Finished,
    /// The peer went away between frames (it closed or lost the connection, or reset the
    /// stream): a normal end for a client that exits, not a broken rule.
    PeerGone(std::io::Error),
    /// The peer broke a rule; the connection is closed with this error.
    Violation(TallyError),
    /// The daemon is shutting down.
    Draining,
}

pub(super) async fn serve_stream(
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    context: Arc<ServerContext>,
    _held: (Alive, OpenStream),
) {
    let limits = &context.limits;
    let mut body = AlignedVec::new();
    let role = match handshake(&mut recv, &mut body, &context).await {
        Ok(role) => role,
        Err(error) => {
            tracing::info!(remote = %connection.remote_address(), %error, "handshake refused");
            say_goodbye(&connection, send, error, close_code::HANDSHAKE_FAILED).await;
            return;
        }
    };
    let welcome = ServerFrame::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        role,
        frame_bytes_max: limits.frame_bytes_max,
        inflight_max: limits.inflight_per_stream,
    });
    if write_frame(&mut send, &welcome).await.is_err() {
        return;
    }

    let outbox = Rc::new(Outbox::default());
    let writer = actix_rt::spawn(write_answers(send, outbox.clone()));
    let mut recv = BufReader::with_capacity(READ_BUFFER_BYTES, recv);
    let mut draining = context.draining.clone();
    let frame_timeout = Duration::from_millis(limits.frame_timeout_ms);
    let end = loop {
        // Waiting for a frame to start is bounded only by the connection's idle timeout; once it
        // has started, all of it must arrive within `frame_timeout`.
        // Under load the next frame is already buffered: take it without registering for the
        // drain signal (a waiter per frame), but still see a drain that has begun.
        if *draining.borrow() {
            break End::Draining;
        }
        let first = match ready_now(read_first_byte(&mut recv)).await {
            Some(first) => first,
            None => tokio::select! {
                biased;
                _ = draining.wait_for(|draining| *draining) => break End::Draining,
                first = read_first_byte(&mut recv) => first,
            },
        };
        let first = match first {
            Ok(Some(first)) => first,
            Ok(None) => break End::Finished,
            Err(FrameReadError::Io(e)) => break End::PeerGone(e),
            Err(e) => break End::Violation(invalid(e.to_string())),
        };
        let rest = read_frame_rest(&mut recv, first, limits.frame_bytes_max, &mut body);
        match within(frame_timeout, rest).await {
            Ok(Ok(())) => {}
            Ok(Err(FrameReadError::Io(e))) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
                break End::PeerGone(e)
            }
            Ok(Err(e)) => break End::Violation(invalid(e.to_string())),
            Err(_) => {
                break End::Violation(invalid(format!(
                    "a frame took longer than {} ms to arrive",
                    frame_timeout.as_millis()
                )))
            }
        }
        crate::platform::worked();
        let request = match decode_client_frame(&body) {
            Ok(ClientFrame::Request(request)) => request,
            Ok(ClientFrame::Hello(_)) => {
                break End::Violation(invalid("a second Hello on an authenticated stream".into()))
            }
            Err(e) => break End::Violation(invalid(e.to_string())),
        };
        // The client library never has more than `inflight_max` (from Welcome) unanswered, and
        // a request counts here for less time than there, so a peer over the limit is not one.
        if !outbox.admit(limits.inflight_per_stream) {
            break End::Violation(invalid(format!(
                "more than {} requests in flight on one stream (the limit in Welcome)",
                limits.inflight_per_stream
            )));
        }
        let context = context.clone();
        let outbox = outbox.clone();
        actix_rt::spawn(async move {
            let reply = answer(&context, role, request.request).await;
            outbox.push(&ServerFrame::Response(ResponseFrame {
                id: request.id,
                reply,
            }));
            crate::platform::worked();
        });
    };
    outbox.stop_reading();
    if let End::PeerGone(error) = &end {
        tracing::debug!(remote = %connection.remote_address(), %error, "the peer went away");
    }
    // Every request read is answered before the stream ends, whatever ended the loop.
    let Ok(Some(mut send)) = writer.await else {
        return;
    };
    match end {
        End::Violation(error) => {
            tracing::info!(remote = %connection.remote_address(), %error, "closing a stream that broke the protocol");
            say_goodbye(&connection, send, error, close_code::PROTOCOL_VIOLATION).await;
        }
        End::Draining => {
            if write_frame(&mut send, &ServerFrame::Goodbye(TallyError::ShuttingDown))
                .await
                .is_ok()
                && send.finish().is_ok()
            {
                // Wait until the peer has every answer, then until it has read them (it closes).
                let _ = tokio::time::timeout(GOODBYE_FLUSH, send.stopped()).await;
                let _ = tokio::time::timeout(DRAIN_LINGER, connection.closed()).await;
            }
        }
        End::Finished | End::PeerGone(_) => {
            let _ = send.finish();
        }
    }
}

async fn handshake(
    recv: &mut quinn::RecvStream,
    body: &mut AlignedVec,
    context: &ServerContext,
) -> Result<Role, TallyError> {
    let timeout = Duration::from_millis(context.limits.handshake_timeout_ms);
    let read = tokio::time::timeout(
        timeout,
        read_frame(recv, context.limits.frame_bytes_max, body),
    )
    .await;
    match read {
        Err(_) => {
            return Err(TallyError::Unauthorized {
                reason: format!("no Hello within {} ms", timeout.as_millis()),
            })
        }
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Err(invalid("the stream ended before Hello".into())),
        Ok(Err(e)) => return Err(invalid(e.to_string())),
    }
    let hello = match decode_client_frame(body) {
        Ok(ClientFrame::Hello(hello)) => hello,
        Ok(ClientFrame::Request(_)) => {
            return Err(TallyError::Unauthorized {
                reason: "a request before Hello; authenticate first".into(),
            })
        }
        Err(e) => return Err(invalid(e.to_string())),
    };
    if hello.version != PROTOCOL_VERSION {
        return Err(TallyError::VersionMismatch {
            server: PROTOCOL_VERSION,
            client: hello.version,
        });
    }
    if hello.api_key.len() > API_KEY_BYTES_MAX {
        return Err(TallyError::Unauthorized {
            reason: format!(
                "API key is {} bytes; the limit is {API_KEY_BYTES_MAX}",
                hello.api_key.len()
            ),
        });
    }
    context
        .keys
        .role_of(&hello.api_key)
        .ok_or_else(|| TallyError::Unauthorized {
            reason: "unknown API key".into(),
        })
}

async fn answer(context: &ServerContext, role: Role, request: Request) -> Reply {
    let operation = request.operation_name();
    if !request.role_required().is_granted_to(role) {
        return Reply::Err(TallyError::Forbidden {
            role,
            operation: operation.into(),
        });
    }
    let started = Instant::now();
    // A value outside a limit is this request's typed rejection; the stream carries on.
    let result = match validate_request(&request) {
        Err(error) => Err(error),
        Ok(()) => match request {
            Request::Stats => Ok(Response::Stats(Box::new(stats(context).await))),
            Request::ReloadModels => context.models.reload().await.map(Response::ModelsReloaded),
            Request::WatchAlerts(request) => crate::webhooks::watch::watch_alerts(
                &context.webhook_admin.store,
                request,
                context.draining.clone(),
            )
            .await
            .map(Response::Alerts),
            Request::Webhooks(command) => context
                .webhook_admin
                .run(command)
                .await
                .map(Response::Webhooks),
            request => context.router.route(request).await,
        },
    };
    context
        .telemetry()
        .record_answer(operation, started, Instant::now(), &result);
    match result {
        Ok(response) => Reply::Ok(response),
        Err(error) => Reply::Err(error),
    }
}

/// Gathers the console's snapshot: the server's counters and every shard's report.
/// Alerts the console's pane shows.
const RECENT_ALERTS: usize = 10;

/// Adds one shard's `line` to the lines of every shard (sorted by feature and model).
fn merge_model_line(lines: &mut Vec<ModelUsageLine>, line: ModelUsageLine) {
    let key = |l: &ModelUsageLine| (l.feature.clone(), l.model.clone());
    match lines.binary_search_by_key(&key(&line), key) {
        Ok(at) => {
            let total = &mut lines[at];
            total.requests += line.requests;
            total.input_tokens += line.input_tokens;
            total.output_tokens += line.output_tokens;
            total.cache_read_tokens += line.cache_read_tokens;
            total.cache_write_tokens += line.cache_write_tokens;
            total.cost_units += line.cost_units;
            total.charged += line.charged;
        }
        Err(at) => lines.insert(at, line),
    }
}

pub(crate) async fn stats(context: &ServerContext) -> StatsSnapshot {
    let (shards, storage_bytes) = context.router.collect_stats().await;
    let mut snapshot = StatsSnapshot {
        at_ms: context.clock.now_ms(),
        storage_bytes,
        ..StatsSnapshot::default()
    };
    let mut top: Vec<TopCustomer> = Vec::new();
    for (shard, activity) in shards {
        snapshot.shards.push(shard);
        top.extend(activity.top_by_usage);
        snapshot.top_by_spend.extend(activity.top_by_spend);
        snapshot.recent_invoices.extend(activity.recent_invoices);
        snapshot
            .recent_transactions
            .extend(activity.recent_transactions);
        let revenue = &mut snapshot.revenue;
        revenue.month_start_ms = activity.revenue.month_start_ms;
        revenue.gross_units += activity.revenue.gross_units;
        revenue.fee_units += activity.revenue.fee_units;
        revenue.net_units += activity.revenue.net_units;
        revenue.invoices += activity.revenue.invoices;
        revenue.transactions += activity.revenue.transactions;
        for line in activity.models {
            merge_model_line(&mut snapshot.models, line);
        }
    }
    top.sort_by(|a, b| {
        b.units
            .cmp(&a.units)
            .then_with(|| a.customer.cmp(&b.customer))
    });
    top.truncate(TOP_CUSTOMERS);
    snapshot.top_by_usage = top;
    let spend = &mut snapshot.top_by_spend;
    spend.sort_by(|a, b| {
        b.spend_units
            .cmp(&a.spend_units)
            .then_with(|| a.customer.cmp(&b.customer))
    });
    spend.truncate(TOP_CUSTOMERS);
    snapshot
        .recent_invoices
        .sort_by_key(|i| std::cmp::Reverse(i.closed_at_ms));
    snapshot.recent_invoices.truncate(RECENT_MAX);
    snapshot
        .recent_transactions
        .sort_by_key(|t| std::cmp::Reverse(t.at_ms));
    snapshot.recent_transactions.truncate(RECENT_MAX);
    snapshot.webhooks = context.webhooks.snapshot();
    snapshot.recent_alerts =
        crate::webhooks::watch::recent_alerts(&context.webhook_admin.store, RECENT_ALERTS);
    let mut telemetry = context.telemetry();
    snapshot.operations = telemetry.operations();
    snapshot.checks_allowed = telemetry.checks_allowed;
    snapshot.checks_denied = telemetry.checks_denied;
    snapshot.connections = telemetry.connections;
    snapshot.uptime_ms = telemetry.uptime_ms();
    snapshot.interval_ms = telemetry.interval_ms();
    snapshot
}

/// Answers waiting for the writer, shared by one stream's request tasks and its writer — all on
/// the server thread, so a `RefCell` rather than a channel: an answer is appended where it is
/// encoded, and the writer takes everything queued in one swap.
#[derive(Default)]
struct Outbox {
    state: RefCell<OutboxState>,
    /// Wakes the writer when answers are queued or the reader stopped.
    ready: Notify,
}

#[derive(Default)]
struct OutboxState {
    /// Encoded frames, back to back.
    bytes: Vec<u8>,
    /// Frames in `bytes`.
    frames: u32,
    /// Requests read and not yet taken by the writer: the stream's in-flight count. An answer
    /// still counts until the writer takes it, so a peer that stops reading its answers stops
    /// being read itself once it reaches the limit, and what waits here stays bounded.
    inflight: u32,
    /// The reader has stopped; the writer ends once nothing is in flight.
    reading_stopped: bool,
}

impl Outbox {
    /// Counts one more request in flight, unless `limit` are already.
    fn admit(&self, limit: u32) -> bool {
        let mut state = self.state.borrow_mut();
        if state.inflight >= limit {
            return false;
        }
        state.inflight += 1;
        true
    }

    fn push(&self, frame: &ServerFrame) {
        let mut state = self.state.borrow_mut();
        encode_frame(frame, &mut state.bytes).expect("answers are far below the frame limit");
        state.frames += 1;
        drop(state);
        self.ready.notify_one();
    }

    fn stop_reading(&self) {
        self.state.borrow_mut().reading_stopped = true;
        self.ready.notify_one();
    }

    /// Moves every queued answer into `batch` (empty) and counts them out of flight.
    fn take(&self, batch: &mut Vec<u8>) -> Taken {
        let mut state = self.state.borrow_mut();
        if !state.bytes.is_empty() {
            std::mem::swap(&mut state.bytes, batch);
            state.inflight -= state.frames;
            state.frames = 0;
            Taken::Answers
        } else if state.reading_stopped && state.inflight == 0 {
            Taken::Done
        } else {
            Taken::Nothing
        }
    }
}

/// What the writer found in the outbox.
#[derive(Debug, PartialEq)]
enum Taken {
    /// Answers to write.
    Answers,
    /// Nothing yet; more will come.
    Nothing,
    /// Nothing, and nothing more will come.
    Done,
}

/// Writes queued answers, everything queued in one stream write, until the reader has stopped
/// and every request it read is answered; returns the stream if it still works.
async fn write_answers(
    mut send: quinn::SendStream,
    outbox: Rc<Outbox>,
) -> Option<quinn::SendStream> {
    let mut batch = Vec::new();
    loop {
        match outbox.take(&mut batch) {
            Taken::Answers => {
                if send.write_all(&batch).await.is_err() {
                    return None;
                }
                batch.clear();
            }
            Taken::Nothing => outbox.ready.notified().await,
            Taken::Done => return Some(send),
        }
    }
}

async fn write_frame(
    send: &mut quinn::SendStream,
    frame: &ServerFrame,
) -> Result<(), quinn::WriteError> {
    let mut bytes = Vec::new();
    encode_frame(frame, &mut bytes).expect("server frames are far below the frame limit");
    send.write_all(&bytes).await
}

/// Tells the peer why, gives the words a moment to arrive, then closes the connection with `code`.
async fn say_goodbye(
    connection: &quinn::Connection,
    mut send: quinn::SendStream,
    error: TallyError,
    code: u32,
) {
    let reason = error.to_string();
    if write_frame(&mut send, &ServerFrame::Goodbye(error))
        .await
        .is_ok()
        && send.finish().is_ok()
    {
        let _ = tokio::time::timeout(GOODBYE_FLUSH, send.stopped()).await;
    }
    let reason = &reason.as_bytes()[..reason.len().min(256)];
    connection.close(code.into(), reason);
}

/// `future`'s output if it is ready at once, else `None` (the future is dropped: only for futures
/// that lose nothing when dropped pending, like a read that has not read anything).
async fn ready_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx))).await {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// `future`, given at most `limit` — but a future that is ready at once (a frame already in the
/// read buffer, the common case under load) costs no timer.
async fn within<F: std::future::Future>(
    limit: Duration,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut future = std::pin::pin!(future);
    match ready_now(future.as_mut()).await {
        Some(output) => Ok(output),
        None => tokio::time::timeout(limit, future).await,
    }
}

fn invalid(reason: String) -> TallyError {
    TallyError::InvalidRequest { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: u64) -> ServerFrame {
        ServerFrame::Response(ResponseFrame {
            id,
            reply: Reply::Err(TallyError::Overloaded),
        })
    }

    #[test]
    fn answers_count_in_flight_until_the_writer_takes_them() {
        let outbox = Outbox::default();
        assert!(outbox.admit(2) && outbox.admit(2));
        assert!(!outbox.admit(2), "a third request over a limit of 2");
        outbox.push(&answer(1));
        assert!(!outbox.admit(2), "an answer not yet taken still counts");
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch), Taken::Answers);
        let mut expected = Vec::new();
        encode_frame(&answer(1), &mut expected).unwrap();
        assert_eq!(batch, expected);
        assert!(outbox.admit(2), "taking the answer freed its slot");
    }

    #[test]
    fn the_writer_is_done_only_when_reading_stopped_and_everything_is_answered() {
        let outbox = Outbox::default();
        let taken = || outbox.take(&mut Vec::new());
        assert!(outbox.admit(4) && outbox.admit(4));
        outbox.stop_reading();
        assert_eq!(taken(), Taken::Nothing, "two in flight");
        outbox.push(&answer(7));
        assert_eq!(taken(), Taken::Answers);
        assert_eq!(taken(), Taken::Nothing, "one in flight");
        outbox.push(&answer(8));
        assert_eq!(taken(), Taken::Answers);
        assert_eq!(taken(), Taken::Done);
    }
}
