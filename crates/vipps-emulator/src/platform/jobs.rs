//! Background jobs: the sweeper (time-driven changes of due aggregates, through their products), scheduled
//! rotation of the request servers, removal of unresponsive webhooks, purges, and on a shared store the sync of
//! clock and request servers between instances.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shared;
use super::store::Op;
use super::webhooks::request_servers::RequestServers;

/// How often an instance on a shared store reads the shared clock and request-server state.
const SHARED_SYNC: Duration = Duration::from_millis(100);

/// On a shared store: keeps this instance's clock offset and request servers (and so its DNS answers) equal to
/// the shared state that any instance may change.
async fn sync_shared(s: Shared, shutdown: CancellationToken) {
    let mut last_rs: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SHARED_SYNC) => {}
            _ = shutdown.cancelled() => return,
        }
        sync_shared_once(&s, &mut last_rs).await;
    }
}

/// Reads the shared clock offset and request-server state once and applies what changed.
pub(crate) async fn sync_shared_once(s: &Shared, last_rs: &mut Option<String>) {
    if let Ok(Some(v)) = s.store.meta("clock_offset_ms").await {
        if let Ok(offset) = v.parse::<i64>() {
            if offset > s.clock.offset_ms() {
                s.clock.set_offset_ms(offset);
                s.sweep.notify_one();
                s.outbox.notify_one();
            }
        }
    }
    if let Ok(Some(json)) = s.store.meta("request_servers").await {
        if last_rs.as_deref() != Some(json.as_str()) {
            if let Ok(mut rs) = serde_json::from_str::<RequestServers>(&json) {
                let records = {
                    let mut cur = s.request_servers.write();
                    // A stored state older than ours is one we are about to replace; one as new as ours but
                    // different comes from another instance that changed it at the same time: the store decides.
                    if rs.version < cur.version {
                        *last_rs = Some(json);
                        return;
                    }
                    // Locally configured addresses win, as at start.
                    for ps in &mut rs.pools {
                        for srv in &mut ps.servers {
                            if let Some(a) = s.config.request_server_addresses.get(&srv.hostname) {
                                srv.addresses = a.clone();
                            }
                        }
                    }
                    rs.move_on_rotation = s.config.request_server_addresses.is_empty();
                    *cur = rs;
                    cur.records()
                };
                s.dns_answers.set(&records);
            }
            *last_rs = Some(json);
        }
    }
}

/// Saves the request-server state and publishes it to DNS at once.
pub(crate) async fn request_servers_changed(s: &Shared) {
    let (json, records) = {
        let rs = s.request_servers.read();
        (
            serde_json::to_string(&*rs).unwrap_or_default(),
            rs.records(),
        )
    };
    s.dns_answers.set(&records);
    s.changed();
    let w = Op::SetMeta {
        key: "request_servers".into(),
        value: json,
    }
    .background(s.clock.unix_ms());
    if let Err(e) = s.store.write(w).await {
        tracing::warn!(error = %e, "could not save the request-server state");
    }
}

/// Runs the scheduled rotation when its period has passed, and removes unresponsive webhooks.
pub(crate) async fn rotate_if_due(s: &Shared) {
    let now = s.clock.unix_ms();
    let period = s.config.rotation_period.as_millis() as i64;
    let due = {
        let mut rs = s.request_servers.write();
        if period > 0 && now - rs.last_rotation_ms >= period {
            rs.rotate_all(now);
            if let Some(m) = &s.metrics {
                for p in vipps_types::servers::Pool::ALL {
                    m.rotation(p, true);
                }
            }
            true
        } else {
            false
        }
    };
    if due {
        tracing::info!("scheduled rotation of the request servers");
        request_servers_changed(s).await;
    }
    let before = now - s.config.unresponsive_removal.as_millis() as i64;
    let _ = s
        .store
        .write(Op::RemoveUnresponsive { before_ms: before }.background(now))
        .await;
}

/// How many due aggregates one sweep step reads and settles at once.
const SWEEP_BATCH: usize = 2000;

/// Persists the changes time has made for every aggregate that is due, through the product that owns its kind.
pub(crate) async fn sweep_once(s: &Shared) {
    let _one_at_a_time = s.sweeping.lock().await;
    loop {
        let now = s.clock.unix_ms();
        let due = match s.store.due(now, SWEEP_BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "sweep failed");
                return;
            }
        };
        let n = due.len();
        let mut settled = 0;
        // Aggregates that other products follow: they hear about time's changes too, once written.
        let mut followed = Vec::new();
        let writes: Vec<_> = due
            .into_iter()
            .filter_map(|d| {
                let cmd = s.products.settle(&d.kind, &d.tenant, &d.id);
                if cmd.is_none() {
                    tracing::warn!(kind = %d.kind, "a due aggregate of a kind no product owns");
                }
                cmd
            })
            .map(|cmd| {
                let key = s
                    .products
                    .is_followed(cmd.key().kind)
                    .then(|| cmd.key().clone());
                async move {
                    let (w, noted) = s.write_noting(Op::Execute(cmd).background(now)).await;
                    (w, key.filter(|_| noted))
                }
            })
            .collect();
        let written = futures::future::join_all(writes).await;
        s.changed();
        for (w, key) in written {
            match w {
                Ok(_) => settled += 1,
                Err(e) => tracing::warn!(error = %e, "a time-driven change failed"),
            }
            followed.extend(key);
        }
        futures::future::join_all(
            followed
                .iter()
                .map(|key| s.products.notify_followers(s, key)),
        )
        .await;
        // A full batch may have more behind it; a batch that settled nothing would only repeat itself.
        if n < SWEEP_BATCH || settled == 0 {
            return;
        }
    }
}

async fn sweeper(s: Shared, shutdown: CancellationToken) {
    let mut last_purge = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = s.sweep.notified() => {}
            _ = shutdown.cancelled() => return,
        }
        sweep_once(&s).await;
        rotate_if_due(&s).await;
        if last_purge.elapsed() >= Duration::from_secs(60) {
            last_purge = std::time::Instant::now();
            let now = s.clock.unix_ms();
            let before = now - s.config.idempotency_retention.as_millis() as i64;
            let _ = s
                .store
                .write(Op::PurgeIdempotency { before_ms: before }.background(now))
                .await;
            let keep = super::webhooks::delivery::HORIZON_MS + 86_400_000;
            let _ = s
                .store
                .write(
                    Op::PurgeDeliveries {
                        before_ms: now - keep,
                    }
                    .background(now),
                )
                .await;
        }
    }
}

/// Starts the background jobs: the sweeper, the webhook dispatcher and, on a shared store, the sync.
pub(crate) fn spawn(s: &Shared, shutdown: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![
        tokio::spawn(sweeper(s.clone(), shutdown.clone())),
        tokio::spawn(super::webhooks::delivery::dispatcher(
            s.clone(),
            shutdown.clone(),
        )),
    ];
    if s.store.shared() {
        tasks.push(tokio::spawn(sync_shared(s.clone(), shutdown.clone())));
        tasks.push(tokio::spawn(super::metrics::recount_shared(
            s.clone(),
            shutdown.clone(),
        )));
    }
    tasks
}
