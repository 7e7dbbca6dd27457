//! Webhook delivery: signed `POST`s from the active request server, retried with backoff on emulator time, in
//! order per registration and payment.
//!
//! Retry schedule after a failed attempt `n` (1-based): 2 s after attempts 1 to 3, 60 s after attempt 4, 120 s
//! after attempt 5, hourly after attempts 6 to 28, then daily; an event is given up when the next attempt would
//! fall more than 7 days after its first attempt. Success is a 2xx answer within the delivery timeout (10 s);
//! redirects are not followed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use vipps_types::signing;

use super::chaos::ChaosAction;
use super::request_servers::Side;
use crate::config::MerchantEnvironment;
use crate::platform::Shared as S;
use crate::platform::metrics::DeliveryLabel;
use crate::platform::store::{DeliveryOutcome, DueDelivery, Op};

/// Seven days in milliseconds: the retry horizon.
pub(crate) const HORIZON_MS: i64 = 7 * 86_400_000;

/// The delay before the next attempt after failed attempt `n` (1-based).
pub(crate) fn retry_delay_ms(n: u32) -> i64 {
    match n {
        0..=3 => 2_000,
        4 => 60_000,
        5 => 120_000,
        6..=28 => 3_600_000,
        _ => 86_400_000,
    }
}

/// What follows a failed attempt `n` whose event was first tried at `first_ms`.
pub(crate) fn after_failure(n: u32, first_ms: i64, now_ms: i64) -> DeliveryOutcome {
    let next = now_ms + retry_delay_ms(n);
    if next - first_ms > HORIZON_MS {
        DeliveryOutcome::GiveUp
    } else {
        DeliveryOutcome::Retry { next_ms: next }
    }
}

/// HTTP clients bound to request-server source addresses.
#[derive(Default)]
pub(crate) struct Clients {
    by_source: Mutex<HashMap<IpAddr, reqwest::Client>>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

impl Clients {
    /// The client for one source address. It keeps as many idle connections per receiver as deliveries may run at
    /// once: with fewer, every burst closed most connections and opened new ones, and each new connection bound to
    /// the request server's address makes the kernel search that address's bound ports (with tens of thousands of
    /// sockets in TIME_WAIT after a burst, that search was most of the dispatcher's time).
    fn get(
        &self,
        source: IpAddr,
        timeout: Duration,
        concurrency: usize,
    ) -> Result<reqwest::Client, String> {
        let mut m = self.by_source.lock();
        if let Some(c) = m.get(&source) {
            return Ok(c.clone());
        }
        let c = reqwest::Client::builder()
            .local_address(source)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vipps-emulator/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| e.to_string())?;
        m.insert(source, c.clone());
        Ok(c)
    }
}

fn side_of(s: &S, msn: &str) -> Side {
    match s.auth.msns.get(msn) {
        Some(MerchantEnvironment::Production) => Side::Production,
        _ => Side::Test,
    }
}

/// An HTTP client for a product's own callbacks to a merchant (not webhooks): it sends from the active request
/// server of the sales unit's environment, like webhook deliveries, so a receiver's allowlist treats both alike.
/// Answers the client, its source address and the server's hostname.
pub(crate) fn callback_client(
    s: &S,
    tenant: &str,
    timeout: Duration,
) -> Result<(reqwest::Client, IpAddr, String), String> {
    let side = side_of(s, tenant);
    let (source, hostname) = {
        let rs = s.request_servers.read();
        let active = rs.active(side);
        (active.addresses[0], active.hostname.clone())
    };
    let c = reqwest::Client::builder()
        .local_address(source)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vipps-emulator/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())?;
    Ok((c, source, hostname))
}

/// Runs one attempt and records it. `permit` is one of the `delivery_concurrency` outbound requests; it is given
/// back when the receiver has answered, not when the attempt is recorded, so a group commit in progress does not
/// hold the dispatcher's outbound capacity (the delivery stays in flight, and is not started again, until then).
async fn deliver(s: S, clients: Arc<Clients>, d: DueDelivery, permit: OwnedSemaphorePermit) {
    let side = side_of(&s, &d.tenant);
    let (source, hostname) = {
        let rs = s.request_servers.read();
        let active = rs.active(side);
        (active.addresses[0], active.hostname.clone())
    };
    let attempt_no = d.attempts + 1;
    let at_ms = s.clock.unix_ms();
    let started = Instant::now();
    let chaos = s.chaos.take(&d.event_type, &d.event_name, &d.url);
    let mut request_headers = serde_json::Map::new();
    // The statuses of a duplicated attempt's copies after the first.
    let mut copies: Vec<Option<u16>> = Vec::new();
    let result: Result<u16, String> = async {
        let url = url::Url::parse(&d.url).map_err(|e| format!("invalid URL: {e}"))?;
        let signed = sign(&s, &d, &url, chaos.as_ref().map(|(_, a)| a));
        for (k, v) in [
            ("content-type", "application/json"),
            ("host", signed.host.as_str()),
            (signing::X_MS_DATE, signed.x_ms_date.as_str()),
            (
                signing::X_MS_CONTENT_SHA256,
                signed.x_ms_content_sha256.as_str(),
            ),
            ("authorization", signed.authorization.as_str()),
        ] {
            request_headers.insert(k.into(), v.into());
        }
        match chaos.as_ref().map(|(_, a)| a) {
            Some(ChaosAction::Drop) => {
                return Err("dropped by a webhook chaos rule: not sent".to_owned());
            }
            Some(ChaosAction::Reorder) => return Ok(REORDERED),
            Some(ChaosAction::Delay { ms }) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            _ => {}
        }
        let client = clients.get(
            source,
            s.config.delivery_timeout,
            s.config.delivery_concurrency,
        )?;
        let send = || async {
            let resp = client
                .post(url.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(signing::X_MS_DATE, &signed.x_ms_date)
                .header(signing::X_MS_CONTENT_SHA256, &signed.x_ms_content_sha256)
                .header(http::header::AUTHORIZATION, &signed.authorization)
                .body(d.payload.clone())
                .send()
                .await
                .map_err(|e| {
                    if e.is_timeout() {
                        "timeout: no answer within the delivery timeout".to_owned()
                    } else {
                        format!("{e}")
                    }
                })?;
            let status = resp.status().as_u16();
            // Drain the body so the connection can be reused.
            let _ = resp.bytes().await;
            Ok::<u16, String>(status)
        };
        let first = send().await;
        if matches!(chaos, Some((_, ChaosAction::Duplicate))) {
            copies.push(send().await.ok());
        }
        first
    }
    .await;
    drop(permit);
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let reordered = matches!(result, Ok(REORDERED));
    let (ok, status, error) = match &result {
        Ok(REORDERED) => (true, None, None),
        Ok(st) => ((200..300).contains(st), Some(*st), None),
        Err(e) => (false, None, Some(e.clone())),
    };
    let first = d.first_attempt_ms.unwrap_or(at_ms);
    let outcome = if ok {
        DeliveryOutcome::Delivered
    } else {
        after_failure(attempt_no, first, at_ms)
    };
    if reordered {
        // The event goes to the back of its queue as a new delivery first, so it is never lost; this one is then
        // finished without being sent.
        let again = Op::Redeliver { delivery_id: d.id }.background(at_ms);
        if let Err(e) = s.store.write(again).await {
            tracing::warn!(error = %e, delivery = d.id, "could not queue a reordered delivery again");
        }
    }
    let mut record = serde_json::json!({
        "delivery_id": d.id,
        "webhook_id": d.webhook_id,
        "url": d.url,
        "msn": d.tenant,
        "reference": d.subject,
        "event": d.event_type,
        "event_name": d.event_name,
        "event_id": d.event_id,
        "attempt": attempt_no,
        "time": crate::platform::clock::rfc3339(s.clock.now()),
        "request_headers": request_headers,
        "response_status": status,
        "error": error,
        "latency_ms": latency_ms,
        "source_address": source.to_string(),
        "source_hostname": hostname,
        "outcome": match outcome {
            _ if reordered => "reordered".to_owned(),
            DeliveryOutcome::Delivered => "delivered".to_owned(),
            DeliveryOutcome::Retry { .. } => "retry".to_owned(),
            DeliveryOutcome::GiveUp => "given_up".to_owned(),
        },
        "next_attempt_ms": match outcome { DeliveryOutcome::Retry { next_ms } => Some(next_ms), _ => None },
    });
    // A reordered attempt sent nothing: it is not an outcome of a delivery (its event is queued again).
    if let Some(m) = s.metrics.as_ref().filter(|_| !reordered) {
        let label = match outcome {
            DeliveryOutcome::Delivered => DeliveryLabel::Delivered,
            DeliveryOutcome::Retry { .. } => DeliveryLabel::Retry,
            DeliveryOutcome::GiveUp => DeliveryLabel::GivenUp,
        };
        m.delivery(label, Duration::from_secs_f64(latency_ms / 1000.0));
    }
    if let Some((rule, action)) = &chaos {
        let mut c = serde_json::to_value(action).unwrap_or_default();
        c["rule"] = (*rule).into();
        if !copies.is_empty() {
            c["copies"] = serde_json::to_value(&copies).unwrap_or_default();
        }
        record["chaos"] = c;
    }
    tracing::debug!(delivery = d.id, subject = %d.subject, event = %d.event_type, attempt = attempt_no, ?status, "webhook attempt");
    let w = Op::DeliveryResult {
        delivery_id: d.id,
        webhook_id: d.webhook_id.clone(),
        subject: d.subject.clone(),
        attempt: record.to_string(),
        at_ms,
        outcome,
    }
    .background(at_ms);
    let written = s.store.write(w).await;
    if written.is_ok() {
        s.delivery_event(&record);
    }
    s.changed();
    if let Err(e) = written {
        tracing::warn!(error = %e, delivery = d.id, "could not record a delivery attempt; it will be retried");
    }
}

/// How long the dispatcher waits for a wake-up when every due delivery is already under way.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(50);

/// Stands for "not sent, moved to the back of its queue" where an attempt's HTTP status goes (no real status is
/// below 100).
const REORDERED: u16 = 0;

/// The signature headers of an attempt, as a chaos rule may spoil them.
fn sign(
    s: &S,
    d: &DueDelivery,
    url: &url::Url,
    chaos: Option<&ChaosAction>,
) -> signing::SignedHeaders {
    let now = s.clock.wall();
    match chaos {
        Some(ChaosAction::WrongSignature) => {
            signing::sign(&format!("{}-wrong", d.secret), url, &d.payload, now)
        }
        Some(ChaosAction::StaleSignature { seconds }) => signing::sign(
            &d.secret,
            url,
            &d.payload,
            now - Duration::from_secs(*seconds),
        ),
        Some(ChaosAction::SkewDate { seconds }) => {
            let mut signed = signing::sign(&d.secret, url, &d.payload, now);
            let skew = Duration::from_secs(seconds.unsigned_abs());
            let moved = if *seconds > 0 { now + skew } else { now - skew };
            signed.x_ms_date = signing::format_date(moved);
            signed
        }
        _ => signing::sign(&d.secret, url, &d.payload, now),
    }
}

/// How many due deliveries one read of the queue takes.
const DUE_PAGE: usize = 1024;

/// The dispatcher: wakes on new events, finished attempts, clock moves or the next due time, and starts the due
/// deliveries (the head of each registration-and-payment queue), at most `delivery_concurrency` at once.
pub(crate) async fn dispatcher(s: S, shutdown: CancellationToken) {
    let clients = Arc::new(Clients::default());
    // Deliveries in flight (false) or finished since the last query (true). Finished ones are forgotten only when a
    // new query starts, so a due list read before an attempt was recorded cannot start that delivery again.
    let inflight: Arc<Mutex<HashMap<i64, bool>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(s.config.delivery_concurrency));
    // Where the current pass over the queue is: each read takes the next page, so deliveries in flight are not
    // read again and again while a burst drains (a re-read of the first page after every recorded attempt was
    // most of the store's work). A pass ends with a short page; the next starts from the beginning.
    let mut after_id = 0;
    loop {
        let now = s.clock.unix_ms();
        inflight.lock().retain(|_, done| !*done);
        match s.store.due_deliveries(now, after_id, DUE_PAGE).await {
            Ok(due) => {
                let more = due.len() == DUE_PAGE;
                after_id = if more {
                    due.last().map_or(0, |d| d.id)
                } else {
                    0
                };
                for d in due {
                    {
                        let mut f = inflight.lock();
                        if f.contains_key(&d.id) {
                            continue;
                        }
                        f.insert(d.id, false);
                    }
                    let permit = match permits.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => return,
                    };
                    let (s2, c2, f2) = (s.clone(), clients.clone(), inflight.clone());
                    tokio::spawn(async move {
                        let id = d.id;
                        deliver(s2, c2, d, permit).await;
                        f2.lock().insert(id, true);
                    });
                }
                if more {
                    continue;
                }
            }
            Err(e) => {
                after_id = 0;
                tracing::warn!(error = %e, "reading due deliveries failed");
            }
        }
        let wait = match s.store.next_delivery_ms().await {
            // Due now, yet not started by the pass that just ended: in flight, behind one in flight, or attempted
            // and not yet recorded. Each of those ends with a recorded attempt, which wakes the dispatcher, so
            // this is only a safety poll. (Polling every millisecond instead re-read the whole in-flight window
            // a thousand times a second: most of the store's reads in a burst.)
            Ok(Some(next)) if next <= s.clock.unix_ms() => IN_FLIGHT_POLL,
            Ok(Some(next)) => {
                Duration::from_millis((next - s.clock.unix_ms()).clamp(1, 1000) as u64)
            }
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            _ = s.outbox.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_reaches_seven_days_and_gives_up() {
        let first = 0;
        let mut now = 0;
        let mut n = 1;
        let mut delays = vec![];
        loop {
            match after_failure(n, first, now) {
                DeliveryOutcome::Retry { next_ms } => {
                    delays.push(next_ms - now);
                    now = next_ms;
                    n += 1;
                }
                DeliveryOutcome::GiveUp => break,
                DeliveryOutcome::Delivered => unreachable!(),
            }
        }
        assert_eq!(&delays[..5], &[2_000, 2_000, 2_000, 60_000, 120_000]);
        assert!(
            now <= HORIZON_MS && now > HORIZON_MS - 86_400_000,
            "last attempt within the last day of 7: {now}"
        );
        assert!(n > 29);
    }
}
