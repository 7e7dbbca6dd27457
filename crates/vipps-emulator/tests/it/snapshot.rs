//! Snapshots: exported under load (`POST /_emulator/snapshot`), imported into a fresh emulator
//! (`StateFiles::import`) that answers the same, and refused as a whole when the file is not one to load.

use std::path::Path;

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vipps_emulator::{Config, Emulator, StateFiles, Storage};
use vipps_test_support::table::{Case, check_async};

use crate::common::*;
use crate::delivery::{Receiver, register};

/// An emulator of the suite's backend that starts from `file`.
async fn start_from(file: &Path) -> Env {
    start_with(Config {
        state_files: StateFiles {
            import: Some(file.to_owned()),
            ..Default::default()
        },
        ..Config::ephemeral()
    })
    .await
}

/// What a payment answers: its GET and its event log.
async fn answers(env: &Env, token: &str, reference: &str) -> (u16, Value, Value) {
    let r = env
        .get(token, &format!("/epayment/v1/payments/{reference}"))
        .await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let events: Value = env
        .get(token, &format!("/epayment/v1/payments/{reference}/events"))
        .await
        .json()
        .await
        .unwrap();
    (status, body, events)
}

/// Drives one payment through create, approval, capture and refund as far as `i` says.
async fn drive(env: &Env, token: &str, i: usize) {
    let r = format!("order-snap-{i:05}");
    assert_eq!(
        env.create(token, &r, 1000 + i as i64, &format!("{r}-c"))
            .await
            .status(),
        201
    );
    if i % 4 == 0 {
        return;
    }
    env.approve(token, &r).await;
    let amount = |v: i64| json!({"modificationAmount": {"currency": "NOK", "value": v}});
    if i % 4 >= 2 {
        let p = format!("/epayment/v1/payments/{r}/capture");
        env.post_json(token, &p, Some(&format!("{r}-cap")), amount(500))
            .await;
    }
    if i % 4 == 3 {
        let p = format!("/epayment/v1/payments/{r}/refund");
        env.post_json(token, &p, Some(&format!("{r}-ref")), amount(100))
            .await;
    }
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_under_load_starts_an_emulator_that_answers_the_same() {
    let a = start().await;
    let rx = Receiver::start().await;
    let t = a.token().await;
    register(&a, &t, &rx.url()).await;
    a.control(
        Method::POST,
        "/_emulator/clock/advance",
        Some(json!({"seconds": 90})),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    const N: usize = 60;

    // Under load: payments are created and moved while the snapshot is read.
    let during = dir.path().join("during.snapshot");
    let load = async {
        for i in 0..N {
            drive(&a, &t, i).await;
        }
    };
    let snap = async {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        a.control(
            Method::POST,
            "/_emulator/snapshot",
            Some(json!({"path": during})),
        )
        .await
    };
    let ((), r) = tokio::join!(load, snap);
    assert_eq!(r.status(), 201);
    let summary = json_of(r).await;
    assert!(
        summary["rows"]["aggregates"].as_u64().unwrap() > 0,
        "the load had begun: {summary}"
    );

    // Consistent even under load: in the emulator started from it, every payment it holds has the answer of its
    // create stored with it (replayed byte for byte), and one it lacks has no stored answer either.
    let mid = start_from(&during).await;
    let t_mid = mid.token().await;
    let mut present = 0;
    for i in 0..N {
        let r = format!("order-snap-{i:05}");
        let held = mid
            .get(&t_mid, &format!("/epayment/v1/payments/{r}"))
            .await
            .status()
            == 200;
        let again = mid
            .create(&t_mid, &r, 1000 + i as i64, &format!("{r}-c"))
            .await;
        assert_eq!(again.status(), 201, "{r}");
        let replayed = again.headers().get("idempotent-replayed").is_some();
        assert_eq!(replayed, held, "{r}: payment and stored answer go together");
        present += usize::from(held);
    }
    assert!(present > 0 && present <= N);

    // After the load, once its webhooks are delivered: the whole state, into a fresh emulator, answers exactly
    // as the original does.
    crate::delivery::attempts_recorded(&a, "order-snap-00003", 4).await;
    crate::delivery::attempts_recorded(&a, &format!("order-snap-{:05}", N - 1), 4).await;
    let r = a.control(Method::POST, "/_emulator/snapshot", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.vipps-emulator.snapshot"
    );
    let after = dir.path().join("after.snapshot");
    std::fs::write(&after, r.bytes().await.unwrap()).unwrap();
    let b = start_from(&after).await;
    // A token from the original is good on the copy: the signing key came along.
    for i in 0..N {
        let r = format!("order-snap-{i:05}");
        assert_eq!(answers(&a, &t, &r).await, answers(&b, &t, &r).await, "{r}");
    }
    // Idempotency records came along: a retry on the copy is a replay of the original's answer.
    let again = b
        .create(&t, "order-snap-00001", 1001, "order-snap-00001-c")
        .await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let conflict = b
        .create(&t, "order-snap-00001", 9999, "order-snap-00001-c")
        .await;
    assert_eq!(conflict.status(), 409);
    // So did the clock, the webhooks and the delivery record.
    for path in [
        "/_emulator/clock",
        "/_emulator/deliveries?reference=order-snap-00003",
    ] {
        let (x, y) = (
            json_of(a.control(Method::GET, path, None).await).await,
            json_of(b.control(Method::GET, path, None).await).await,
        );
        if path == "/_emulator/clock" {
            assert_eq!(x["offset_seconds"], y["offset_seconds"]);
        } else {
            assert_eq!(x, y, "{path}");
        }
    }
    assert_eq!(
        json_of(a.get(&t, "/webhooks/v1/webhooks").await).await,
        json_of(b.get(&t, "/webhooks/v1/webhooks").await).await
    );
    // And the copy goes on: new payments, changes and deliveries work.
    assert_eq!(b.approve(&t, "order-snap-00000").await.status(), 200);
    assert_eq!(
        b.create(&t, "order-snap-new01", 1000, "new-1")
            .await
            .status(),
        201
    );
    let recorded = crate::delivery::attempts_recorded(&b, "order-snap-new01", 1).await;
    assert!(recorded[0]["delivery_id"].as_i64() > Some(0));
}

/// One way a snapshot file can be wrong.
#[derive(Debug)]
struct Refused {
    name: &'static str,
    /// Turns a good file into the bad one.
    spoil: fn(&[u8]) -> Vec<u8>,
    /// What the error says.
    says: &'static str,
}

impl Case for Refused {
    fn name(&self) -> String {
        self.name.to_owned()
    }
}

/// The header and state parts of a good file.
fn split(good: &[u8]) -> (Value, Value) {
    let nl = good.iter().position(|b| *b == b'\n').unwrap();
    (
        serde_json::from_slice(&good[..nl]).unwrap(),
        serde_json::from_slice(&good[nl + 1..]).unwrap(),
    )
}

/// A file with this header and state, with a correct length and checksum.
fn join(mut header: Value, state: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(state).unwrap();
    header["length"] = body.len().into();
    header["sha256"] = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into();
    let mut out = serde_json::to_vec(&header).unwrap();
    out.push(b'\n');
    out.extend(body);
    out
}

/// The first aggregate row's cells, changed by `f`, in an otherwise good file.
fn with_aggregate(good: &[u8], f: fn(&mut Vec<Value>)) -> Vec<u8> {
    let (h, mut s) = split(good);
    let row = s["aggregates"][0].as_array_mut().unwrap();
    f(row);
    join(h, &s)
}

#[tokio::test]
async fn a_bad_snapshot_is_refused_before_anything_is_loaded() {
    let a = start().await;
    let t = a.token().await;
    a.create(&t, "order-refuse-001", 1000, "rf-1").await;
    let good = a
        .control(Method::POST, "/_emulator/snapshot", None)
        .await
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        Refused {
            name: "empty file",
            spoil: |_| Vec::new(),
            says: "no header line",
        },
        Refused {
            name: "not a snapshot",
            spoil: |_| b"{\"hello\": 1}\n{}".to_vec(),
            says: "not an emulator snapshot",
        },
        Refused {
            name: "malformed header",
            spoil: |g| [b"#!".as_slice(), g].concat(),
            says: "header line is not JSON",
        },
        Refused {
            name: "truncated",
            spoil: |g| g[..g.len() - 20].to_vec(),
            says: "truncated",
        },
        Refused {
            name: "corrupt",
            spoil: |g| {
                let mut g = g.to_vec();
                let i = g.len() - 10;
                g[i] ^= 0x20;
                g
            },
            says: "SHA-256 does not match",
        },
        Refused {
            name: "newer format",
            spoil: |g| {
                let (mut h, s) = split(g);
                h["version"] = 2.into();
                h["layout"] = "columnar".into();
                join(h, &s)
            },
            says: "format version 2",
        },
        Refused {
            name: "a table missing",
            spoil: |g| {
                let (h, mut s) = split(g);
                s.as_object_mut().unwrap().remove("webhooks");
                join(h, &s)
            },
            says: "webhooks",
        },
        Refused {
            name: "a cell of the wrong type",
            spoil: |g| with_aggregate(g, |row| row[6] = "yesterday".into()),
            says: "created_ms",
        },
        Refused {
            name: "a kind no product stores",
            spoil: |g| with_aggregate(g, |row| row[0] = "loyalty.card".into()),
            says: "kind `loyalty.card` is stored by no product",
        },
        Refused {
            name: "a document its product cannot read",
            spoil: |g| with_aggregate(g, |row| row[5] = "bm90IGpzb24=".into()),
            says: "unreadable",
        },
    ];
    check_async(&cases, |c| {
        let (dir, good) = (&dir, &good);
        async move {
            let file = dir.path().join(c.name.replace(' ', "-"));
            std::fs::write(&file, (c.spoil)(good)).map_err(|e| e.to_string())?;
            let data = dir
                .path()
                .join(format!("{}-data", c.name.replace(' ', "-")));
            let cfg = Config {
                storage: Storage::Dir(data.clone()),
                state_files: StateFiles {
                    import: Some(file),
                    ..Default::default()
                },
                ..Config::ephemeral()
            };
            let err = match Emulator::start(cfg).await {
                Ok(_) => return Err("the emulator started".into()),
                Err(e) => e.to_string(),
            };
            if !err.contains(c.says) {
                return Err(format!("the error `{err}` does not say `{}`", c.says));
            }
            // Nothing was loaded: the same store starts empty without the import.
            let cfg = Config {
                storage: Storage::Dir(data),
                ..Config::ephemeral()
            };
            let emu = Emulator::start(cfg).await.map_err(|e| e.to_string())?;
            let health: Value = reqwest::get(format!("{}_emulator/health", emu.base_url()))
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            emu.shutdown().await;
            if health["payments"] != 0 {
                return Err(format!("something was loaded: {health}"));
            }
            Ok(())
        }
    })
    .await;

    // A good file into a store that already holds state: refused by the store, loading nothing.
    let file = dir.path().join("good.snapshot");
    std::fs::write(&file, &good).unwrap();
    let storage = match &a.pg {
        Some(db) => Storage::Postgres(db.url.clone()),
        None => {
            let data = dir.path().join("busy");
            let busy = start_with(Config {
                storage: Storage::Dir(data.clone()),
                ..Config::ephemeral()
            })
            .await;
            let tok = busy.token().await;
            busy.create(&tok, "order-busy-0001", 1000, "busy-1").await;
            busy.emu.shutdown().await;
            Storage::Dir(data)
        }
    };
    let err = Emulator::start(Config {
        storage,
        state_files: StateFiles {
            import: Some(file),
            ..Default::default()
        },
        ..Config::ephemeral()
    })
    .await
    .expect_err("a store with state takes no snapshot");
    assert!(err.to_string().contains("already holds state"), "{err}");
    let p: Value = a
        .get(&t, "/epayment/v1/payments/order-refuse-001")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        p["state"], "CREATED",
        "the running emulator's state is intact"
    );
}

#[tokio::test]
async fn snapshot_controls_name_bad_input_and_export_on_exit_writes_atomically() {
    let a = start().await;
    for (body, field) in [
        (json!({"path": "relative/file"}), "path"),
        (json!({"path": "/nonexistent-dir/x/y.snapshot"}), "path"),
        (json!({"file": "/tmp/x"}), "file"),
    ] {
        let r = a
            .control(Method::POST, "/_emulator/snapshot", Some(body))
            .await;
        let p = problem(r, 400, None).await;
        assert_eq!(fields(&p), vec![field.to_owned()]);
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exit.snapshot");
    std::fs::write(&file, b"the previous file").unwrap();
    let env = start_with(Config {
        state_files: StateFiles {
            export_on_exit: Some(file.clone()),
            ..Default::default()
        },
        ..Config::ephemeral()
    })
    .await;
    let t = env.token().await;
    env.create(&t, "order-exit-00001", 1000, "exit-1").await;
    let Env { emu, pg, .. } = env;
    emu.shutdown().await;
    let written = std::fs::read(&file).unwrap();
    assert!(written.starts_with(b"{\"format\":\"vipps-emulator-snapshot\""));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "secrets inside: owner only ({mode:o})");
    }
    drop(pg);
    let b = start_from(&file).await;
    let t = b.token().await;
    let p: Value = b
        .get(&t, "/epayment/v1/payments/order-exit-00001")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["state"], "CREATED");
}

/// The example of `docs/scenario.md`, with the receiver's URL.
fn scenario_toml(url: &str) -> String {
    format!(
        r#"
[[merchants]]
msn = "654321"
client_id = "shop-two"
client_secret = "shop-two-secret"
subscription_key = "shop-two-key"

[[webhooks]]
url = "{url}"
secret = "scenario-secret"

[[payments]]
reference = "order-seed-0001"
amount = 1000

[[payments]]
reference = "order-seed-0002"
amount = 2500
state = "AUTHORIZED"
captured = 2000
refunded = 500

[[payments]]
reference = "order-seed-0003"
amount = 700
state = "TERMINATED"

[[payments]]
msn = "654321"
reference = "order-seed-0004"
amount = 900
state = "ABORTED"
"#
    )
}

#[tokio::test]
async fn a_scenario_seeds_merchants_payments_and_webhooks() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scenario.toml");
    std::fs::write(&file, scenario_toml(&rx.url())).unwrap();
    let env = start_with(Config {
        state_files: StateFiles {
            scenario: Some(file),
            ..Default::default()
        },
        ..Config::ephemeral()
    })
    .await;
    let t = env.token().await;
    let state = |r: &'static str, token: String| {
        let env = &env;
        async move { json_of(env.get(&token, &format!("/epayment/v1/payments/{r}")).await).await }
    };
    assert_eq!(
        state("order-seed-0001", t.clone()).await["state"],
        "CREATED"
    );
    let p = state("order-seed-0002", t.clone()).await;
    assert_eq!(p["state"], "AUTHORIZED");
    assert_eq!(p["aggregate"]["capturedAmount"]["value"], 2000);
    assert_eq!(p["aggregate"]["refundedAmount"]["value"], 500);
    assert_eq!(
        state("order-seed-0003", t.clone()).await["state"],
        "TERMINATED"
    );
    // The scenario's own merchant works like a configured one.
    let t2 = env
        .token_for("shop-two", "shop-two-secret", "shop-two-key")
        .await;
    let r = env
        .http
        .get(env.url("/epayment/v1/payments/order-seed-0004"))
        .bearer_auth(&t2)
        .header("Ocp-Apim-Subscription-Key", "shop-two-key")
        .header("Merchant-Serial-Number", "654321")
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await["state"], "ABORTED");
    // The webhook got the seeded payments' events, signed with the scenario's secret.
    let got = rx.wait_for("order-seed-0002", 4).await;
    let names: Vec<String> = got
        .iter()
        .map(|r| r.json()["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["CREATED", "AUTHORIZED", "CAPTURED", "REFUNDED"]);
    let d = &got[0];
    let delivery = vipps_types::signing::Delivery {
        path_and_query: &d.path,
        host: d.headers["host"].to_str().unwrap(),
        x_ms_date: d.headers["x-ms-date"].to_str().unwrap(),
        x_ms_content_sha256: d.headers["x-ms-content-sha256"].to_str().unwrap(),
        authorization: d.headers["authorization"].to_str().unwrap(),
        body: &d.body,
    };
    vipps_types::signing::verify(
        "scenario-secret",
        &delivery,
        std::time::SystemTime::now(),
        vipps_types::signing::DEFAULT_SKEW,
    )
    .expect("signed with the scenario's secret");
}

/// A scenario that cannot be seeded.
#[derive(Debug)]
struct BadScenario {
    toml: &'static str,
    says: &'static str,
}

impl Case for BadScenario {
    fn name(&self) -> String {
        self.says.to_owned()
    }
}

#[tokio::test]
async fn a_bad_scenario_stops_the_start_naming_the_item() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        BadScenario {
            toml: "[[rockets]]\nname = \"x\"\n",
            says: "`rockets` is no product's scenario section",
        },
        BadScenario {
            toml: "[[payments]]\nreference = \"order-bad-0001\"\namount = 100\nstate = \"PAID\"\n",
            says: "payments[0]: state: `PAID` cannot be seeded",
        },
        BadScenario {
            toml: "[[payments]]\nreference = \"order-bad-0001\"\namount = 100\ncolour = \"red\"\n",
            says: "payments[0]: unknown field `colour`",
        },
        BadScenario {
            toml: "[[payments]]\nreference = \"order-bad-0001\"\namount = 100\ncaptured = 50\n",
            says: "only an AUTHORIZED payment",
        },
        BadScenario {
            toml: "[[payments]]\nreference = \"x\"\namount = 100\n",
            says: "payments[0]: POST /epayment/v1/payments answered 400",
        },
        BadScenario {
            toml: "[[payments]]\nmsn = \"999999\"\nreference = \"order-bad-0001\"\namount = 100\n",
            says: "MSN 999999 is not a configured merchant",
        },
        BadScenario {
            toml: "[[webhooks]]\nurl = \"http://127.0.0.1:1/\"\nevents = [\"nope.v1\"]\n",
            says: "webhooks[0]: unknown event type `nope.v1`",
        },
        BadScenario {
            toml: "[[merchants]]\nmsn = \"12\"\nclient_id = \"a\"\nclient_secret = \"b\"\nsubscription_key = \"c\"\n",
            says: "merchants[0]",
        },
        BadScenario {
            toml: "payments = 3\n",
            says: "invalid type",
        },
    ];
    check_async(&cases, |c| {
        let dir = &dir;
        async move {
            let file = dir.path().join("bad.toml");
            std::fs::write(&file, c.toml).map_err(|e| e.to_string())?;
            let cfg = Config {
                state_files: StateFiles {
                    scenario: Some(file),
                    ..Default::default()
                },
                ..Config::ephemeral()
            };
            match Emulator::start(cfg).await {
                Ok(_) => Err("the emulator started".into()),
                Err(e) if e.to_string().contains(c.says) => Ok(()),
                Err(e) => Err(format!("the error `{e}` does not say `{}`", c.says)),
            }
        }
    })
    .await;
}
